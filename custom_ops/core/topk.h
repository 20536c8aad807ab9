// Exact top-k of one long row by a sampled threshold (no TensorFlow include).
//
// The order is TopKV2's: larger value first, and among equal values the lower
// index first. A row is scanned against a threshold estimated from a sample;
// what passes goes into a small buffer that is cut back to the best k
// whenever it fills, which also raises the threshold. Scanning touches each
// element once with a vector compare, so a 10M-element row costs about one
// pass over memory instead of TopKV2's heap push per element.
//
// NaN has no place in that order (TensorFlow's own result with NaN depends on
// its heap's internal order), so a scan reports NaN and the caller falls back
// to TensorFlow's algorithm for that row.
#ifndef RECOPT_CORE_TOPK_H_
#define RECOPT_CORE_TOPK_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace recopt {

// Below these sizes the sampled path has nothing to win (bench/topk.py).
constexpr int64_t kTopKSampledMinCols = 16384;
// k at most n / this; larger k keeps most of the row anyway.
constexpr int64_t kTopKSampledMaxKFraction = 16;

template <typename T>
struct TopKEntry {
  T value;
  int32_t index;
};

// (value desc, index asc): a strict total order when there is no NaN.
template <typename T>
inline bool TopKBefore(const TopKEntry<T>& a, const TopKEntry<T>& b) {
  return a.value > b.value || (a.value == b.value && a.index < b.index);
}

// A threshold from a deterministic sample of the row: groups of 16 adjacent
// elements (one cache line of floats) at evenly spaced, jittered offsets.
template <typename T>
class TopKSample {
 public:
  // Returns false when the sample holds a NaN.
  bool Take(const T* row, int64_t n, int k);
  // The threshold at attempt `attempt` (0 first): the rank doubles on each
  // retry and reaches the k-th sample value, which is always safe because
  // the sample holds at least k elements of the row.
  T Threshold(int attempt);

 private:
  std::vector<T> values_;
  int64_t first_rank_ = 0;  // 0-based rank (descending) of the first threshold
  int k_ = 0;
};

// The best k seen so far of the elements passing a threshold.
template <typename T>
class TopKCollector {
 public:
  void Reset(int k, T threshold);
  // Scans row[begin, end); returns false (and stops) on a NaN.
  bool Scan(const T* row, int64_t begin, int64_t end) { return ScanAt(row + begin, end - begin, begin); }
  // Scans x[0, len), whose elements have indices first_index, first_index + 1, ...
  bool ScanAt(const T* x, int64_t len, int64_t first_index);
  // Offers one element (already known to pass the threshold).
  void Push(T value, int32_t index) {
    buf_.push_back({value, index});
    if (buf_.size() >= capacity_) Compact();
  }
  void Absorb(const TopKCollector& other);
  // Entries kept; at least k whenever k or more elements passed.
  int64_t size() const { return static_cast<int64_t>(buf_.size()); }
  // Writes the best min(k, size()) in (value desc, index asc) order.
  void Finish(T* values, int32_t* indices);
  T threshold() const { return threshold_; }
  bool strict() const { return strict_; }

 private:
  void Compact();
  template <bool kStrict>
  bool ScanT(const T* x, int64_t len, int64_t first_index);

  int k_ = 0;
  size_t capacity_ = 0;
  T threshold_{};
  bool strict_ = false;  // after a compaction: only values > threshold_ can enter
  std::vector<TopKEntry<T>> buf_;
};

}  // namespace recopt

#endif  // RECOPT_CORE_TOPK_H_
