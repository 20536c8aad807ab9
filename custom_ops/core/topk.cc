#include "topk.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <type_traits>

namespace recopt {
namespace {

constexpr int kGroup = 16;          // elements per sample group and per scan block
constexpr int64_t kMinSample = 8192;

// 16-byte vectors: every x86-64 CPU has them, and GCC turns wider generic
// vectors into scalar compares when the target lacks the width.
template <typename T>
struct Vec16Of {
  typedef T type __attribute__((vector_size(16)));
};
template <typename T>
using Vec16 = typename Vec16Of<T>::type;

template <typename T>
inline Vec16<T> Splat16(T x) {
  Vec16<T> t;
  for (size_t j = 0; j < 16 / sizeof(T); ++j) t[j] = x;
  return t;
}

// One vector compare per 16 bytes: !(v < t) is "v >= t or NaN", !(v <= t)
// is "v > t or NaN", so the NaN check costs nothing on the common path.
template <typename T, bool kStrict, int kCount>
inline bool AnyMayPass(const T* p, Vec16<T> t) {
  constexpr int kLanes = 16 / sizeof(T);
  Vec16<T> v;
  std::memcpy(&v, p, sizeof v);
  auto fails = kStrict ? (v <= t) : (v < t);
  for (int j = kLanes; j < kCount; j += kLanes) {
    std::memcpy(&v, p + j, sizeof v);
    fails &= kStrict ? (v <= t) : (v < t);
  }
  uint64_t words[2];
  std::memcpy(words, &fails, sizeof words);
  return (words[0] & words[1]) != ~uint64_t{0};
}

// The first block at or after i (in steps of kGroup) that may hold an
// element passing `threshold`, or the start of the tail shorter than a block.
// The threshold is fixed here, so its vector is built once rather than per
// block (rebuilding it cost as many instructions as the compares), and four
// blocks are tested per step.
template <typename T, bool kStrict>
inline int64_t SkipFailingBlocks(const T* x, int64_t i, int64_t len, T threshold) {
  const Vec16<T> t = Splat16(threshold);
  while (i + 4 * kGroup <= len && !AnyMayPass<T, kStrict, 4 * kGroup>(x + i, t)) i += 4 * kGroup;
  for (; i + kGroup <= len; i += kGroup) {
    if (AnyMayPass<T, kStrict, kGroup>(x + i, t)) return i;
  }
  return i;
}

template <typename T>
inline bool IsNan(T x) {
  if constexpr (std::is_floating_point<T>::value) return x != x;
  return false;
}

// TopKBefore as a type: passed as a function pointer, std::sort and
// nth_element called it through the pointer on every comparison (its own
// symbol in a profile of the 1M x 8 TopK).
struct TopKOrder {
  template <typename T>
  bool operator()(const TopKEntry<T>& a, const TopKEntry<T>& b) const { return TopKBefore(a, b); }
};

inline uint64_t Mix(uint64_t x) {  // splitmix64 finaliser: cheap, deterministic jitter
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Ranks up to this take the heap below; deeper ones nth_element.
constexpr int64_t kHeapRankMax = 256;

// The (rank + 1)-th largest of `values` (no NaN): a min-heap of the best
// rank + 1 seen, so each other value costs one compare with its root. The
// first threshold's rank is tiny next to the sample (19 of 8192 at n = 1M,
// k = 1000), and nth_element over the whole sample was a fifth of that op.
template <typename T>
T NthLargestByHeap(const std::vector<T>& values, int64_t rank) {
  std::vector<T> heap(values.begin(), values.begin() + rank + 1);
  std::make_heap(heap.begin(), heap.end(), std::greater<T>());
  for (size_t i = rank + 1; i < values.size(); ++i) {
    if (!(values[i] > heap.front())) continue;
    std::pop_heap(heap.begin(), heap.end(), std::greater<T>());
    heap.back() = values[i];
    std::push_heap(heap.begin(), heap.end(), std::greater<T>());
  }
  return heap.front();
}

}  // namespace

template <typename T>
bool TopKSample<T>::Take(const T* row, int64_t n, int k) {
  k_ = k;
  values_.clear();
  const int64_t want = std::min<int64_t>(n, std::max<int64_t>(k, kMinSample));
  if (want == n) {
    values_.assign(row, row + n);
  } else {
    const int64_t groups = (want + kGroup - 1) / kGroup;
    const int64_t stride = n / groups;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t slack = stride - kGroup;
      const int64_t start = g * stride + (slack > 0 ? static_cast<int64_t>(Mix(g) % (slack + 1)) : 0);
      const int64_t stop = std::min(n, start + kGroup);
      values_.insert(values_.end(), row + start, row + stop);
    }
  }
  for (T v : values_) {
    if (IsNan(v)) return false;
  }
  const int64_t s = static_cast<int64_t>(values_.size());
  // The (2 * ceil(k s / n) + 1)-th largest sample: twice the expected rank
  // of the k-th largest element, so a short count (and a second scan) is rare.
  first_rank_ = std::min<int64_t>(s - 1, 2 * ((static_cast<int64_t>(k) * s + n - 1) / n));
  return true;
}

template <typename T>
T TopKSample<T>::Threshold(int attempt) {
  int64_t rank = first_rank_;
  for (int a = 0; a < attempt && rank < k_ - 1; ++a) rank = std::min<int64_t>(2 * rank + 1, k_ - 1);
  if (rank <= kHeapRankMax) return NthLargestByHeap(values_, rank);
  std::nth_element(values_.begin(), values_.begin() + rank, values_.end(), std::greater<T>());
  return values_[rank];
}

template <typename T>
void TopKCollector<T>::Reset(int k, T threshold) {
  k_ = k;
  capacity_ = 2 * static_cast<size_t>(k) + 256;
  threshold_ = threshold;
  strict_ = false;
  buf_.clear();
  buf_.reserve(capacity_);
}

template <typename T>
bool TopKCollector<T>::ScanAt(const T* x, int64_t len, int64_t first_index) {
  return strict_ ? ScanT<true>(x, len, first_index) : ScanT<false>(x, len, first_index);
}

template <typename T>
template <bool kStrict>
bool TopKCollector<T>::ScanT(const T* x, int64_t len, int64_t first_index) {
  int64_t i = 0;
  for (; (i = SkipFailingBlocks<T, kStrict>(x, i, len, threshold_)) + kGroup <= len; i += kGroup) {
    for (int j = 0; j < kGroup; ++j) {
      const T v = x[i + j];
      if (IsNan(v)) return false;
      if (kStrict ? v > threshold_ : v >= threshold_) Push(v, static_cast<int32_t>(first_index + i + j));
    }
    // A compaction raised the bar: continue with the cheaper strict compare.
    if (!kStrict && strict_) return ScanT<true>(x + i + kGroup, len - i - kGroup, first_index + i + kGroup);
  }
  for (; i < len; ++i) {
    const T v = x[i];
    if (IsNan(v)) return false;
    if (strict_ ? v > threshold_ : v >= threshold_) Push(v, static_cast<int32_t>(first_index + i));
  }
  return true;
}

template <typename T>
void TopKCollector<T>::Compact() {
  std::nth_element(buf_.begin(), buf_.begin() + (k_ - 1), buf_.end(), TopKOrder());
  buf_.resize(k_);
  // Anything equal to the k-th value from here on has a higher index and loses to it.
  threshold_ = buf_[k_ - 1].value;
  strict_ = true;
}

template <typename T>
void TopKCollector<T>::Absorb(const TopKCollector& other) {
  for (const TopKEntry<T>& e : other.buf_) Push(e.value, e.index);
}

template <typename T>
void TopKCollector<T>::Finish(T* values, int32_t* indices) {
  const size_t keep = std::min(buf_.size(), static_cast<size_t>(k_));
  if (keep < buf_.size()) {
    std::nth_element(buf_.begin(), buf_.begin() + keep, buf_.end(), TopKOrder());
  }
  std::sort(buf_.begin(), buf_.begin() + keep, TopKOrder());
  for (size_t i = 0; i < keep; ++i) {
    values[i] = buf_[i].value;
    indices[i] = buf_[i].index;
  }
}

#define RECOPT_TOPK_INSTANTIATE(T) \
  template class TopKSample<T>;    \
  template class TopKCollector<T>;
RECOPT_TOPK_INSTANTIATE(float)
RECOPT_TOPK_INSTANTIATE(double)
RECOPT_TOPK_INSTANTIATE(int32_t)
RECOPT_TOPK_INSTANTIATE(int64_t)
#undef RECOPT_TOPK_INSTANTIATE

}  // namespace recopt
