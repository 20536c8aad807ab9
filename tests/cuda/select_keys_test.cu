// Host-side checks of the GPU select's key and threshold arithmetic
// (custom_ops/gpu/select.cuh), built with nvcc and run on the CPU, so CI
// without a GPU still tests the ordering every GPU kernel relies on.
// Exits non-zero with a message on the first failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>
#include <vector>

#include "../../custom_ops/gpu/select.cuh"

using namespace recopt::gpu;

static int failures = 0;
#define EXPECT(cond, ...)                             \
  do {                                                \
    if (!(cond)) {                                    \
      std::printf("FAIL line %d: ", __LINE__);        \
      std::printf(__VA_ARGS__);                       \
      std::printf("\n");                              \
      ++failures;                                     \
    }                                                 \
  } while (0)

// TopKV2's order: larger value first, then lower index; NaN above +inf; -0 == +0.
static bool Before(float a, uint32_t ia, float b, uint32_t ib) {
  const bool na = a != a, nb = b != b;
  if (na || nb) return na && !nb ? true : (na && nb ? ia < ib : false);
  return a > b || (a == b && ia < ib);
}

static void KeysFollowTopKOrder() {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> vals = {0.f, -0.f, 1.f, -1.f, 1e-38f, -1e-38f, 1e-45f, -1e-45f, 3.5f, -3.5f,
                             inf, -inf, nan, -nan, std::numeric_limits<float>::max(),
                             std::numeric_limits<float>::lowest(), 2.f, 2.f};
  for (size_t i = 0; i < vals.size(); ++i) {
    for (size_t j = 0; j < vals.size(); ++j) {
      if (i == j) continue;
      const bool by_key = MakeKey(vals[i], i) < MakeKey(vals[j], j);
      EXPECT(by_key == Before(vals[i], i, vals[j], j), "order of (%g,#%zu) vs (%g,#%zu)", vals[i], i, vals[j], j);
    }
  }
}

static void KeysRoundTrip() {
  const float samples[] = {0.f, 1.f, -1.f, 123.456f, -7e-20f, 1e30f, -1e-45f, std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity()};
  for (float v : samples) {
    const uint64_t key = MakeKey(v, 77);
    EXPECT(KeyValue(key) == v, "value round trip of %g gave %g", v, KeyValue(key));
    EXPECT(KeyIndex(key) == 77, "index round trip of %g", v);
  }
  EXPECT(std::isnan(KeyValue(MakeKey(std::nanf(""), 3))), "NaN round trip");
  EXPECT(KeyIndex(MakeKey(1.f, 0xfffffffeu)) == static_cast<int32_t>(0xfffffffeu), "large index");
}

static void SamplesAreDistinctAndInRange() {
  const int64_t sizes[] = {1, 7, 4095, 4096, 4097, 10000, 1000003, 10000000};
  for (int64_t n : sizes) {
    const int64_t s = SampleCount(n);
    EXPECT(s == std::min<int64_t>(n, kSampleSize), "sample count for n=%lld", (long long)n);
    std::set<int64_t> seen;
    int64_t prev = -1;
    for (int64_t r = 0; r < s; ++r) {
      const int64_t p = SamplePos(r, n, s);
      EXPECT(p >= 0 && p < n, "position %lld out of [0, %lld)", (long long)p, (long long)n);
      EXPECT(p > prev, "positions not increasing at r=%lld for n=%lld", (long long)r, (long long)n);
      prev = p;
      seen.insert(p);
    }
    EXPECT(static_cast<int64_t>(seen.size()) == s, "duplicate sample positions for n=%lld", (long long)n);
  }
}

// Attempts double the rank until it reaches s; since s >= k, the last
// attempt keeps at least k elements (the sample's own).
static void RankScheduleTerminates() {
  const int64_t ns[] = {1, 100, 4096, 1000000, 10000000};
  const int ks[] = {1, 10, 500, 1000, 4096};
  for (int64_t n : ns) {
    for (int k : ks) {
      if (k > n) continue;
      const int64_t s = SampleCount(n);
      int64_t r = FirstRank(n, k, s);
      EXPECT(r >= 1 && r <= s, "first rank %lld outside [1, %lld]", (long long)r, (long long)s);
      if (s == n) EXPECT(r >= k || r == s, "a full sample must start at rank >= k");
      int attempts = 1;
      while (r < s) {
        r = std::min(2 * r, s);
        ++attempts;
      }
      EXPECT(attempts <= 14, "%d attempts for n=%lld k=%d", attempts, (long long)n, k);
      EXPECT(s >= k, "sample smaller than k for n=%lld k=%d", (long long)n, k);
      const int64_t cap = SurvivorCap(n, k);
      EXPECT(cap >= std::min<int64_t>(n, 2 * k), "cap %lld below 2k for n=%lld k=%d", (long long)cap, (long long)n, k);
    }
  }
  // The seed's rank for n=10M, k=1000, s=4096: 2*ceil(1000*4096/1e7)+1 = 3.
  EXPECT(FirstRank(10000000, 1000, 4096) == 3, "seed rank example gave %lld", (long long)FirstRank(10000000, 1000, 4096));
}

static void WorkspaceCarvingDoesNotOverlap() {
  const int64_t rows = 8, n = 1000000;
  const int k = 1000;
  const size_t bytes = FilterBytes(rows, n, k);
  std::vector<char> buf(bytes + 256);
  char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(buf.data()) + 255) & ~uintptr_t(255));
  const FilterBuffers f = CarveFilter(base, rows, n, k);
  struct Span { const char* b; size_t len; } spans[] = {
      {reinterpret_cast<char*>(f.samples), size_t(rows * f.s * 8)},
      {reinterpret_cast<char*>(f.survivors), size_t(rows * f.cap * 8)},
      {reinterpret_cast<char*>(f.counts), size_t(rows * 4)},
      {reinterpret_cast<char*>(f.ranks), size_t(rows * 4)},
      {reinterpret_cast<char*>(f.modes), size_t(rows * 4)},
      {reinterpret_cast<char*>(f.lengths), size_t(rows * 4)},
  };
  for (auto& a : spans) {
    EXPECT(a.b >= base && a.b + a.len <= base + bytes, "buffer outside the workspace");
    EXPECT((reinterpret_cast<uintptr_t>(a.b) & 15) == 0, "buffer not 16-byte aligned");
    for (auto& b : spans) {
      if (&a == &b) continue;
      EXPECT(a.b + a.len <= b.b || b.b + b.len <= a.b, "buffers overlap");
    }
  }
}

int main() {
  KeysFollowTopKOrder();
  KeysRoundTrip();
  SamplesAreDistinctAndInRange();
  RankScheduleTerminates();
  WorkspaceCarvingDoesNotOverlap();
  if (failures) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("select key logic: all checks passed\n");
  return 0;
}
