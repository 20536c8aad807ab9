// Multi-table embedding bags with no TensorFlow dependency: the OpKernel
// resolves ids (hashing, wrapping, range checks) and row structure, then
// calls EmbeddingBagRows per block of output rows.
#ifndef RECOPT_CORE_EMBEDDING_H_
#define RECOPT_CORE_EMBEDDING_H_

#include <cstdint>

namespace recopt {

enum class Combiner { kNone, kSum, kMean, kSqrtN };

// Returns false for a name other than none, sum, mean, sqrtn.
bool CombinerFromName(const char* name, Combiner* out);

struct EmbeddingTableView {
  const void* data;  // row-major [rows, dim]
  bool bf16;         // storage: bfloat16 when true, float32 otherwise
  int64_t rows;
  int64_t dim;
};

// One feature. Output row r reads ids [begin(r), end(r)): a fixed number
// per row (ids_per_row) or CSR offsets. Every id must already be in
// [0, table.rows): the core never checks, so it never branches per id.
// A table split into shards (tf.nn.embedding_lookup over a list of
// variables) has no single base address: its bag gives each id's row
// address instead, resolved by the kernel.
struct EmbeddingBag {
  Combiner combiner;
  const int64_t* ids;
  const float* weights;    // one per id, or null
  int64_t num_rows;        // output rows
  int64_t ids_per_row;     // used when offsets == null
  const int64_t* offsets;  // [num_rows + 1], or null
  // kNone writes the row's ids side by side (ids_per_row * dim floats);
  // the others write dim floats. out_stride: floats between output rows,
  // larger than that when several features share one concatenated output.
  float* out;
  int64_t out_stride;
  // kMean only: an empty row is 0/0 = NaN, as tf.reduce_mean over a
  // RaggedTensor gives, instead of embedding_lookup_sparse's zeros.
  bool empty_mean_is_nan = false;
  // One row address per id, used instead of table.data + id * dim when set.
  const void* const* rows = nullptr;
};

// Fills output rows [r0, r1) of `bag`. Empty rows give zeros (but see
// empty_mean_is_nan); mean and sqrtn divide by the count (or the sum of
// weights / sqrt of the sum of squared weights) and give zeros where that
// is zero, as embedding_lookup_sparse does.
void EmbeddingBagRows(const EmbeddingTableView& table, const EmbeddingBag& bag, int64_t r0,
                      int64_t r1);

// Floats read from tables for rows [r0, r1): the work estimate for sharding.
int64_t EmbeddingBagCost(const EmbeddingTableView& table, const EmbeddingBag& bag, int64_t r0,
                         int64_t r1);

}  // namespace recopt

#endif  // RECOPT_CORE_EMBEDDING_H_
