// Dense layers and the int8 GEMM on GPU through cuBLAS.
//
// 16-bit GEMMs go through cublasGemmEx with CUBLAS_COMPUTE_32F, which runs
// on Tensor Cores with fp32 accumulation (the seed's fix: TF 1.15's
// cublasSgemmEx never did). The int8 GEMM uses cublasLt with plain
// column-major layouts and A transposed, the form cuBLAS 11+ runs on int8
// Tensor Cores without the COL32 / COL4_4R2_8C transforms older releases
// needed, so nothing has to be re-laid out at optimize time.
#include <algorithm>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../core/activation.h"
#include "select.cuh"

namespace recopt {
namespace gpu {
namespace {

constexpr int kThreads = 256;

std::string BlasError(const char* what, cublasStatus_t s) {
  if (s == CUBLAS_STATUS_SUCCESS) return "";
  return std::string(what) + ": " + cublasGetStatusString(s);
}

// Same formulas as the CPU kernels' ScalarAct (TensorFlow's Eigen ops).
__device__ inline float Activate(float x, int act, float alpha) {
  if (x != x) return x;
  switch (act) {
    case kActRelu: return x > 0.f ? x : 0.f;
    case kActRelu6: return fminf(fmaxf(x, 0.f), 6.f);
    case kActLeakyRelu: return x < 0.f ? x * alpha : x;
    case kActElu: return x > 0.f ? x : expm1f(x);
    case kActSelu: {
      const float scale = 1.0507009873554804934193349852946f;
      const float a = 1.6732632423543772848170429916717f;
      return x > 0.f ? scale * x : scale * a * expm1f(x);
    }
    case kActSigmoid: return 1.f / (1.f + expf(-x));
    case kActTanh: return tanhf(x);
    case kActSoftplus: {
      const float threshold = 17.942385f;
      if (x > threshold) return x;
      if (x < -threshold) return expf(x);
      return log1pf(expf(x));
    }
    case kActSwish: return x / (1.f + expf(-x));
    case kActGeluExact: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case kActGeluTanh: {
      const float c = 0.7978845608028654f;
      return 0.5f * x * (1.f + tanhf(c * (x + 0.044715f * x * x * x)));
    }
    default: return x;
  }
}

template <typename T>
__device__ inline T FromFloat(float x);
template <>
__device__ inline __half FromFloat<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ inline __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T>
__global__ void NarrowKernel(const float* in, T* out, int64_t count) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = FromFloat<T>(in[i]);
  }
}

__global__ void BiasActKernel(float* y, const float* bias, int64_t rows, int cols, int act, float alpha) {
  const int64_t count = rows * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = Activate(y[i] + bias[i % cols], act, alpha);
  }
}

unsigned Blocks(int64_t count) {
  const int64_t b = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 4096 ? (b > 0 ? b : 1) : 4096);
}

size_t ElementBytes(GemmPrecision p) { return p == kGemmF32 ? 4 : 2; }
cudaDataType_t InputType(GemmPrecision p) {
  return p == kGemmF16 ? CUDA_R_16F : (p == kGemmBF16 ? CUDA_R_16BF : CUDA_R_32F);
}

std::string Narrow(GemmPrecision p, const float* in, void* out, int64_t count, cudaStream_t stream) {
  if (p == kGemmF16) {
    NarrowKernel<__half><<<Blocks(count), kThreads, 0, stream>>>(in, static_cast<__half*>(out), count);
  } else {
    NarrowKernel<__nv_bfloat16><<<Blocks(count), kThreads, 0, stream>>>(in, static_cast<__nv_bfloat16*>(out), count);
  }
  return CudaError("narrowing to 16 bits");
}

struct MlpBuffers {
  char* weights16 = nullptr;  // every layer's weights, narrowed
  char* input16 = nullptr;    // the current layer's input, narrowed
  float* act[2] = {nullptr, nullptr};
};

// All layers' weight elements, and the widest layer side (activation room per row).
void MlpSizes(const DenseLayer* layers, int num_layers, int64_t* weights, int64_t* widest) {
  *weights = *widest = 0;
  for (int l = 0; l < num_layers; ++l) {
    *weights += static_cast<int64_t>(layers[l].in) * layers[l].out;
    *widest = std::max<int64_t>(*widest, std::max(layers[l].in, layers[l].out));
  }
}

MlpBuffers CarveMlp(void* workspace, int64_t rows, const DenseLayer* layers, int num_layers, GemmPrecision p) {
  int64_t weights, widest;
  MlpSizes(layers, num_layers, &weights, &widest);
  MlpBuffers b;
  char* q = static_cast<char*>(workspace);
  if (p != kGemmF32) {
    b.weights16 = q;
    q += Align256(weights * 2);
    b.input16 = q;
    q += Align256(rows * widest * 2);
  }
  for (float*& a : b.act) {
    a = reinterpret_cast<float*>(q);
    q += Align256(rows * widest * 4);
  }
  return b;
}

