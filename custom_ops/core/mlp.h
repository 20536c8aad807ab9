// A stack of dense layers packed once for the selected kernels, then run on
// row blocks. Weights are immutable after Pack() and shared by all callers;
// each call brings its own scratch, so concurrent calls never share activations.
#ifndef RECOPT_CORE_MLP_H_
#define RECOPT_CORE_MLP_H_

#include <cstdint>
#include <string>
#include <vector>

#include "isa_kernels.h"

namespace recopt {

struct DenseLayerSpec {
  const float* weights;  // [k, n] row-major
  const float* bias;     // [n] or nullptr
  int k;
  int n;
  int activation;
  float alpha;
};

// One dense layer packed into the kernels' panel layout (fp32 or bf16 pairs).
struct PackedLayer {
  int k = 0, n = 0, n_pad = 0, activation = 0;
  float alpha = 0.f;
  bool weights_bf16 = false;
  std::vector<float> packed, bias;    // bias zero padded to n_pad
  std::vector<uint32_t> packed_bf16;  // see gemm_isa.inc: two bf16 columns per word

  // Returns an empty string on success, else what is wrong with the spec.
  std::string Pack(const DenseLayerSpec& spec, int nr, bool bf16);
  // c[rows, n] (row stride ldc) = act(a[rows, k] (row stride lda) * W + bias).
  DenseArgs Args(const float* a, int64_t lda, int64_t rows, float* c, int64_t ldc) const;
};

class PackedMlp {
 public:
  // Returns an empty string on success, else what is wrong with which layer.
  // weights_bf16 stores weights rounded to bfloat16 (nearest even); inputs,
  // activations and accumulation stay fp32.
  std::string Pack(const std::vector<DenseLayerSpec>& layers, const IsaKernels& kernels,
                   bool weights_bf16 = false);

  int input_dim() const { return layers_.empty() ? 0 : layers_.front().k; }
  int output_dim() const { return layers_.empty() ? 0 : layers_.back().n; }
  // Multiply-adds per input row, for work sharding.
  int64_t FlopsPerRow() const;
  // Floats of scratch Forward() needs for `rows` rows (uninitialised is fine).
  int64_t ScratchFloats(int64_t rows) const;
  // y[rows, output_dim] = mlp(x[rows, input_dim]); rows may be 0.
  void Forward(const float* x, int64_t rows, float* y, float* scratch) const;

 private:
  void RunBlock(const float* x, int64_t rows, float* y, float* scratch, int64_t half) const;

  const IsaKernels* kernels_ = nullptr;
  std::vector<PackedLayer> layers_;
  int max_hidden_pad_ = 0;
};

// fp32 -> bfloat16 bits, round to nearest even; NaN stays a (quiet) NaN.
uint16_t FloatToBf16(float f);

// Row-major [k, n] -> the dense kernels' panel-major [n_pad / nr][k][nr],
// zero padded past n (see isa_kernels.h).
void PackPanels(const float* w, int k, int n, int n_pad, int nr, std::vector<float>* out);

// Rows per block: small enough that a block's activations stay in L2 between
// layers, large enough to amortise the panel loads.
constexpr int64_t kMlpRowBlock = 48;

}  // namespace recopt

#endif  // RECOPT_CORE_MLP_H_
