// AFM's attention-based pooling (Xiao et al., "Attentional Factorization
// Machines", 2017) in one pass per example: the element-wise product of
// every field pair, an attention MLP (one hidden layer, then a projection
// to a score), a softmax over the pairs, and the weighted sum of the
// products. DeepCTR's AFMLayer materialises the [B, P, d] products twice
// (two 325-way concats for 26 fields) and runs the MLP over B * P rows of
// width d = 8; here each example's products stay in L1.
#ifndef RECOPT_CORE_AFM_H_
#define RECOPT_CORE_AFM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "activation.h"
#include "isa_kernels.h"

namespace recopt {

// The attention MLP with its units padded to kPairUnitBlock by zero
// columns (a zero weight in h: a padded unit never reaches a score).
struct AfmWeights {
  int dim = 0, units = 0;  // units: padded
  Activation activation = kActRelu;
  float alpha = 0.f;
  std::vector<float> w, bias, h;  // [dim, units], [units], [units]
};

// w: [dim, units] row-major, bias: [units], h: [units] (projection_h, whose
// bias a softmax cancels). Returns "" or what is wrong.
std::string PackAfmWeights(const float* w, const float* bias, const float* h, int dim, int units,
                           Activation activation, float alpha, AfmWeights* out);

// Checks rows/cols against num_features; fills the int32 copies the kernel reads.
std::string AfmPairs(const std::vector<int64_t>& rows, const std::vector<int64_t>& cols, int64_t num_features,
                     std::vector<int>* rows32, std::vector<int>* cols32);

// out[b] = sum_t softmax_t(h . act(e_bt W + bias)) e_bt, e_bt = x[b, rows[t]] * x[b, cols[t]],
// for b in [b0, b1); x is [B, F, dim], out is [B, dim]; scratch holds
// PairAttentionScratchFloats(pairs, dim) floats.
void AfmPooling(const IsaKernels& kernels, const float* x, int64_t b0, int64_t b1, int64_t num_features,
                const std::vector<int>& rows, const std::vector<int>& cols, const AfmWeights& weights, float* out,
                float* scratch);

}  // namespace recopt

#endif  // RECOPT_CORE_AFM_H_