// Row-major y[rows, out] = x[rows, in] W[in, out] is column-major
// y^T = W^T x^T: cuBLAS sees W as an out x in matrix and x as in x rows.
std::string Gemm(cublasHandle_t h, GemmPrecision p, const void* w, const void* x, float* y, int64_t rows, int in,
                 int out) {
  const float one = 1.f, zero = 0.f;
  const cudaDataType_t t = InputType(p);
  return BlasError("cublasGemmEx",
                   cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, out, static_cast<int>(rows), in, &one, w, t, out, x, t,
                                in, &zero, y, CUDA_R_32F, out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

std::string CheckLayers(const DenseLayer* layers, int num_layers) {
  if (num_layers < 1) return "need at least one layer";
  for (int l = 0; l < num_layers; ++l) {
    if (layers[l].in < 1 || layers[l].out < 1) return "layer " + std::to_string(l) + " has an empty weight matrix";
    if (l > 0 && layers[l].in != layers[l - 1].out) {
      return "layer " + std::to_string(l) + " takes " + std::to_string(layers[l].in) + " inputs but layer " +
             std::to_string(l - 1) + " gives " + std::to_string(layers[l - 1].out);
    }
    if (layers[l].activation < 0 || layers[l].activation >= kActCount) {
      return "layer " + std::to_string(l) + " has unknown activation " + std::to_string(layers[l].activation);
    }
  }
  return "";
}

}  // namespace

size_t MlpWorkspaceBytes(int64_t rows, const DenseLayer* layers, int num_layers, GemmPrecision precision) {
  int64_t weights, widest;
  MlpSizes(layers, num_layers, &weights, &widest);
  size_t bytes = 2 * Align256(rows * widest * 4);
  if (precision != kGemmF32) bytes += Align256(weights * 2) + Align256(rows * widest * 2);
  return bytes;
}

std::string Mlp(void* cublas, const float* x, int64_t rows, const DenseLayer* layers, int num_layers,
                GemmPrecision precision, float* y, void* workspace, size_t workspace_bytes, void* stream_ptr) {
  std::string err = CheckLayers(layers, num_layers);
  if (!err.empty() || rows == 0) return err;
  if (rows > 0x7fffffff) return "more than INT_MAX rows";
  if (workspace_bytes < MlpWorkspaceBytes(rows, layers, num_layers, precision)) return "workspace too small";
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  cublasHandle_t h = static_cast<cublasHandle_t>(cublas);
  if (!(err = BlasError("cublasSetStream", cublasSetStream(h, stream))).empty()) return err;
  // fp32 stays exact fp32: no TF32 unless the caller's model asked for it.
  if (!(err = BlasError("cublasSetMathMode", cublasSetMathMode(h, CUBLAS_DEFAULT_MATH))).empty()) return err;
  const MlpBuffers b = CarveMlp(workspace, rows, layers, num_layers, precision);
  const float* input = x;
  char* w16 = b.weights16;
  for (int l = 0; l < num_layers; ++l) {
    const DenseLayer& d = layers[l];
    float* out = l + 1 == num_layers ? y : b.act[l % 2];
    const void* w = d.weights;
    const void* in = input;
    if (precision != kGemmF32) {
      const int64_t wn = static_cast<int64_t>(d.in) * d.out;
      if (!(err = Narrow(precision, d.weights, w16, wn, stream)).empty()) return err;
      if (!(err = Narrow(precision, input, b.input16, rows * d.in, stream)).empty()) return err;
      w = w16;
      in = b.input16;
      w16 += wn * ElementBytes(precision);
    }
    if (!(err = Gemm(h, precision, w, in, out, rows, d.in, d.out)).empty()) return err;
    BiasActKernel<<<Blocks(rows * d.out), kThreads, 0, stream>>>(out, d.bias, rows, d.out, d.activation, d.alpha);
    if (!(err = CudaError("bias and activation")).empty()) return err;
    input = out;
  }
  return "";
}

std::string Int8GemmNT(void* cublaslt, const int8_t* a, const int8_t* b, int32_t* c, int64_t m, int64_t n, int64_t k,
                       void* workspace, size_t workspace_bytes, void* stream_ptr) {
  if (m < 0 || n < 0 || k < 0) return "negative GEMM size";
  if (k % 4 != 0) return "int8 GEMM needs k % 4 == 0, got k=" + std::to_string(k);
  if (m == 0 || n == 0) return "";
  cublasLtHandle_t lt = static_cast<cublasLtHandle_t>(cublaslt);
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  std::string err = BlasError("cublasLtMatmulDescCreate", cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32I, CUDA_R_32I));
  const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
  if (err.empty()) {
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep));
    // Column-major C^T[n, m] = B[n, k] A[m, k]^T: B is stored as a k x n
    // column-major matrix (transposed by the op), A as k x m.
    cublasLtMatrixLayoutCreate(&la, CUDA_R_8I, k, n, k);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_8I, k, m, k);
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_32I, n, m, n);
    const int32_t one = 1, zero = 0;
    err = BlasError("cublasLtMatmul", cublasLtMatmul(lt, op, &one, b, la, a, lb, &zero, c, lc, c, lc, nullptr,
                                                     workspace, workspace_bytes, static_cast<cudaStream_t>(stream_ptr)));
  }
  for (cublasLtMatrixLayout_t l : {la, lb, lc}) {
    if (l) cublasLtMatrixLayoutDestroy(l);
  }
  if (op) cublasLtMatmulDescDestroy(op);
  return err;
}

std::string CreateBlasHandles(void** cublas, void** cublaslt) {
  cublasHandle_t h = nullptr;
  cublasLtHandle_t lt = nullptr;
  std::string err = BlasError("cublasCreate", cublasCreate(&h));
  if (err.empty()) err = BlasError("cublasLtCreate", cublasLtCreate(&lt));
  if (!err.empty()) {
    if (h) cublasDestroy(h);
    return err;
  }
  *cublas = h;
  *cublaslt = lt;
  return "";
}

void DestroyBlasHandles(void* cublas, void* cublaslt) {
  if (cublas) cublasDestroy(static_cast<cublasHandle_t>(cublas));
  if (cublaslt) cublasLtDestroy(static_cast<cublasLtHandle_t>(cublaslt));
}

}  // namespace gpu
}  // namespace recopt
