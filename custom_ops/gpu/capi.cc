// C entry points over the GPU core for the ctypes harness
// (custom_ops/gpu_harness.py), so the kernels can be tested and benchmarked
// on a GPU machine against PyTorch without a GPU build of TensorFlow.
// Each returns 0 on success, or 1 with the core's message in `err`.
#include <cstring>

#include "gpu_core.h"

namespace {

int Report(const std::string& message, char* err, int err_len) {
  if (message.empty()) return 0;
  if (err != nullptr && err_len > 0) {
    std::strncpy(err, message.c_str(), err_len - 1);
    err[err_len - 1] = '\0';
  }
  return 1;
}

}  // namespace

extern "C" {

size_t recopt_topk_workspace(int64_t rows, int64_t n, int k) { return recopt::gpu::TopKWorkspaceBytes(rows, n, k); }

int recopt_topk(const float* input, int64_t rows, int64_t n, int k, float* values, int32_t* indices, void* workspace,
                size_t workspace_bytes, void* stream, char* err, int err_len) {
  return Report(recopt::gpu::TopK(input, rows, n, k, values, indices, workspace, workspace_bytes, stream), err, err_len);
}

size_t recopt_score_topk_workspace(int64_t batch, int64_t n, int k) {
  return recopt::gpu::ScoreTopKWorkspaceBytes(batch, n, k);
}

int recopt_score_topk(const float* queries, int64_t batch, int dim, const void* candidates, int storage, int64_t n,
                      const float* row_scales, const float* bias, float scale, int k, float* values, int32_t* indices,
                      void* workspace, size_t workspace_bytes, void* stream, char* err, int err_len) {
  recopt::gpu::ScoreTopKArgs a;
  a.queries = queries;
  a.batch = batch;
  a.dim = dim;
  a.candidates = candidates;
  a.storage = static_cast<recopt::gpu::Storage>(storage);
  a.n = n;
  a.row_scales = row_scales;
  a.bias = bias;
  a.scale = scale;
  a.k = k;
  return Report(recopt::gpu::ScoreTopK(a, values, indices, workspace, workspace_bytes, stream), err, err_len);
}

// Layers as parallel arrays: weights[l] is [dims[l], dims[l + 1]].
static void Layers(const float* const* weights, const float* const* biases, const int* dims, const int* activations,
                   const float* alphas, int num_layers, recopt::gpu::DenseLayer* out) {
  for (int l = 0; l < num_layers; ++l) {
    out[l].weights = weights ? weights[l] : nullptr;
    out[l].bias = biases ? biases[l] : nullptr;
    out[l].in = dims[l];
    out[l].out = dims[l + 1];
    out[l].activation = activations ? activations[l] : 0;
    out[l].alpha = alphas ? alphas[l] : 0.f;
  }
}

size_t recopt_mlp_workspace(int64_t rows, const int* dims, int num_layers, int precision) {
  recopt::gpu::DenseLayer layers[64];
  if (num_layers < 1 || num_layers > 64) return 0;
  Layers(nullptr, nullptr, dims, nullptr, nullptr, num_layers, layers);
  return recopt::gpu::MlpWorkspaceBytes(rows, layers, num_layers, static_cast<recopt::gpu::GemmPrecision>(precision));
}

int recopt_mlp(void* cublas, const float* x, int64_t rows, const float* const* weights, const float* const* biases,
               const int* dims, const int* activations, const float* alphas, int num_layers, int precision, float* y,
               void* workspace, size_t workspace_bytes, void* stream, char* err, int err_len) {
  recopt::gpu::DenseLayer layers[64];
  if (num_layers < 1 || num_layers > 64) return Report("num_layers must be in [1, 64]", err, err_len);
  Layers(weights, biases, dims, activations, alphas, num_layers, layers);
  return Report(recopt::gpu::Mlp(cublas, x, rows, layers, num_layers,
                                 static_cast<recopt::gpu::GemmPrecision>(precision), y, workspace, workspace_bytes,
                                 stream),
                err, err_len);
}

int recopt_int8_gemm_nt(void* cublaslt, const int8_t* a, const int8_t* b, int32_t* c, int64_t m, int64_t n, int64_t k,
                        void* workspace, size_t workspace_bytes, void* stream, char* err, int err_len) {
  return Report(recopt::gpu::Int8GemmNT(cublaslt, a, b, c, m, n, k, workspace, workspace_bytes, stream), err, err_len);
}

int recopt_blas_create(void** cublas, void** cublaslt, char* err, int err_len) {
  return Report(recopt::gpu::CreateBlasHandles(cublas, cublaslt), err, err_len);
}

void recopt_blas_destroy(void* cublas, void* cublaslt) { recopt::gpu::DestroyBlasHandles(cublas, cublaslt); }

}  // extern "C"
