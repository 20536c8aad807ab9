#include "embedding.h"

#include <algorithm>
#include <cstring>

#include "isa_kernels.h"

namespace recopt {
namespace {

inline int64_t RowBegin(const EmbeddingBag& bag, int64_t r) {
  return bag.offsets != nullptr ? bag.offsets[r] : r * bag.ids_per_row;
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
  SelectedIsaKernels().embedding_rows(table, bag, r0, r1);
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
