// What a fused embedding lookup's attrs describe (each feature's table, id
// layout and id rules; each table's shards), checked once when the kernel
// is built, and the blocks of output rows its calls are split into. No
// TensorFlow include: the OpKernel reads attrs and tensors and turns an
// error string into TensorFlow's status; the core tests check the rest.
#ifndef RECOPT_CORE_EMBEDDING_PLAN_H_
#define RECOPT_CORE_EMBEDDING_PLAN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "embedding.h"

namespace recopt {

// How a feature's ids arrive: [batch, ...] dense ids, or a flat id vector
// with RaggedTensor row_splits, sorted segment ids, or segment ids and
// num_segments (the partition inputs, in that order).
enum class IdLayout { kDense, kRagged, kSegments, kSegmentsN };

bool IdLayoutFromName(const std::string& name, IdLayout* out);
// Partition inputs a layout reads after the ids.
int PartitionCount(IdLayout layout);

struct LookupFeature {
  int table;
  IdLayout layout;
  Combiner combiner;
  int64_t hash_buckets;  // 0: ids are row numbers
  bool wrap_negative;    // Keras `take`: id < 0 reads row id + rows
  bool weighted;
};

// A logical table: one input, or `shards` inputs of one dtype and width
// (tf.nn.embedding_lookup over a list, "div" or "mod" partitioning).
struct LookupTable {
  int shards;
  int first_input;
  bool div;
};

// The op's attrs as read (custom_ops/ops/fused_embedding_op.cc documents them).
struct LookupAttrs {
  std::vector<int> table_ids;
  std::vector<std::string> layouts, combiners, negative_ids;
  std::vector<int64_t> hash_buckets;
  std::vector<bool> weighted;
  std::vector<bool> string_ids;                  // per feature: its Tids is string
  std::vector<int> table_shards;                 // empty: one input per table
  std::vector<std::string> table_partitioning;   // empty: "div" for every table
  std::vector<int64_t> table_dims;
  int num_table_inputs = 0;
  int num_partition_inputs = 0;
  int num_weight_inputs = 0;
};

struct LookupPlan {
  std::vector<LookupFeature> features;
  std::vector<LookupTable> tables;
  int num_partitions = 0;  // partition inputs the layouts read, in feature order
};

// Fills *plan and returns "", or returns what is wrong, naming the feature
// or table and the attr (the kernel prefixes its node name).
std::string PlanLookup(const LookupAttrs& attrs, LookupPlan* plan);

// Output rows [r0, r1) of one feature: the unit the kernel shards.
struct RowBlock {
  int feature;
  int64_t r0, r1;
};

// Every feature's output rows in blocks of at most rows_per_block, feature
// by feature.
std::vector<RowBlock> RowBlocks(const std::vector<EmbeddingBag>& bags, int64_t rows_per_block);

// Fills blocks [b0, b1). A run of consecutive blocks of one feature goes to
// EmbeddingBagRows as one range: its prefetch then runs ahead across them
// instead of stalling on the first ids of every block. table_of[f] is
// feature f's table.
void RunRowBlocks(const std::vector<RowBlock>& blocks, const std::vector<const EmbeddingTableView*>& table_of,
                  const std::vector<EmbeddingBag>& bags, int64_t b0, int64_t b1);

}  // namespace recopt

#endif  // RECOPT_CORE_EMBEDDING_PLAN_H_
