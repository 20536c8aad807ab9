// DIN's attention pooling in one pass per example (Zhou et al., "Deep
// Interest Network"): score each behaviour k_t with an MLP over the
// concatenation [q, k_t, q - k_t, q * k_t] (any order, any subset), mask the
// scores, optionally softmax them over the sequence, and return the weighted
// sum of the keys.
//
// The concatenation is never built. Its first layer splits by rows of W1:
//   concat @ W1 = q @ Wq + k @ Wk + (q - k) @ Wd + (q * k) @ Wp
//               = [b1 + q @ (Wq + Wd)] + k @ [(Wk - Wd) + diag(q) Wp]
// so each example scores its T keys with one d-deep GEMM against a weight
// matrix built from q once (d x h1 work), instead of a 4d-deep one.
#ifndef RECOPT_CORE_DIN_ATTENTION_H_
#define RECOPT_CORE_DIN_ATTENTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "isa_kernels.h"
#include "mlp.h"

namespace recopt {

// One d-wide block of the concatenation, in the order the model wrote it.
enum AttentionPart { kPartQuery = 0, kPartKey, kPartQueryMinusKey, kPartKeyMinusQuery, kPartProduct,
                     kPartCount };

// Returns kPartCount for an unknown name ("q", "k", "q-k", "k-q", "q*k").
AttentionPart AttentionPartFromName(const char* name);

struct AttentionSpec {
  int dim;                          // d: width of q and of each key
  std::vector<AttentionPart> parts;  // the concatenation's blocks
  std::vector<DenseLayerSpec> layers;  // layers[0] is [parts * d, h1]; the last outputs 1
  bool softmax;                     // normalise the masked scores over the sequence
  float pad_value;                  // the score of a masked position
};

class PackedDinAttention {
 public:
  // Returns an empty string on success, else what is wrong with which layer.
  std::string Pack(const AttentionSpec& spec, const IsaKernels& kernels, bool weights_bf16 = false);

  int dim() const { return dim_; }
  int64_t FlopsPerKey() const;
  // Floats of scratch Forward() needs for a sequence of `steps` keys.
  int64_t ScratchFloats(int64_t steps) const;
  // out[d] = sum_t w_t * keys[t], w = [softmax](mask ? mlp(q, k_t) : pad);
  // with weights_only, out[steps] = w.
  void Forward(const float* q, const float* keys, const bool* mask, int64_t steps, float* out, float* scratch,
               bool weights_only = false) const;

 private:
  int64_t FixedScratchFloats() const;
  void BuildQueryWeights(const float* q, float* packed, float* bias) const;
  void Score(const float* keys, int64_t rows, const float* packed, const float* bias, float* scores,
             float* scratch) const;
  void Weigh(const bool* mask, int64_t steps, float* scores) const;

  const IsaKernels* kernels_ = nullptr;
  int dim_ = 0, hidden_ = 0, hidden_pad_ = 0;
  int activation_ = 0;
  float alpha_ = 0.f;
  bool softmax_ = false;
  float pad_value_ = 0.f;
  std::vector<float> key_packed_;    // [d, h1_pad] panel-major: the key-linear blocks, summed
  std::vector<float> prod_packed_;   // same layout: the q * k block (empty without one)
  std::vector<float> query_weight_;  // [d, h1_pad] row-major: the query-linear blocks, summed
  std::vector<float> bias_;          // [h1_pad]
  PackedMlp rest_;                   // layers after the first; empty for a one-layer scorer
  bool has_rest_ = false;
};

}  // namespace recopt

#endif  // RECOPT_CORE_DIN_ATTENTION_H_
