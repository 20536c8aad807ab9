// Thin OpKernel over core/embedding: reads the tables (constants or resource
// variables, without the copy a ReadVariableOp may make), resolves each
// feature's ids and row structure with core/embedding_ids (turning its
// failures into TensorFlow's gather message), and shards blocks of output
// rows over the intra-op pool.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../core/embedding.h"
#include "../core/embedding_ids.h"
#include "../core/hugepages.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

// farmhash's Fingerprint64, exported by libtensorflow_framework; the pip
// package ships no farmhash.h. It is what StringToHashBucketFast uses, and
// the tests check buckets against that op bit for bit.
namespace util {
uint64_t Fingerprint64(const char* s, size_t len);
}  // namespace util

namespace tensorflow {
namespace {

enum class Layout { kDense, kRagged, kSegments, kSegmentsN };

struct FeatureAttrs {
  int table;
  Layout layout;
  recopt::Combiner combiner;
  int64_t hash_buckets;  // 0: ids are row numbers
  bool wrap_negative;    // Keras `take`: id < 0 reads row id + rows
  bool weighted;
};

// A table's shards (tf.nn.embedding_lookup over a list); one entry when whole.
using Shards = std::vector<recopt::EmbeddingTableView>;

// Per-call state of one feature: resolved ids and row structure.
struct ResolvedFeature {
  std::vector<int64_t> ids;
  std::vector<const void*> rows;  // sharded tables: each id's row address
  std::vector<int64_t> offsets;
  const float* weights = nullptr;
  int64_t num_rows = 0;
  int64_t ids_per_row = 0;
  TensorShape out_shape;  // of its own output
  int64_t width = 0;      // floats per output row
};

int PartitionCount(Layout layout) {
  switch (layout) {
    case Layout::kDense: return 0;
    case Layout::kRagged:
    case Layout::kSegments: return 1;
    case Layout::kSegmentsN: return 2;
  }
  return 0;
}

bool LayoutFromName(const string& name, Layout* out) {
  if (name == "dense") *out = Layout::kDense;
  else if (name == "ragged") *out = Layout::kRagged;
  else if (name == "segments") *out = Layout::kSegments;
  else if (name == "segments_n") *out = Layout::kSegmentsN;
  else return false;
  return true;
}

// An int32 or int64 tensor's values as int64 (flat<T>() once, not per element).
std::vector<int64_t> Int64Values(const Tensor& t) {
  const int64_t n = t.NumElements();
  if (t.dtype() == DT_INT32) {
    const int32* p = t.flat<int32>().data();
    return std::vector<int64_t>(p, p + n);
  }
  const int64_t* p = t.flat<int64_t>().data();
  return std::vector<int64_t>(p, p + n);
}

class FusedEmbeddingLookupOp : public OpKernel {
 public:
  explicit FusedEmbeddingLookupOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::vector<int> tables;
    std::vector<string> layouts, combiners, negative;
    std::vector<int64_t> buckets;
    std::vector<bool> weighted;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("table_ids", &tables));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("layouts", &layouts));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("combiners", &combiners));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("hash_buckets", &buckets));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("negative_ids", &negative));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weighted", &weighted));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("table_dims", &table_dims_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("concat", &concat_));
    DataTypeVector ttables, tids, tparts;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Ttables", &ttables));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tids", &tids));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tpartitions", &tparts));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_weights", &num_weights_));
    num_inputs_ = ttables.size();
    OP_REQUIRES_OK(ctx, ReadShardAttrs(ctx));
    const size_t n = tids.size();
    OP_REQUIRES(ctx, tables.size() == n && layouts.size() == n && combiners.size() == n &&
                         buckets.size() == n && negative.size() == n && weighted.size() == n,
                errors::InvalidArgument(name(), ": every per-feature attr needs ", n, " entries"));
    OP_REQUIRES(ctx, table_dims_.size() == num_tables_,
                errors::InvalidArgument(name(), ": table_dims needs ", num_tables_, " entries"));
    int parts = 0, weights = 0;
    for (size_t f = 0; f < n; ++f) {
      FeatureAttrs a{tables[f], Layout::kDense, recopt::Combiner::kNone, buckets[f],
                     negative[f] == "wrap", weighted[f]};
      OP_REQUIRES(ctx, a.table >= 0 && a.table < static_cast<int>(num_tables_),
                  errors::InvalidArgument(name(), ": feature ", f, " names table ", a.table));
      OP_REQUIRES(ctx, LayoutFromName(layouts[f], &a.layout),
                  errors::InvalidArgument(name(), ": feature ", f, ": unknown layout '", layouts[f], "'"));
      OP_REQUIRES(ctx, recopt::CombinerFromName(combiners[f].c_str(), &a.combiner),
                  errors::InvalidArgument(name(), ": feature ", f, ": unknown combiner '", combiners[f], "'"));
      OP_REQUIRES(ctx, negative[f] == "wrap" || negative[f] == "error",
                  errors::InvalidArgument(name(), ": feature ", f, ": negative_ids must be error or wrap"));
      OP_REQUIRES(ctx, a.layout == Layout::kDense || a.combiner != recopt::Combiner::kNone,
                  errors::InvalidArgument(name(), ": feature ", f, ": ", layouts[f],
                                          " ids need a combiner other than none"));
      OP_REQUIRES(ctx, !a.wrap_negative || shards_[a.table] == 1,
                  errors::InvalidArgument(name(), ": feature ", f, ": negative_ids=wrap needs an unsharded table"));
      OP_REQUIRES(ctx, tids[f] != DT_STRING || a.hash_buckets > 0,
                  errors::InvalidArgument(name(), ": feature ", f, ": string ids need hash_buckets > 0"));
      parts += PartitionCount(a.layout);
      weights += a.weighted;
      features_.push_back(a);
    }
    num_partitions_ = parts;
    OP_REQUIRES(ctx, parts == static_cast<int>(tparts.size()),
                errors::InvalidArgument(name(), ": layouts need ", parts, " partition tensors, got ",
                                        tparts.size()));
    OP_REQUIRES(ctx, weights == num_weights_,
                errors::InvalidArgument(name(), ": ", weights, " weighted features but ",
                                        num_weights_, " weight tensors"));
  }

  void Compute(OpKernelContext* ctx) override {
    std::vector<Tensor> inputs(num_inputs_);
    std::vector<recopt::EmbeddingTableView> views(num_tables_);
    std::vector<Shards> shards(num_tables_);
    for (int t = 0; t < static_cast<int>(num_tables_); ++t) {
      OP_REQUIRES_OK(ctx, ReadTable(ctx, t, &inputs, &views[t], &shards[t]));
    }
    const int ids_base = num_inputs_;
    const int parts_base = ids_base + features_.size();
    int part = parts_base, weight = parts_base + num_partitions_;
    std::vector<ResolvedFeature> resolved(features_.size());
    for (size_t f = 0; f < features_.size(); ++f) {
      const int t = features_[f].table;
      OP_REQUIRES_OK(ctx, Resolve(ctx, f, views[t], ids_base + f, &part, &weight, &resolved[f]));
      if (shards_[t] > 1) OP_REQUIRES_OK(ctx, ShardRows(f, shards[t], &resolved[f]));
    }
    std::vector<recopt::EmbeddingBag> bags(features_.size());
    OP_REQUIRES_OK(ctx, AllocateOutputs(ctx, resolved, &bags));
    Run(ctx, views, bags);
  }

 private:
  Status ReadShardAttrs(OpKernelConstruction* ctx) {
    std::vector<int> shards;
    std::vector<string> partitioning;
    TF_RETURN_IF_ERROR(ctx->GetAttr("table_shards", &shards));
    TF_RETURN_IF_ERROR(ctx->GetAttr("table_partitioning", &partitioning));
    if (shards.empty()) shards.assign(num_inputs_, 1);
    if (partitioning.empty()) partitioning.assign(shards.size(), "div");
    if (partitioning.size() != shards.size()) {
      return errors::InvalidArgument(name(), ": table_partitioning needs ", shards.size(), " entries");
    }
    size_t total = 0;
    for (size_t t = 0; t < shards.size(); ++t) {
      if (shards[t] < 1) return errors::InvalidArgument(name(), ": table ", t, " has ", shards[t], " shards");
      if (partitioning[t] != "mod" && partitioning[t] != "div") {
        return errors::InvalidArgument(name(), ": table ", t, ": table_partitioning must be mod or div, got '",
                                       partitioning[t], "'");
      }
      first_input_.push_back(total);
      div_.push_back(partitioning[t] == "div");
      total += shards[t];
    }
    if (total != num_inputs_) {
      return errors::InvalidArgument(name(), ": table_shards add up to ", total, " tables but ", num_inputs_,
                                     " were given");
    }
    shards_ = shards;
    num_tables_ = shards.size();
    return OkStatus();
  }

  // Logical table t: one input, or shards_[t] inputs of one dtype and width.
  Status ReadTable(OpKernelContext* ctx, int t, std::vector<Tensor>* inputs, recopt::EmbeddingTableView* view,
                   Shards* shards) {
    int64_t rows = 0;
    for (int s = 0; s < shards_[t]; ++s) {
      const int input = first_input_[t] + s;
      recopt::EmbeddingTableView shard;
      TF_RETURN_IF_ERROR(ReadInput(ctx, t, input, &(*inputs)[input], &shard));
      if (s > 0 && (shard.storage != view->storage || shard.dim != view->dim)) {
        return errors::InvalidArgument(name(), ": table ", t, " shard ", s, " is ",
                                       DataTypeString((*inputs)[input].dtype()), " ",
                                       (*inputs)[input].shape().DebugString(), ", unlike shard 0");
      }
      if (s == 0) *view = shard;
      shards->push_back(shard);
      rows += shard.rows;
    }
    if (shards_[t] > 1) *view = {nullptr, view->storage, rows, view->dim};
    return OkStatus();
  }

  Status ReadInput(OpKernelContext* ctx, int t, int input, Tensor* out, recopt::EmbeddingTableView* view) {
    if (ctx->input_dtype(input) == DT_RESOURCE) {
      core::RefCountPtr<Var> var;
      TF_RETURN_IF_ERROR(LookupResource(ctx, HandleFromInput(ctx, input), &var));
      // A shallow copy under the shared lock keeps this buffer alive for the
      // call; an assignment meanwhile swaps in a new buffer instead.
      tf_shared_lock lock(*var->mu());
      if (!var->is_initialized) {
        return errors::FailedPrecondition(name(), ": table ", t, " is an uninitialized variable");
      }
      *out = *var->tensor();
    } else {
      *out = ctx->input(input);
    }
    const bool u8 = out->dtype() == DT_UINT8;
    if (out->dims() != 2 || (out->dtype() != DT_FLOAT && out->dtype() != DT_BFLOAT16 && !u8) ||
        (u8 && out->dim_size(1) <= 8)) {
      return errors::InvalidArgument(name(), ": table ", t, " must be a float32 or bfloat16 matrix, or uint8 ",
                                     "8-bit row-wise rows (codes, then an fp32 scale and bias: dim + 8 columns), got ",
                                     DataTypeString(out->dtype()), " ", out->shape().DebugString());
    }
    // A uint8 row-wise table holds dim codes and 8 bytes of scale and bias.
    const int64_t dim = out->dim_size(1) - (u8 ? 8 : 0);
    if (table_dims_[t] >= 0 && dim != table_dims_[t]) {
      return errors::InvalidArgument(name(), ": table ", t, " has ", dim, " values per row but the graph was built for ",
                                     table_dims_[t]);
    }
    const int storage = u8 ? recopt::kTableU8RowWise : out->dtype() == DT_BFLOAT16 ? recopt::kTableBF16 : recopt::kTableF32;
    *view = {out->tensor_data().data(), storage, out->dim_size(0), dim};
    recopt::AdviseHugePages(out->tensor_data().data(), out->tensor_data().size());
    return OkStatus();
  }

  // Each id's row address in its shard, mapped as embedding_lookup's
  // partition_strategy maps it.
  Status ShardRows(int f, const Shards& shards, ResolvedFeature* r) const {
    const bool div = div_[features_[f].table];
    std::vector<int64_t> rows;
    for (const auto& s : shards) rows.push_back(s.rows);
    const int64_t k = rows.size();
    const recopt::ShardMap map(div, rows.data(), k);
    if (!map.valid()) {
      return errors::InvalidArgument(name(), ": feature ", f, " (table ", features_[f].table, "): ",
                                     map.total_rows(), " rows cannot be split over ", k, " shards");
    }
    r->rows.resize(r->ids.size());
    for (size_t i = 0; i < r->ids.size(); ++i) {
      int64_t shard, row;
      if (!map.Locate(r->ids[i], &shard, &row)) {
        return errors::InvalidArgument(name(), ": feature ", f, " (table ", features_[f].table, "): indices[", i,
                                       "] = ", r->ids[i], " is not in the table's ", k, " shards (",
                                       map.total_rows(), " rows, ", div ? "div" : "mod", " partitioning)");
      }
      r->rows[i] = recopt::TableRow(shards[shard], row);
    }
    return OkStatus();
  }

  Status OutOfRange(int f, int64_t i, int64_t id, int64_t rows) const {
    return errors::InvalidArgument(name(), ": feature ", f, " (table ", features_[f].table, "): indices[", i,
                                   "] = ", id, " is not in [0, ", rows, ")");
  }

  Status ResolveIds(int f, const Tensor& ids, const recopt::EmbeddingTableView& table,
                    std::vector<int64_t>* out) const {
    const FeatureAttrs& a = features_[f];
    const int64_t n = ids.NumElements();
    out->resize(n);
    recopt::IdRules rules;
    rules.hash_buckets = a.hash_buckets;
    rules.wrap_negative = a.wrap_negative;
    rules.check_range = shards_[a.table] == 1;  // ShardRows checks sharded ids
    recopt::IdError error;
    bool ok;
    if (ids.dtype() == DT_INT32) {
      ok = recopt::ResolveIntIds(ids.flat<int32>().data(), n, table.rows, rules, out->data(), &error);
    } else if (ids.dtype() == DT_INT64) {
      ok = recopt::ResolveIntIds(ids.flat<int64_t>().data(), n, table.rows, rules, out->data(), &error);
    } else {
      const tstring* strings = ids.flat<tstring>().data();
      std::vector<uint64_t> fingerprints(n);
      for (int64_t i = 0; i < n; ++i) fingerprints[i] = ::util::Fingerprint64(strings[i].data(), strings[i].size());
      ok = recopt::BucketFingerprints(fingerprints.data(), n, table.rows, rules, out->data(), &error);
    }
    return ok ? OkStatus() : OutOfRange(f, error.index, error.id, table.rows);
  }

  Status Resolve(OpKernelContext* ctx, int f, const recopt::EmbeddingTableView& table, int ids_index,
                 int* part, int* weight, ResolvedFeature* r) const {
    const FeatureAttrs& a = features_[f];
    const Tensor& ids = ctx->input(ids_index);
    TF_RETURN_IF_ERROR(ResolveIds(f, ids, table, &r->ids));
    const int64_t n = ids.NumElements();
    if (a.layout == Layout::kDense) {
      TF_RETURN_IF_ERROR(DenseRows(f, ids, table.dim, r));
    } else {
      const Tensor& ids_part = ctx->input((*part)++);
      if (ids.dims() != 1) {
        return errors::InvalidArgument(name(), ": feature ", f, ": ids must be a vector, got ",
                                       ids.shape().DebugString());
      }
      if (a.layout == Layout::kRagged) {
        TF_RETURN_IF_ERROR(RaggedRows(f, ids_part, n, r));
      } else {
        int64_t num_segments = -1;
        if (a.layout == Layout::kSegmentsN) {
          const Tensor& num = ctx->input((*part)++);
          if (num.NumElements() != 1) {
            return errors::InvalidArgument(name(), ": feature ", f, ": num_segments must be a scalar");
          }
          num_segments = Int64Values(num)[0];
        }
        TF_RETURN_IF_ERROR(SegmentRows(f, ids_part, n, num_segments, r));
      }
      r->width = table.dim;
      r->out_shape = TensorShape({r->num_rows, table.dim});
    }
    if (a.weighted) {
      const Tensor& w = ctx->input((*weight)++);
      if (w.NumElements() != n || w.dtype() != DT_FLOAT) {
        return errors::InvalidArgument(name(), ": feature ", f, ": weights must be float32 with one per id (",
                                       n, "), got ", w.shape().DebugString());
      }
      r->weights = w.flat<float>().data();
    }
    return OkStatus();
  }

  Status DenseRows(int f, const Tensor& ids, int64_t dim, ResolvedFeature* r) const {
    const bool pooled = features_[f].combiner != recopt::Combiner::kNone;
    if (ids.dims() < 1 || (pooled && ids.dims() != 2)) {
      return errors::InvalidArgument(name(), ": feature ", f, ": dense ids must be ",
                                     pooled ? "[batch, ids_per_row]" : "at least a vector",
                                     ", got ", ids.shape().DebugString());
    }
    r->num_rows = ids.dim_size(0);
    r->ids_per_row = 1;
    for (int d = 1; d < ids.dims(); ++d) r->ids_per_row *= ids.dim_size(d);
    if (pooled) {
      r->out_shape = TensorShape({r->num_rows, dim});
      r->width = dim;
    } else {
      r->out_shape = ids.shape();
      r->out_shape.AddDim(dim);
      r->width = r->ids_per_row * dim;
    }
    return OkStatus();
  }

  Status RaggedRows(int f, const Tensor& splits, int64_t n, ResolvedFeature* r) const {
    if (splits.dims() != 1) {
      return errors::InvalidArgument(name(), ": feature ", f, ": row_splits must be a non-empty vector");
    }
    recopt::IdError error;
    switch (recopt::RaggedOffsets(Int64Values(splits), n, &r->offsets, &r->num_rows, &error)) {
      case recopt::RowsError::kNone: return OkStatus();
      case recopt::RowsError::kSplitsEnd:
        return errors::InvalidArgument(name(), ": feature ", f, ": row_splits end at ", error.id,
                                       " but there are ", n, " ids");
      case recopt::RowsError::kSplitsEmpty:
        return errors::InvalidArgument(name(), ": feature ", f, ": row_splits must be a non-empty vector");
      default:
        return errors::InvalidArgument(name(), ": feature ", f, ": row_splits must start at 0 and not decrease");
    }
  }

  Status SegmentRows(int f, const Tensor& segments, int64_t n, int64_t num_segments,
                     ResolvedFeature* r) const {
    if (segments.NumElements() != n) {
      return errors::InvalidArgument(name(), ": feature ", f, ": ", segments.NumElements(),
                                     " segment ids for ", n, " ids");
    }
    recopt::IdError error;
    if (recopt::SegmentOffsets(Int64Values(segments), num_segments, &r->offsets, &r->num_rows, &error) !=
        recopt::RowsError::kNone) {
      return errors::InvalidArgument(name(), ": feature ", f, ": segment ids must be sorted and in range; "
                                     "segment_ids[", error.index, "] = ", error.id);
    }
    return OkStatus();
  }

  Status AllocateOutputs(OpKernelContext* ctx, std::vector<ResolvedFeature>& resolved,
                         std::vector<recopt::EmbeddingBag>* bags) {
    for (size_t f = 0; f < resolved.size(); ++f) {
      const ResolvedFeature& r = resolved[f];
      (*bags)[f] = {features_[f].combiner, r.ids.data(), r.weights, r.num_rows, r.ids_per_row,
                    r.offsets.empty() ? nullptr : r.offsets.data(), nullptr, r.width,
                    features_[f].layout == Layout::kRagged && !features_[f].weighted,
                    r.rows.empty() ? nullptr : r.rows.data()};
    }
    if (!concat_) {
      for (size_t f = 0; f < resolved.size(); ++f) {
        Tensor* out = nullptr;
        TF_RETURN_IF_ERROR(ctx->allocate_output(f, resolved[f].out_shape, &out));
        (*bags)[f].out = out->flat<float>().data();
      }
      return OkStatus();
    }
    int64_t total = 0;
    for (size_t f = 0; f < resolved.size(); ++f) {
      if (resolved[f].num_rows != resolved[0].num_rows) {
        return errors::InvalidArgument(name(), ": concatenated features need one batch size; feature 0 has ",
                                       resolved[0].num_rows, " rows, feature ", f, " has ",
                                       resolved[f].num_rows);
      }
      total += resolved[f].width;
    }
    Tensor* out = nullptr;
    TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({resolved[0].num_rows, total}), &out));
    int64_t column = 0;
    for (size_t f = 0; f < resolved.size(); ++f) {
      (*bags)[f].out = out->flat<float>().data() + column;
      (*bags)[f].out_stride = total;
      column += resolved[f].width;
    }
    return OkStatus();
  }

  void Run(OpKernelContext* ctx, const std::vector<recopt::EmbeddingTableView>& views,
           const std::vector<recopt::EmbeddingBag>& bags) const {
    struct Block { int feature; int64_t r0, r1; };
    constexpr int64_t kRowsPerBlock = 32;
    std::vector<Block> blocks;
    int64_t cost = 0;
    for (size_t f = 0; f < bags.size(); ++f) {
      const auto& table = views[features_[f].table];
      cost += recopt::EmbeddingBagCost(table, bags[f], 0, bags[f].num_rows);
      for (int64_t r = 0; r < bags[f].num_rows; r += kRowsPerBlock) {
        blocks.push_back({static_cast<int>(f), r, std::min(bags[f].num_rows, r + kRowsPerBlock)});
      }
    }
    if (blocks.empty()) return;
    // A thread's consecutive blocks of one feature go to the core as one
    // range: its prefetch runs ahead across them instead of stalling on the
    // first ids of every block.
    auto work = [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1;) {
        const Block& first = blocks[b];
        int64_t r1 = first.r1;
        for (++b; b < b1 && blocks[b].feature == first.feature; ++b) r1 = blocks[b].r1;
        recopt::EmbeddingBagRows(views[features_[first.feature].table], bags[first.feature], first.r0, r1);
      }
    };
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    // Cost per block in "cycles": about one per float read and written.
    Shard(threads->num_threads, threads->workers, blocks.size(),
          std::max<int64_t>(1, cost / static_cast<int64_t>(blocks.size())), work);
  }

  std::vector<FeatureAttrs> features_;
  std::vector<int64_t> table_dims_;
  std::vector<int> shards_;       // per logical table: how many inputs it spans
  std::vector<int> first_input_;  // per logical table: its first input
  std::vector<bool> div_;         // per logical table: div (else mod) partitioning
  size_t num_inputs_ = 0;         // table inputs, shards counted one by one
  size_t num_tables_ = 0;
  int num_weights_ = 0;
  int num_partitions_ = 0;
  bool concat_ = false;
};

REGISTER_KERNEL_BUILDER(Name("Recopt>FusedEmbeddingLookup").Device(DEVICE_CPU), FusedEmbeddingLookupOp);

}  // namespace
}  // namespace tensorflow
