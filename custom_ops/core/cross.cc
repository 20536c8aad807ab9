#include "cross.h"

namespace recopt {

void CrossNetwork(const float* x0, int64_t b0, int64_t b1, int64_t dim, int64_t layers, const float* kernels,
                  const float* kernel_bias, const float* biases, float* out) {
  for (int64_t b = b0; b < b1; ++b) {
    const float* x0b = x0 + b * dim;
    float* x = out + b * dim;
    for (int64_t j = 0; j < dim; ++j) x[j] = x0b[j];
    for (int64_t l = 0; l < layers; ++l) {
      const float* w = kernels + l * dim;
      const float* bias = biases + l * dim;
      float s = 0.f;
      for (int64_t j = 0; j < dim; ++j) s += x[j] * w[j];
      s += kernel_bias[l];
      // The graph's order: (x0 * s + b) + x.
      for (int64_t j = 0; j < dim; ++j) x[j] = (x0b[j] * s + bias[j]) + x[j];
    }
  }
}

}  // namespace recopt
