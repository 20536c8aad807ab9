// DCN's cross network (Wang et al., "Deep & Cross Network", 2017), vector
// parameterisation: x_{l+1} = x0 * (x_l . w_l + c_l) + b_l + x_l. DeepCTR's
// CrossNet writes each layer as a tensordot sandwich (transpose, reshape,
// matmul, reshape and their shape arithmetic), a BatchMatMul by x0 and two
// adds on [B, dim, 1]: ~14 ops a layer. Here a layer is a dot product and
// one fused multiply-add pass over each example's row.
#ifndef RECOPT_CORE_CROSS_H_
#define RECOPT_CORE_CROSS_H_

#include <cstdint>

namespace recopt {

// out[b] = x_L for examples b in [b0, b1): x0 is [B, dim], kernels [L, dim],
// kernel_bias [L] (c_l: the scalar bias of x_l . w_l, 0 in DeepCTR), biases
// [L, dim]; out [B, dim] (it may not alias x0).
void CrossNetwork(const float* x0, int64_t b0, int64_t b1, int64_t dim, int64_t layers, const float* kernels,
                  const float* kernel_bias, const float* biases, float* out);

}  // namespace recopt

#endif  // RECOPT_CORE_CROSS_H_
