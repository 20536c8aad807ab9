// GPU kernel core: plain launchers over device pointers and a CUDA stream.
//
// No TensorFlow and no CUDA include here, so the thin OpKernels
// (kernels/*.cu.cc, built by g++) and the ctypes test harness
// (capi.cc) call the same functions. Streams travel as void* (a
// cudaStream_t); every function only enqueues work on it, except where
// its comment says it waits for the stream.
//
// Errors come back as a message (empty means success) naming the argument
// or the CUDA call at fault; nothing is thrown across this boundary.
#ifndef RECOPT_GPU_GPU_CORE_H_
#define RECOPT_GPU_GPU_CORE_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace recopt {
namespace gpu {

// Largest k the GPU select handles: the k winners are sorted in shared
// memory (4096 64-bit keys = 32 KiB). The pass leaves TopKV2 alone above it.
constexpr int kMaxK = 4096;
// Elements sampled per row to estimate the threshold; also at most kMaxK
// so one block sorts them in shared memory.
constexpr int kSampleSize = 4096;
// Candidate dimension limit: a block keeps 8 queries in shared memory
// (8 x 1536 floats = 48 KiB, the default per-block limit).
constexpr int kMaxScoreDim = 1536;

// ---------------------------------------------------------------- TopK ----
// Exact top-k along the last axis of a row-major [rows, n] float matrix,
// TopKV2's order (larger first, ties to the lower index). NaN ranks above
// +inf (torch.topk's order; TensorFlow leaves NaN placement unspecified).
// Needs k <= min(n, kMaxK). Waits for the stream once per threshold attempt
// (a 4-byte-per-row copy of survivor counts) to pick each row's next step.
size_t TopKWorkspaceBytes(int64_t rows, int64_t n, int k);
std::string TopK(const float* input, int64_t rows, int64_t n, int k, float* values, int32_t* indices,
                 void* workspace, size_t workspace_bytes, void* stream);

// ----------------------------------------------------------- ScoreTopK ----
enum Storage : int { kStoreF32 = 0, kStoreF16 = 1, kStoreBF16 = 2, kStoreI8 = 3 };

struct ScoreTopKArgs {
  const float* queries = nullptr;  // [batch, dim]
  int64_t batch = 0;
  int dim = 0;
  const void* candidates = nullptr;  // [n, dim] row-major, `storage` elements
  Storage storage = kStoreF32;
  int64_t n = 0;
  const float* row_scales = nullptr;  // [n] or null (int8 needs it)
  const float* bias = nullptr;        // [n] or null
  float scale = 1.f;
  int k = 0;
};

// score[b, j] = dot(q[b], cand[j]) * row_scales[j] * scale + bias[j] in fp32,
// top-k per query as TopK above, without writing the [batch, n] scores: each
// candidate tile is scored and compared with a per-query threshold in one
// kernel, and only survivors are kept. A query whose survivors overflow the
// buffer (adversarial scores) is rescored alone into an [n] buffer and
// selected exactly, so the answer never depends on the estimate.
size_t ScoreTopKWorkspaceBytes(int64_t batch, int64_t n, int k);
std::string ScoreTopK(const ScoreTopKArgs& args, float* values, int32_t* indices, void* workspace,
                      size_t workspace_bytes, void* stream);

// --------------------------------------------------------------- Dense ----
enum GemmPrecision : int { kGemmF32 = 0, kGemmF16 = 1, kGemmBF16 = 2 };

struct DenseLayer {
  const float* weights = nullptr;  // [in, out] row-major, as Keras stores a Dense kernel
  const float* bias = nullptr;     // [out]
  int in = 0;
  int out = 0;
  int activation = 0;  // recopt::Activation
  float alpha = 0.f;   // LeakyRelu slope
};

// y = act_L(... act_1(x W_1 + b_1) ...) for x [rows, in_1], y [rows, out_L],
// all fp32 in memory. kGemmF16/kGemmBF16 run each GEMM with 16-bit inputs
// on Tensor Cores (cublasGemmEx, fp32 accumulate and output); kGemmF32 is
// exact fp32 (no TF32). `cublas` is a cublasHandle_t the caller owns; this
// binds it to `stream`.
size_t MlpWorkspaceBytes(int64_t rows, const DenseLayer* layers, int num_layers, GemmPrecision precision);
std::string Mlp(void* cublas, const float* x, int64_t rows, const DenseLayer* layers, int num_layers,
                GemmPrecision precision, float* y, void* workspace, size_t workspace_bytes, void* stream);

// int32 C[m, n] = A[m, k] * B[n, k]^T for row-major int8 A and B (cublasLt,
// int32 accumulate: the int8 Tensor Core GEMM). k must be a multiple of 4.
// `cublaslt` is a cublasLtHandle_t the caller owns.
std::string Int8GemmNT(void* cublaslt, const int8_t* a, const int8_t* b, int32_t* c, int64_t m, int64_t n,
                       int64_t k, void* workspace, size_t workspace_bytes, void* stream);

// cublas handles for the harness and the OpKernels (created per device).
std::string CreateBlasHandles(void** cublas, void** cublaslt);
void DestroyBlasHandles(void* cublas, void* cublaslt);

}  // namespace gpu
}  // namespace recopt

#endif  // RECOPT_GPU_GPU_CORE_H_
