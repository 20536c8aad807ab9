// The outer products of xDeepFM's Compressed Interaction Network (Lian et
// al., 2018) laid out as a GEMM's left operand: one row per (example,
// embedding element), so a CIN layer is these rows times its [F0*H, H']
// filter (Recopt>FusedMLP's one layer, with bias and activation).
// DeepCTR's CIN writes the same products as 2*D split outputs, two packs,
// a batched matmul and a transpose of the [D, B, F0*H] result; TensorFlow's
// broadcast multiply, the stock-op alternative, runs at a fraction of
// memory speed (bench.ctr_interactions "cin").
#ifndef RECOPT_CORE_CIN_H_
#define RECOPT_CORE_CIN_H_

#include <cstdint>

namespace recopt {

// out[(b * d + e) * f0 * h + i * h + j] = x0[(b * f0 + i) * d + e] * hidden[(b * h + j) * d + e]
// for examples b in [b0, b1); x0 [B, f0, d], hidden [B, h, d], out [B * d, f0 * h].
void CinProducts(const float* x0, const float* hidden, int64_t b0, int64_t b1, int64_t f0, int64_t h, int64_t d,
                 float* out);

}  // namespace recopt

#endif  // RECOPT_CORE_CIN_H_
