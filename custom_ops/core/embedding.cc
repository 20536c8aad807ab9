#include "embedding.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace recopt {
namespace {

// Rows are a few hundred bytes at random places in tables far larger than
// the caches: asking for the row a few ids ahead overlaps those misses.
constexpr int64_t kPrefetchDistance = 16;

inline int64_t RowBegin(const EmbeddingBag& bag, int64_t r) {
  return bag.offsets != nullptr ? bag.offsets[r] : r * bag.ids_per_row;
}

inline int64_t ElementBytes(const EmbeddingTableView& t) { return t.bf16 ? 2 : 4; }

inline const void* RowAddress(const EmbeddingTableView& t, const EmbeddingBag& bag, int64_t i) {
  return bag.rows != nullptr ? bag.rows[i] : TableRow(t, bag.ids[i]);
}

inline void Prefetch(const EmbeddingTableView& t, const void* row) {
  const char* bytes = static_cast<const char*>(row);
  const int64_t n = t.dim * ElementBytes(t);
  for (int64_t off = 0; off < n; off += 64) __builtin_prefetch(bytes + off);
}

inline float Bf16ToFloat(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

void CopyRow(const EmbeddingTableView& t, const void* row, float* out) {
  if (!t.bf16) {
    std::memcpy(out, row, t.dim * sizeof(float));
    return;
  }
  const uint16_t* src = static_cast<const uint16_t*>(row);
  for (int64_t j = 0; j < t.dim; ++j) out[j] = Bf16ToFloat(src[j]);
}

void AddRow(const EmbeddingTableView& t, const void* row, float w, float* out) {
  if (!t.bf16) {
    const float* src = static_cast<const float*>(row);
    for (int64_t j = 0; j < t.dim; ++j) out[j] += w * src[j];
    return;
  }
  const uint16_t* src = static_cast<const uint16_t*>(row);
  for (int64_t j = 0; j < t.dim; ++j) out[j] += w * Bf16ToFloat(src[j]);
}

// Unweighted fp32 sums skip the multiply by 1 (exact either way) so the
// hottest loop is a plain add.
void AddRowUnweighted(const EmbeddingTableView& t, const void* row, float* out) {
  if (!t.bf16) {
    const float* src = static_cast<const float*>(row);
    for (int64_t j = 0; j < t.dim; ++j) out[j] += src[j];
    return;
  }
  AddRow(t, row, 1.0f, out);
}

void LookupRow(const EmbeddingTableView& t, const EmbeddingBag& bag, int64_t begin, int64_t end,
               int64_t next_end, float* out) {
  for (int64_t i = begin; i < end; ++i) {
    if (i + kPrefetchDistance < next_end) Prefetch(t, RowAddress(t, bag, i + kPrefetchDistance));
    CopyRow(t, RowAddress(t, bag, i), out + (i - begin) * t.dim);
  }
}

void PoolRow(const EmbeddingTableView& t, const EmbeddingBag& bag, int64_t begin, int64_t end,
             int64_t next_end, float* out) {
  std::memset(out, 0, t.dim * sizeof(float));
  double norm = 0.0;
  for (int64_t i = begin; i < end; ++i) {
    if (i + kPrefetchDistance < next_end) Prefetch(t, RowAddress(t, bag, i + kPrefetchDistance));
    const void* row = RowAddress(t, bag, i);
    if (bag.weights == nullptr) {
      AddRowUnweighted(t, row, out);
      norm += 1.0;
    } else {
      const float w = bag.weights[i];
      AddRow(t, row, w, out);
      norm += bag.combiner == Combiner::kSqrtN ? static_cast<double>(w) * w : w;
    }
  }
  if (end == begin && bag.empty_mean_is_nan && bag.combiner == Combiner::kMean) {
    std::fill(out, out + t.dim, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  if (bag.combiner == Combiner::kSum || end == begin) return;
  if (bag.combiner == Combiner::kSqrtN) norm = std::sqrt(norm);
  if (norm == 0.0) {
    std::memset(out, 0, t.dim * sizeof(float));
    return;
  }
  const float scale = static_cast<float>(norm);
  for (int64_t j = 0; j < t.dim; ++j) out[j] /= scale;
}

}  // namespace

bool CombinerFromName(const char* name, Combiner* out) {
  static const struct { const char* name; Combiner value; } kNames[] = {
      {"none", Combiner::kNone}, {"sum", Combiner::kSum},
      {"mean", Combiner::kMean}, {"sqrtn", Combiner::kSqrtN}};
  for (const auto& entry : kNames) {
    if (std::strcmp(entry.name, name) == 0) {
      *out = entry.value;
      return true;
    }
  }
  return false;
}

void EmbeddingBagRows(const EmbeddingTableView& table, const EmbeddingBag& bag, int64_t r0,
                      int64_t r1) {
  if (r0 >= r1) return;
  const int64_t first = RowBegin(bag, r0), last = RowBegin(bag, r1);
  for (int64_t i = first; i < std::min(last, first + kPrefetchDistance); ++i) {
    Prefetch(table, RowAddress(table, bag, i));
  }
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t begin = RowBegin(bag, r), end = RowBegin(bag, r + 1);
    float* out = bag.out + r * bag.out_stride;
    if (bag.combiner == Combiner::kNone) {
      LookupRow(table, bag, begin, end, last, out);
    } else {
      PoolRow(table, bag, begin, end, last, out);
    }
  }
}

namespace {

int64_t FloorDiv(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

constexpr int64_t kExactDivisionLimit = int64_t{1} << 52;

}  // namespace

ShardMap::ShardMap(bool div, const int64_t* shard_rows, int64_t num_shards)
    : div_(div), rows_(shard_rows), k_(num_shards) {
  for (int64_t s = 0; s < k_; ++s) total_ += rows_[s];
  per_ = total_ / k_;
  extras_ = total_ % k_;
  for (int64_t s = 0; s < k_; ++s) standard_ = standard_ && rows_[s] == per_ + (s < extras_ ? 1 : 0);
  by_k_ = Divider(k_);
  if (per_ > 0) {
    by_per_ = Divider(per_);
    by_per1_ = Divider(per_ + 1);
  }
}

bool ShardMap::Locate(int64_t id, int64_t* shard, int64_t* row) const {
  if (id < 0 || id >= kExactDivisionLimit) return LocateExact(id, shard, row);
  if (!div_) {
    *row = by_k_(id);
    *shard = id - *row * k_;
    return *row < rows_[*shard];
  }
  if (!standard_) return LocateExact(id, shard, row);
  const int64_t big = extras_ * (per_ + 1);
  if (id < big) {
    *shard = by_per1_(id);
    *row = id - *shard * (per_ + 1);
    return true;
  }
  if (id >= total_) return LocateExact(id, shard, row);
  const int64_t j = by_per_(id - big);
  *shard = extras_ + j;
  *row = id - big - j * per_;
  return true;
}

// embedding_lookup's formulas verbatim (Python's // and %), including its
// cast of the shard number to int32: an absurd id TensorFlow wraps into a
// real shard reads the row TensorFlow reads.
bool ShardMap::LocateExact(int64_t id, int64_t* shard, int64_t* row) const {
  if (div_) {
    const int64_t hi = FloorDiv(id, per_ + 1), lo = FloorDiv(id - extras_, per_);
    const int64_t p = std::max(hi, lo);
    *row = p < extras_ ? id - hi * (per_ + 1) : (id - extras_) - lo * per_;
    *shard = static_cast<int32_t>(static_cast<uint32_t>(p));
  } else {
    *row = FloorDiv(id, k_);
    *shard = id - *row * k_;
  }
  return *shard >= 0 && *shard < k_ && *row >= 0 && *row < rows_[*shard];
}

int64_t EmbeddingBagCost(const EmbeddingTableView& table, const EmbeddingBag& bag, int64_t r0,
                         int64_t r1) {
  return (RowBegin(bag, r1) - RowBegin(bag, r0) + (r1 - r0)) * table.dim;
}

}  // namespace recopt
