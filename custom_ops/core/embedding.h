// Multi-table embedding bags with no TensorFlow dependency: the OpKernel
// resolves ids (hashing, wrapping, range checks) and row structure, then
// calls EmbeddingBagRows per block of output rows.
#ifndef RECOPT_CORE_EMBEDDING_H_
#define RECOPT_CORE_EMBEDDING_H_

#include <cstdint>

namespace recopt {

enum class Combiner { kNone, kSum, kMean, kSqrtN };

// floor(n / d) for d > 0 by a multiply: the divisions of a sharded lookup
// would otherwise cost more than its row reads. Exact for 0 <= n < 2^52.
class Divider {
 public:
  explicit Divider(int64_t d = 1) : d_(d), inv_(1.0 / static_cast<double>(d)) {}
  int64_t operator()(int64_t n) const {
    int64_t q = static_cast<int64_t>(static_cast<double>(n) * inv_);
    if (q * d_ > n) --q;
    else if ((q + 1) * d_ <= n) ++q;
    return q;
  }

 private:
  int64_t d_;
  double inv_;
};

// tf.nn.embedding_lookup's id -> (shard, row) over a table split into
// shards, for partition_strategy "mod" or "div", with TensorFlow's floor
// arithmetic: Locate fails exactly where TensorFlow's DynamicPartition or
// gather would reject the id.
class ShardMap {
 public:
  ShardMap(bool div, const int64_t* shard_rows, int64_t num_shards);
  // div needs at least one row per shard (TensorFlow divides by zero otherwise).
  bool valid() const { return !div_ || per_ > 0; }
  int64_t total_rows() const { return total_; }
  bool Locate(int64_t id, int64_t* shard, int64_t* row) const;

 private:
  bool LocateExact(int64_t id, int64_t* shard, int64_t* row) const;

  bool div_;
  const int64_t* rows_;
  int64_t k_, total_ = 0, per_ = 0, extras_ = 0;
  // div over the layout every partitioner writes (the first `extras` shards
  // one row longer): a range test and one division.
  bool standard_ = true;
  Divider by_k_, by_per_, by_per1_;
};

// Returns false for a name other than none, sum, mean, sqrtn.
bool CombinerFromName(const char* name, Combiner* out);

// How a table's rows are stored. kTableF32 and kTableBF16 equal
// kScoreF32 and kScoreBF16 (isa_kernels.h), whose loaders they share.
// kTableU8RowWise is FBGEMM's fused 8-bit row-wise format: each row is dim
// uint8 codes, then its fp32 scale and fp32 bias (dim + 8 bytes, no
// padding); element j is fma(code_j, scale, bias) in fp32. Lookups at large
// batch are bound by the bytes they read: a quarter of fp32's.
enum TableStorage { kTableF32 = 0, kTableBF16 = 1, kTableU8RowWise = 3 };

struct EmbeddingTableView {
  const void* data;  // row-major [rows, dim] in `storage`
  int storage;       // TableStorage
  int64_t rows;
  int64_t dim;       // values per row (for kTableU8RowWise, not counting the scale and bias)
};

inline int64_t TableRowBytes(int storage, int64_t dim) {
  return storage == kTableU8RowWise ? dim + 8 : dim * (storage == kTableBF16 ? 2 : 4);
}

// Address of row `row` of `t`.
inline const void* TableRow(const EmbeddingTableView& t, int64_t row) {
  return static_cast<const char*>(t.data) + row * TableRowBytes(t.storage, t.dim);
}

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
// is zero, as embedding_lookup_sparse does. Runs the CPU's kernel path
// (embedding_isa.inc, picked as the dense kernels are; RECOPT_ISA forces one).
void EmbeddingBagRows(const EmbeddingTableView& table, const EmbeddingBag& bag, int64_t r0,
                      int64_t r1);

// Floats read from tables for rows [r0, r1): the work estimate for sharding.
int64_t EmbeddingBagCost(const EmbeddingTableView& table, const EmbeddingBag& bag, int64_t r0,
                         int64_t r1);

}  // namespace recopt

#endif  // RECOPT_CORE_EMBEDDING_H_
