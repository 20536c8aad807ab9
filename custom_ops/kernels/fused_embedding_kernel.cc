// OpKernel over core/: attrs checked by core/embedding_plan, tables read
// (constants or resource variables, without the copy a ReadVariableOp may
// make), ids and row structure resolved by core/embedding_ids (its failures
// turned into TensorFlow's gather messages), and core's row blocks sharded
// over the intra-op pool.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../core/embedding.h"
#include "../core/embedding_ids.h"
#include "../core/embedding_plan.h"
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
    recopt::LookupAttrs a;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("table_ids", &a.table_ids));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("layouts", &a.layouts));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("combiners", &a.combiners));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("hash_buckets", &a.hash_buckets));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("negative_ids", &a.negative_ids));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weighted", &a.weighted));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("table_dims", &a.table_dims));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("table_shards", &a.table_shards));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("table_partitioning", &a.table_partitioning));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_weights", &a.num_weight_inputs));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("concat", &concat_));
    DataTypeVector ttables, tids, tparts;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Ttables", &ttables));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tids", &tids));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tpartitions", &tparts));
    for (DataType t : tids) a.string_ids.push_back(t == DT_STRING);
    a.num_table_inputs = ttables.size();
    a.num_partition_inputs = tparts.size();
    const std::string error = recopt::PlanLookup(a, &plan_);
    OP_REQUIRES(ctx, error.empty(), errors::InvalidArgument(name(), ": ", error));
    table_dims_ = a.table_dims;
    num_inputs_ = ttables.size();
  }

  void Compute(OpKernelContext* ctx) override {
    std::vector<Tensor> inputs(num_inputs_);
    std::vector<recopt::EmbeddingTableView> views(plan_.tables.size());
    std::vector<Shards> shards(plan_.tables.size());
    for (int t = 0; t < static_cast<int>(plan_.tables.size()); ++t) {
      OP_REQUIRES_OK(ctx, ReadTable(ctx, t, &inputs, &views[t], &shards[t]));
    }
    const int ids_base = num_inputs_;
    const int parts_base = ids_base + plan_.features.size();
    int part = parts_base, weight = parts_base + plan_.num_partitions;
    std::vector<ResolvedFeature> resolved(plan_.features.size());
    for (size_t f = 0; f < plan_.features.size(); ++f) {
      const int t = plan_.features[f].table;
      OP_REQUIRES_OK(ctx, Resolve(ctx, f, views[t], ids_base + f, &part, &weight, &resolved[f]));
      if (plan_.tables[t].shards > 1) OP_REQUIRES_OK(ctx, ShardRows(f, shards[t], &resolved[f]));
    }
    std::vector<recopt::EmbeddingBag> bags(plan_.features.size());
    OP_REQUIRES_OK(ctx, AllocateOutputs(ctx, resolved, &bags));
    Run(ctx, views, bags);
  }

 private:
  // Logical table t: one input, or its shards, of one dtype and width.
  Status ReadTable(OpKernelContext* ctx, int t, std::vector<Tensor>* inputs, recopt::EmbeddingTableView* view,
                   Shards* shards) {
    int64_t rows = 0;
    for (int s = 0; s < plan_.tables[t].shards; ++s) {
      const int input = plan_.tables[t].first_input + s;
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
    if (plan_.tables[t].shards > 1) *view = {nullptr, view->storage, rows, view->dim};
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
    const bool div = plan_.tables[plan_.features[f].table].div;
    std::vector<int64_t> rows;
    for (const auto& s : shards) rows.push_back(s.rows);
    const int64_t k = rows.size();
    const recopt::ShardMap map(div, rows.data(), k);
    if (!map.valid()) {
      return errors::InvalidArgument(name(), ": feature ", f, " (table ", plan_.features[f].table, "): ",
                                     map.total_rows(), " rows cannot be split over ", k, " shards");
    }
    r->rows.resize(r->ids.size());
    for (size_t i = 0; i < r->ids.size(); ++i) {
      int64_t shard, row;
      if (!map.Locate(r->ids[i], &shard, &row)) {
        return errors::InvalidArgument(name(), ": feature ", f, " (table ", plan_.features[f].table, "): indices[", i,
                                       "] = ", r->ids[i], " is not in the table's ", k, " shards (",
                                       map.total_rows(), " rows, ", div ? "div" : "mod", " partitioning)");
      }
      r->rows[i] = recopt::TableRow(shards[shard], row);
    }
    return OkStatus();
  }

  Status OutOfRange(int f, int64_t i, int64_t id, int64_t rows) const {
    return errors::InvalidArgument(name(), ": feature ", f, " (table ", plan_.features[f].table, "): indices[", i,
                                   "] = ", id, " is not in [0, ", rows, ")");
  }

  Status ResolveIds(int f, const Tensor& ids, const recopt::EmbeddingTableView& table,
                    std::vector<int64_t>* out) const {
    const recopt::LookupFeature& a = plan_.features[f];
    const int64_t n = ids.NumElements();
    out->resize(n);
    recopt::IdRules rules;
    rules.hash_buckets = a.hash_buckets;
    rules.wrap_negative = a.wrap_negative;
    rules.check_range = plan_.tables[a.table].shards == 1;  // ShardRows checks sharded ids
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
    const recopt::LookupFeature& a = plan_.features[f];
    const Tensor& ids = ctx->input(ids_index);
    TF_RETURN_IF_ERROR(ResolveIds(f, ids, table, &r->ids));
    const int64_t n = ids.NumElements();
    if (a.layout == recopt::IdLayout::kDense) {
      TF_RETURN_IF_ERROR(DenseRows(f, ids, table.dim, r));
    } else {
      const Tensor& ids_part = ctx->input((*part)++);
      if (ids.dims() != 1) {
        return errors::InvalidArgument(name(), ": feature ", f, ": ids must be a vector, got ",
                                       ids.shape().DebugString());
      }
      if (a.layout == recopt::IdLayout::kRagged) {
        TF_RETURN_IF_ERROR(RaggedRows(f, ids_part, n, r));
      } else {
        int64_t num_segments = -1;
        if (a.layout == recopt::IdLayout::kSegmentsN) {
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
    const bool pooled = plan_.features[f].combiner != recopt::Combiner::kNone;
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
      (*bags)[f] = {plan_.features[f].combiner, r.ids.data(), r.weights, r.num_rows, r.ids_per_row,
                    r.offsets.empty() ? nullptr : r.offsets.data(), nullptr, r.width,
                    plan_.features[f].layout == recopt::IdLayout::kRagged && !plan_.features[f].weighted,
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
    const std::vector<recopt::RowBlock> blocks = recopt::RowBlocks(bags, /*rows_per_block=*/32);
    if (blocks.empty()) return;
    std::vector<const recopt::EmbeddingTableView*> table_of;
    int64_t cost = 0;
    for (size_t f = 0; f < bags.size(); ++f) {
      table_of.push_back(&views[plan_.features[f].table]);
      cost += recopt::EmbeddingBagCost(*table_of[f], bags[f], 0, bags[f].num_rows);
    }
    auto work = [&](int64_t b0, int64_t b1) { recopt::RunRowBlocks(blocks, table_of, bags, b0, b1); };
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    // Cost per block in "cycles": about one per float read and written.
    Shard(threads->num_threads, threads->workers, blocks.size(),
          std::max<int64_t>(1, cost / static_cast<int64_t>(blocks.size())), work);
  }

  recopt::LookupPlan plan_;
  std::vector<int64_t> table_dims_;
  size_t num_inputs_ = 0;  // table inputs, shards counted one by one
  bool concat_ = false;
};

REGISTER_KERNEL_BUILDER(Name("Recopt>FusedEmbeddingLookup").Device(DEVICE_CPU), FusedEmbeddingLookupOp);

}  // namespace
}  // namespace tensorflow
