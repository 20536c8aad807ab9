// Id resolution and row structure of a fused embedding lookup, with no
// TensorFlow include: the OpKernel turns a false return into TensorFlow's
// error message (naming the feature and table), and the core tests
// (custom_ops/core_tests) check each function against a scalar reference.
#ifndef RECOPT_CORE_EMBEDDING_IDS_H_
#define RECOPT_CORE_EMBEDDING_IDS_H_

#include <cstdint>
#include <vector>

namespace recopt {

struct IdRules {
  int64_t hash_buckets = 0;    // > 0: FloorMod(id, buckets), StringToHashBucketFast's bucket for strings
  bool wrap_negative = false;  // Keras `take`: id < 0 reads row id + rows
  bool check_range = true;     // false for sharded tables (ShardMap checks those)
};

// Where resolution stopped: the id's position and its value after hashing/wrapping.
struct IdError {
  int64_t index = -1;
  int64_t id = 0;
};

// Row numbers of `n` integer ids of a table of `rows` rows. False (out[0..i)
// written) when id i is outside [0, rows) and the rules check the range.
template <typename T>
bool ResolveIntIds(const T* ids, int64_t n, int64_t rows, const IdRules& rules, int64_t* out, IdError* error) {
  for (int64_t i = 0; i < n; ++i) {
    int64_t id = static_cast<int64_t>(ids[i]);
    if (rules.hash_buckets > 0) id = ((id % rules.hash_buckets) + rules.hash_buckets) % rules.hash_buckets;
    if (rules.wrap_negative && id < 0) id += rows;
    if (rules.check_range && (id < 0 || id >= rows)) {
      *error = {i, id};
      return false;
    }
    out[i] = id;
  }
  return true;
}

// Buckets of hashed string ids (fingerprint % buckets, as TensorFlow's
// StringToHashBucketFast); the caller computes the fingerprints.
bool BucketFingerprints(const uint64_t* fingerprints, int64_t n, int64_t rows, const IdRules& rules, int64_t* out,
                        IdError* error);

enum class RowsError { kNone, kSplitsEmpty, kSplitsOrder, kSplitsEnd, kSegmentOrder };

// RaggedTensor row_splits -> CSR offsets over `n` ids (the splits
// themselves, checked: start at 0, never decrease, end at n).
RowsError RaggedOffsets(const std::vector<int64_t>& splits, int64_t n, std::vector<int64_t>* offsets,
                        int64_t* num_rows, IdError* error);

// Sorted segment ids (SparseSegmentSum's contract), one per id, -> CSR
// offsets; num_segments < 0: the last segment id + 1 (0 with no ids).
RowsError SegmentOffsets(const std::vector<int64_t>& segments, int64_t num_segments, std::vector<int64_t>* offsets,
                         int64_t* num_rows, IdError* error);

}  // namespace recopt

#endif  // RECOPT_CORE_EMBEDDING_IDS_H_
