#include "embedding_ids.h"

namespace recopt {

bool BucketFingerprints(const uint64_t* fingerprints, int64_t n, int64_t rows, const IdRules& rules, int64_t* out,
                        IdError* error) {
  const uint64_t buckets = static_cast<uint64_t>(rules.hash_buckets);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = static_cast<int64_t>(fingerprints[i] % buckets);
    if (rules.check_range && id >= rows) {
      *error = {i, id};
      return false;
    }
    out[i] = id;
  }
  return true;
}

RowsError RaggedOffsets(const std::vector<int64_t>& splits, int64_t n, std::vector<int64_t>* offsets,
                        int64_t* num_rows, IdError* error) {
  if (splits.empty()) return RowsError::kSplitsEmpty;
  *num_rows = static_cast<int64_t>(splits.size()) - 1;
  for (int64_t i = 0; i <= *num_rows; ++i) {
    if ((i == 0 && splits[0] != 0) || (i > 0 && splits[i] < splits[i - 1])) {
      *error = {i, splits[i]};
      return RowsError::kSplitsOrder;
    }
  }
  if (splits.back() != n) {
    *error = {*num_rows, splits.back()};
    return RowsError::kSplitsEnd;
  }
  *offsets = splits;
  return RowsError::kNone;
}

RowsError SegmentOffsets(const std::vector<int64_t>& segments, int64_t num_segments, std::vector<int64_t>* offsets,
                         int64_t* num_rows, IdError* error) {
  const int64_t n = static_cast<int64_t>(segments.size());
  int64_t prev = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = segments[i];
    if (s < prev || (num_segments >= 0 && s >= num_segments)) {
      *error = {i, s};
      return RowsError::kSegmentOrder;
    }
    prev = s;
  }
  *num_rows = num_segments >= 0 ? num_segments : (n == 0 ? 0 : prev + 1);
  offsets->assign(*num_rows + 1, 0);
  for (int64_t i = 0; i < n; ++i) (*offsets)[segments[i] + 1]++;
  for (int64_t s = 0; s < *num_rows; ++s) (*offsets)[s + 1] += (*offsets)[s];
  return RowsError::kNone;
}

}  // namespace recopt
