// FiBiNET's bilinear feature interaction (Huang et al., "FiBiNET", 2019):
// for every field pair t, p_t = (v_rows[t] W_t + b_t) * v_cols[t]. DeepCTR's
// BilinearInteraction writes one tensordot, one multiply and one concat input
// per pair (325 of each for 26 fields, twice in FiBiNET); here a block of
// examples runs every pair in one pass (IsaKernels::bilinear).
#ifndef RECOPT_CORE_BILINEAR_H_
#define RECOPT_CORE_BILINEAR_H_

#include <cstdint>
#include <string>
#include <vector>

#include "isa_kernels.h"

namespace recopt {

struct BilinearPairs {
  std::vector<int> rows, cols, weight_of;
};

// Checks rows/cols against num_features and weight_index against groups;
// returns "" or what is wrong with which entry.
std::string MakeBilinearPairs(const std::vector<int64_t>& rows, const std::vector<int64_t>& cols,
                              const std::vector<int64_t>& weight_index, int64_t num_features, int64_t groups,
                              BilinearPairs* pairs);

// out[b, t] = (x[b, rows[t]] @ w[g] + bias[g]) * x[b, cols[t]], g = weight_of[t],
// for b in [b0, b1); x is [B, F, dim], w [G, dim, dim], bias [G, dim], out [B, P, dim].
void BilinearInteraction(const IsaKernels& kernels, const float* x, int64_t b0, int64_t b1, int64_t num_features,
                         int64_t dim, const BilinearPairs& pairs, const float* w, const float* bias, float* out);

}  // namespace recopt

#endif  // RECOPT_CORE_BILINEAR_H_
