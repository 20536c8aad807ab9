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
  if (bag.rows != nullptr) return bag.rows[i];
  return static_cast<const char*>(t.data) + bag.ids[i] * t.dim * ElementBytes(t);
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

int64_t EmbeddingBagCost(const EmbeddingTableView& table, const EmbeddingBag& bag, int64_t r0,
                         int64_t r1) {
  return (RowBegin(bag, r1) - RowBegin(bag, r0) + (r1 - r0)) * table.dim;
}

}  // namespace recopt
