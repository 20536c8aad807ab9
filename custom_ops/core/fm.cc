#include "fm.h"

#include <vector>

namespace recopt {

void FactorizationMachine(const float* x, int64_t b0, int64_t b1, int64_t fields, int64_t k, bool reduce, float scale,
                          float* out) {
  std::vector<float> sum(k), squares(k);
  for (int64_t b = b0; b < b1; ++b) {
    const float* xb = x + b * fields * k;
    for (int64_t j = 0; j < k; ++j) sum[j] = squares[j] = 0.f;
    for (int64_t f = 0; f < fields; ++f) {
      const float* row = xb + f * k;
      for (int64_t j = 0; j < k; ++j) {
        sum[j] += row[j];
        squares[j] += row[j] * row[j];
      }
    }
    if (reduce) {
      float total = 0.f;
      for (int64_t j = 0; j < k; ++j) total += sum[j] * sum[j] - squares[j];
      out[b] = scale * total;
    } else {
      float* ob = out + b * k;
      for (int64_t j = 0; j < k; ++j) ob[j] = scale * (sum[j] * sum[j] - squares[j]);
    }
  }
}

}  // namespace recopt
