#include "embedding_plan.h"

#include <algorithm>

namespace recopt {
namespace {

std::string Feature(size_t f) { return "feature " + std::to_string(f); }

// table_shards / table_partitioning -> plan->tables.
std::string PlanTables(const LookupAttrs& a, LookupPlan* plan) {
  std::vector<int> shards = a.table_shards;
  std::vector<std::string> partitioning = a.table_partitioning;
  if (shards.empty()) shards.assign(a.num_table_inputs, 1);
  if (partitioning.empty()) partitioning.assign(shards.size(), "div");
  if (partitioning.size() != shards.size()) {
    return "table_partitioning needs " + std::to_string(shards.size()) + " entries";
  }
  int total = 0;
  for (size_t t = 0; t < shards.size(); ++t) {
    if (shards[t] < 1) return "table " + std::to_string(t) + " has " + std::to_string(shards[t]) + " shards";
    if (partitioning[t] != "mod" && partitioning[t] != "div") {
      return "table " + std::to_string(t) + ": table_partitioning must be mod or div, got '" + partitioning[t] + "'";
    }
    plan->tables.push_back({shards[t], total, partitioning[t] == "div"});
    total += shards[t];
  }
  if (total != a.num_table_inputs) {
    return "table_shards add up to " + std::to_string(total) + " tables but " + std::to_string(a.num_table_inputs) +
           " were given";
  }
  if (a.table_dims.size() != plan->tables.size()) {
    return "table_dims needs " + std::to_string(plan->tables.size()) + " entries";
  }
  return "";
}

}  // namespace

bool IdLayoutFromName(const std::string& name, IdLayout* out) {
  if (name == "dense") *out = IdLayout::kDense;
  else if (name == "ragged") *out = IdLayout::kRagged;
  else if (name == "segments") *out = IdLayout::kSegments;
  else if (name == "segments_n") *out = IdLayout::kSegmentsN;
  else return false;
  return true;
}

int PartitionCount(IdLayout layout) {
  switch (layout) {
    case IdLayout::kDense: return 0;
    case IdLayout::kRagged:
    case IdLayout::kSegments: return 1;
    case IdLayout::kSegmentsN: return 2;
  }
  return 0;
}

std::string PlanLookup(const LookupAttrs& a, LookupPlan* plan) {
  *plan = LookupPlan();
  std::string error = PlanTables(a, plan);
  if (!error.empty()) return error;
  const size_t n = a.string_ids.size();
  if (a.table_ids.size() != n || a.layouts.size() != n || a.combiners.size() != n || a.hash_buckets.size() != n ||
      a.negative_ids.size() != n || a.weighted.size() != n) {
    return "every per-feature attr needs " + std::to_string(n) + " entries";
  }
  const int num_tables = static_cast<int>(plan->tables.size());
  int weights = 0;
  for (size_t f = 0; f < n; ++f) {
    LookupFeature x{a.table_ids[f], IdLayout::kDense, Combiner::kNone, a.hash_buckets[f],
                    a.negative_ids[f] == "wrap", a.weighted[f]};
    if (x.table < 0 || x.table >= num_tables) return Feature(f) + " names table " + std::to_string(x.table);
    if (!IdLayoutFromName(a.layouts[f], &x.layout)) return Feature(f) + ": unknown layout '" + a.layouts[f] + "'";
    if (!CombinerFromName(a.combiners[f].c_str(), &x.combiner)) {
      return Feature(f) + ": unknown combiner '" + a.combiners[f] + "'";
    }
    if (a.negative_ids[f] != "wrap" && a.negative_ids[f] != "error") {
      return Feature(f) + ": negative_ids must be error or wrap";
    }
    if (x.layout != IdLayout::kDense && x.combiner == Combiner::kNone) {
      return Feature(f) + ": " + a.layouts[f] + " ids need a combiner other than none";
    }
    if (x.wrap_negative && plan->tables[x.table].shards != 1) {
      return Feature(f) + ": negative_ids=wrap needs an unsharded table";
    }
    if (a.string_ids[f] && x.hash_buckets <= 0) return Feature(f) + ": string ids need hash_buckets > 0";
    plan->num_partitions += PartitionCount(x.layout);
    weights += x.weighted;
    plan->features.push_back(x);
  }
  if (plan->num_partitions != a.num_partition_inputs) {
    return "layouts need " + std::to_string(plan->num_partitions) + " partition tensors, got " +
           std::to_string(a.num_partition_inputs);
  }
  if (weights != a.num_weight_inputs) {
    return std::to_string(weights) + " weighted features but " + std::to_string(a.num_weight_inputs) +
           " weight tensors";
  }
  return "";
}

std::vector<RowBlock> RowBlocks(const std::vector<EmbeddingBag>& bags, int64_t rows_per_block) {
  std::vector<RowBlock> blocks;
  for (size_t f = 0; f < bags.size(); ++f) {
    for (int64_t r = 0; r < bags[f].num_rows; r += rows_per_block) {
      blocks.push_back({static_cast<int>(f), r, std::min(bags[f].num_rows, r + rows_per_block)});
    }
  }
  return blocks;
}

void RunRowBlocks(const std::vector<RowBlock>& blocks, const std::vector<const EmbeddingTableView*>& table_of,
                  const std::vector<EmbeddingBag>& bags, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1;) {
    const RowBlock& first = blocks[b];
    int64_t r1 = first.r1;
    for (++b; b < b1 && blocks[b].feature == first.feature; ++b) r1 = blocks[b].r1;
    EmbeddingBagRows(*table_of[first.feature], bags[first.feature], first.r0, r1);
  }
}

}  // namespace recopt
