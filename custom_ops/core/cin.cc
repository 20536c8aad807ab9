#include "cin.h"

#include <vector>

namespace recopt {

void CinProducts(const float* x0, const float* hidden, int64_t b0, int64_t b1, int64_t f0, int64_t h, int64_t d,
                 float* out) {
  // hidden's column e, contiguous, so each output run is a scalar times a
  // contiguous vector: the loop the compiler vectorises, written once.
  std::vector<float> column(h);
  const int64_t width = f0 * h;
  for (int64_t b = b0; b < b1; ++b) {
    const float* xb = x0 + b * f0 * d;
    const float* hb = hidden + b * h * d;
    for (int64_t e = 0; e < d; ++e) {
      for (int64_t j = 0; j < h; ++j) column[j] = hb[j * d + e];
      float* row = out + (b * d + e) * width;
      for (int64_t i = 0; i < f0; ++i) {
        const float s = xb[i * d + e];
        float* o = row + i * h;
        const float* c = column.data();
        for (int64_t j = 0; j < h; ++j) o[j] = s * c[j];
      }
    }
  }
}

}  // namespace recopt
