#include "quantize.h"

#include "isa_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace recopt {
namespace {

constexpr uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr uint32_t kInfBits = 0x7F800000u;

float FromBits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

// The largest |x_i| of a row as its bits: for non-negative floats the bit
// patterns order as the values do, and NaN / Inf sort at or above kInfBits.
uint32_t RowAbsMaxBits(const float* x, int64_t k) {
  uint32_t m = 0;
  for (int64_t i = 0; i < k; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, sizeof b);
    m = std::max(m, b & kAbsMask);
  }
  return m;
}

bool QuantizeRowsPortable(const float* x, int64_t rows, int64_t k, bool unsigned_out, void* q, float* scales) {
  const float qmax = unsigned_out ? 255.f : 127.f, lo = unsigned_out ? 0.f : -127.f;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * k;
    const uint32_t m = RowAbsMaxBits(row, k);
    if (m >= kInfBits) return false;
    const float amax = FromBits(m);
    const float inv = m == 0 ? 1.f : qmax / amax;
    scales[r] = m == 0 ? 1.f : amax / qmax;
    for (int64_t i = 0; i < k; ++i) {
      // nearbyint rounds half to even in the default rounding mode.
      const float v = std::min(qmax, std::max(lo, std::nearbyint(row[i] * inv)));
      if (unsigned_out) {
        static_cast<uint8_t*>(q)[r * k + i] = static_cast<uint8_t>(v);
      } else {
        static_cast<int8_t*>(q)[r * k + i] = static_cast<int8_t>(v);
      }
    }
  }
  return true;
}

#if defined(__x86_64__)
// The same arithmetic 16 lanes at a time: vcvtps2dq rounds half to even
// (MXCSR's default), so the integers equal the portable loop's.
__attribute__((target("avx512f,avx512bw"))) bool QuantizeRowsAvx512(const float* x, int64_t rows, int64_t k,
                                                                   bool unsigned_out, void* q, float* scales) {
  const float qmax = unsigned_out ? 255.f : 127.f;
  const __m512i lo = _mm512_set1_epi32(unsigned_out ? 0 : -127), hi = _mm512_set1_epi32(unsigned_out ? 255 : 127);
  const __m512i abs_mask = _mm512_set1_epi32(static_cast<int>(kAbsMask));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * k;
    // Four independent maxima: one chain would wait on each max's latency.
    __m512i mx[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
    int64_t i = 0;
    for (; i + 64 <= k; i += 64) {
      for (int u = 0; u < 4; ++u) {
        mx[u] = _mm512_max_epu32(mx[u], _mm512_and_si512(_mm512_loadu_si512(row + i + 16 * u), abs_mask));
      }
    }
    for (; i < k; i += 16) {
      const __mmask16 m = k - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (k - i)) - 1);
      mx[0] = _mm512_max_epu32(mx[0], _mm512_and_si512(_mm512_maskz_loadu_epi32(m, row + i), abs_mask));
    }
    const uint32_t bits =
        _mm512_reduce_max_epu32(_mm512_max_epu32(_mm512_max_epu32(mx[0], mx[1]), _mm512_max_epu32(mx[2], mx[3])));
    if (bits >= kInfBits) return false;
    const float amax = FromBits(bits);
    const __m512 inv = _mm512_set1_ps(bits == 0 ? 1.f : qmax / amax);
    scales[r] = bits == 0 ? 1.f : amax / qmax;
    char* out = static_cast<char*>(q) + r * k;
    for (int64_t i = 0; i < k; i += 16) {
      const __mmask16 m = k - i >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << (k - i)) - 1);
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + i), inv));
      v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
      _mm512_mask_cvtepi32_storeu_epi8(out + i, m, v);  // in range, so truncation is exact
    }
  }
  return true;
}
#endif

}  // namespace

bool QuantizeColumns(const float* w, int64_t k, int64_t n, int8_t* q, float* scales) {
  std::vector<float> columns(static_cast<size_t>(k) * n);
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < n; ++j) columns[j * k + i] = w[i * n + j];
  }
  std::vector<int8_t> rounded(columns.size());
  if (!QuantizeRows(columns.data(), n, k, false, rounded.data(), scales)) return false;
  for (int64_t i = 0; i < k; ++i) {
    for (int64_t j = 0; j < n; ++j) q[i * n + j] = rounded[j * k + i];
  }
  return true;
}

bool QuantizeRows(const float* x, int64_t rows, int64_t k, bool unsigned_out, void* q, float* scales) {
#if defined(__x86_64__)
  // Follows the selected kernels, so RECOPT_ISA=avx2 or generic tests the portable loop.
  static const bool avx512 = std::strncmp(SelectedIsaKernels().isa, "avx512", 6) == 0;
  if (avx512) return QuantizeRowsAvx512(x, rows, k, unsigned_out, q, scales);
#endif
  return QuantizeRowsPortable(x, rows, k, unsigned_out, q, scales);
}

}  // namespace recopt
