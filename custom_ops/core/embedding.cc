#include "embedding.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace recopt {
namespace {

// Rows are a few hundred bytes at random places in tables far larger than
// the caches: asking for the row a few ids ahead overlaps those misses.
constexpr int64_t kPrefetchDistance = 16;

inline int64_t RowBegin(const EmbeddingBag& bag, int64_t r) {
  return bag.offsets != nullptr ? bag.offsets[r] : r * bag.ids_per_row;
}

inline void Prefetch(const EmbeddingTableView& t, int64_t id) {
  const int64_t elem = t.bf16 ? 2 : 4;
  const char* row = static_cast<const char*>(t.data) + id * t.dim * elem;
  const int64_t bytes = t.dim * elem;
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(row + off);
}

inline float Bf16ToFloat(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

void CopyRow(const EmbeddingTableView& t, int64_t id, float* out) {
  if (!t.bf16) {
    std::memcpy(out, static_cast<const float*>(t.data) + id * t.dim, t.dim * sizeof(float));
    return;
  }
  const uint16_t* row = static_cast<const uint16_t*>(t.data) + id * t.dim;
  for (int64_t j = 0; j < t.dim; ++j) out[j] = Bf16ToFloat(row[j]);
}

void AddRow(const EmbeddingTableView& t, int64_t id, float w, float* out) {
  if (!t.bf16) {
    const float* row = static_cast<const float*>(t.data) + id * t.dim;
    for (int64_t j = 0; j < t.dim; ++j) out[j] += w * row[j];
    return;
  }
  const uint16_t* row = static_cast<const uint16_t*>(t.data) + id * t.dim;
  for (int64_t j = 0; j < t.dim; ++j) out[j] += w * Bf16ToFloat(row[j]);
}

// Unweighted fp32 sums skip the multiply by 1 (exact either way) so the
// hottest loop is a plain add.
void AddRowUnweighted(const EmbeddingTableView& t, int64_t id, float* out) {
  if (!t.bf16) {
    const float* row = static_cast<const float*>(t.data) + id * t.dim;
    for (int64_t j = 0; j < t.dim; ++j) out[j] += row[j];
    return;
  }
  AddRow(t, id, 1.0f, out);
}

void LookupRow(const EmbeddingTableView& t, const EmbeddingBag& bag, int64_t begin, int64_t end,
               int64_t next_end, float* out) {
  for (int64_t i = begin; i < end; ++i) {
    if (i + kPrefetchDistance < next_end) Prefetch(t, bag.ids[i + kPrefetchDistance]);
    CopyRow(t, bag.ids[i], out + (i - begin) * t.dim);
  }
}

void PoolRow(const EmbeddingTableView& t, const EmbeddingBag& bag, int64_t begin, int64_t end,
             int64_t next_end, float* out) {
  std::memset(out, 0, t.dim * sizeof(float));
  double norm = 0.0;
  for (int64_t i = begin; i < end; ++i) {
    if (i + kPrefetchDistance < next_end) Prefetch(t, bag.ids[i + kPrefetchDistance]);
    if (bag.weights == nullptr) {
      AddRowUnweighted(t, bag.ids[i], out);
      norm += 1.0;
    } else {
      const float w = bag.weights[i];
      AddRow(t, bag.ids[i], w, out);
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
  for (int64_t i = first; i < std::min(last, first + kPrefetchDistance); ++i) Prefetch(table, bag.ids[i]);
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
