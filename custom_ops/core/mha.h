// Multi-head attention in one pass per group of examples, as Keras'
// MultiHeadAttention computes it at inference:
//   Q = query Wq + bq, K = key Wk + bk, V = value Wv + bv   (heads side by side)
//   per head n: P = softmax(mask(scale * Q_n K_n^T)),  C_n = P V_n
//   out = [C_0 .. C_{N-1}] Wo + bo
// TensorFlow runs that as a dozen ops writing Q, K, V, the [B, N, T, S]
// scores and the context to memory between them; here a group's
// projections, scores and context stay in cache. When the key and value (or
// query, key and value) are one tensor, their projections are one product
// against the weights side by side.
#ifndef RECOPT_CORE_MHA_H_
#define RECOPT_CORE_MHA_H_

#include <cstdint>
#include <string>

#include "isa_kernels.h"
#include "mlp.h"

namespace recopt {

struct MhaSpec {
  int heads, key_dim, value_dim;  // N, H (query and key), Hv
  // [dq, N*H], [dk, N*H], [dv, N*Hv], [N*Hv, E], head-major columns; no activation.
  DenseLayerSpec query, key, value, output;
  float scale;                    // applied to the scores (Keras: 1/sqrt(H))
  int mask_mode;                  // MaskMode
  float mask_value;
  bool zero_masked;               // masked weights also zeroed after the softmax
  bool causal = false;            // also mask key steps after the query step (Keras' causal mask)
};

struct MhaBatch {
  const float* query;    // [B, T, dq]
  const float* key;      // [B, S, dk]
  const float* value;    // [B, S, dv]
  const bool* mask;      // [B or 1, N or absent, T or 1, S] or nullptr
  int64_t mask_rows;     // T, or 1 for one mask row per example
  int64_t q_steps, kv_steps;  // T, S
  float* out;            // [B, T, E]
  bool mask_shared = false;   // one [T or 1, S] mask for every example (a causal mask)
  bool mask_per_head = false; // the mask has a head axis: each head has its own rows
};

class PackedMha {
 public:
  // Returns an empty string on success, else what is wrong with which weight.
  std::string Pack(const MhaSpec& spec, const IsaKernels& kernels, bool weights_bf16 = false);

  int query_dim() const { return q_.k; }
  int key_dim_in() const { return k_.k; }
  int value_dim_in() const { return v_.k; }
  int output_dim() const { return o_.n; }
  // Examples run together, so short sequences still make tall products.
  int64_t GroupSize(int64_t q_steps, int64_t kv_steps) const;
  int64_t FlopsPerExample(int64_t q_steps, int64_t kv_steps) const;
  int64_t ScratchFloats(int64_t q_steps, int64_t kv_steps) const;
  // Examples [first, last) of `batch`; scratch holds ScratchFloats() floats.
  void Forward(const MhaBatch& batch, int64_t first, int64_t last, float* scratch) const;

 private:
  struct Views;  // where one group's projections live in scratch
  Views Project(const MhaBatch& batch, int64_t first, int64_t count, float* scratch) const;
  void Head(const MhaBatch& batch, const Views& v, int64_t example, int64_t local, int head, float* ctx,
            float* scratch) const;

  const IsaKernels* kernels_ = nullptr;
  int heads_ = 0, key_dim_ = 0, value_dim_ = 0;
  float scale_ = 1.f;
  int mask_mode_ = kMaskSelect;
  float mask_value_ = 0.f;
  bool zero_masked_ = false;
  bool causal_ = false;
  PackedLayer q_, k_, v_, o_;
  PackedLayer kv_, qkv_;  // side by side; empty (k == 0) when the input widths differ
};

}  // namespace recopt

#endif  // RECOPT_CORE_MHA_H_
