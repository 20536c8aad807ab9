// Factorization-machine second-order term (Rendle 2010), the form DeepFM's
// FM layer and NFM's bi-interaction pooling compute from stacked field
// embeddings x [F, k]: scale * ((sum_f x_f)^2 - sum_f x_f^2), element-wise
// over k, optionally summed over k. Stock TensorFlow runs it as six or
// seven small ops (two reductions, squares, a subtraction, a scale and a
// final reduction), each a pass over [B, F, k] or [B, k]; here each example
// is one pass over its fields.
#ifndef RECOPT_CORE_FM_H_
#define RECOPT_CORE_FM_H_

#include <cstdint>

#include "isa_kernels.h"

namespace recopt {

// out[b] = scale * sum_j ((sum_f x[b,f,j])^2 - sum_f x[b,f,j]^2)      (reduce)
// out[b, j] = scale * ((sum_f x[b,f,j])^2 - sum_f x[b,f,j]^2)         (!reduce)
// for b in [b0, b1); x is [B, F, k] row-major, summed over f in field order
// (IsaKernels::factorization_machine: k in vectors of the ISA's width).
void FactorizationMachine(const IsaKernels& kernels, const float* x, int64_t b0, int64_t b1, int64_t fields, int64_t k,
                          bool reduce, float scale, float* out);

}  // namespace recopt

#endif  // RECOPT_CORE_FM_H_
