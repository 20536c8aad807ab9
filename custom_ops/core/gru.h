// A Keras-style GRU layer run as one op: the recurrence of every example is
// independent, so callers shard examples; within a shard each time step is
// one matrix product over the shard's rows plus the vectorised gate math.
// Gate order z (update), r (reset), h (candidate), as Keras packs kernels.
#ifndef RECOPT_CORE_GRU_H_
#define RECOPT_CORE_GRU_H_

#include <cstdint>
#include <string>

#include "isa_kernels.h"
#include "mlp.h"

namespace recopt {

struct GruSpec {
  const float* kernel;            // [input_dim, 3u]
  const float* recurrent_kernel;  // [u, 3u]
  const float* input_bias;        // [3u]
  const float* recurrent_bias;    // [3u]
  int input_dim;
  int units;
  bool reset_after;               // Keras reset_after: r scales (h Wh + bh), not h
  int attention = kGruAttendNone;  // GruAttention: an AUGRU when set
};

// Where an example's rows live: x [B, T, d] / seq [B, T, u], or time major
// x [T, B, d] / seq [T, B, u].
struct GruLayout {
  int64_t batch;
  int64_t steps;
  bool time_major;
};

class PackedGru {
 public:
  // Returns an empty string on success, else what is wrong with the spec.
  std::string Pack(const GruSpec& spec, const IsaKernels& kernels, bool weights_bf16);

  int units() const { return units_; }
  int input_dim() const { return input_dim_; }
  int64_t FlopsPerStep() const;
  int64_t ScratchFloats(const GruLayout& layout, int64_t rows) const;
  // Runs examples [b0, b1): reads x, h0 [B, u], mask and the AUGRU's scores
  // att (each [B, T] in x's layout, or nullptr), writes their rows of seq and
  // final [B, u] (final = h0 when no step ran). A masked step keeps the state
  // and repeats the last unmasked output (zeros before the first), as Keras'
  // masked RNN loop does.
  void Forward(const GruLayout& layout, const float* x, const bool* mask, const float* att, const float* h0,
               int64_t b0, int64_t b1, float* seq, float* final_state, float* scratch) const;

 private:
  bool ProjectAtOnce(const GruLayout& layout, int64_t rows) const;
  // att: this step's score of each row, row stride lda (nullptr unless attended).
  void Step(const float* xp, int64_t ldx, const float* h, int64_t ldh, int64_t rows, const float* att, int64_t lda,
            float* out, int64_t ldo, float* scratch) const;

  const IsaKernels* kernels_ = nullptr;
  int input_dim_ = 0, units_ = 0;
  bool reset_after_ = true;
  int attention_ = kGruAttendNone;
  PackedLayer input_;      // [d, 3u] + input bias (plus the recurrent bias when reset before)
  PackedLayer recurrent_;  // reset after: [u, 3u] + recurrent bias; before: [u, 2u]
  PackedLayer candidate_;  // reset before only: [u, u], applied to r*h
};

}  // namespace recopt

#endif  // RECOPT_CORE_GRU_H_
