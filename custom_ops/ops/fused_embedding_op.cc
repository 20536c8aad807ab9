// Op registration and shape function only; the kernel is in kernels/.
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

struct FeatureShape {
  DimensionHandle rows;
  ShapeHandle own;  // the feature's separate output
  DimensionHandle width;
};

Status FeatureOutput(InferenceContext* c, int ids_index, const std::string& layout,
                     const std::string& combiner, DimensionHandle dim, FeatureShape* out) {
  ShapeHandle ids = c->input(ids_index);
  if (layout != "dense") {
    out->rows = c->UnknownDim();
    out->own = c->Matrix(out->rows, dim);
    out->width = dim;
    return OkStatus();
  }
  if (combiner != "none") {
    TF_RETURN_IF_ERROR(c->WithRank(ids, 2, &ids));
    out->rows = c->Dim(ids, 0);
    out->own = c->Matrix(out->rows, dim);
    out->width = dim;
    return OkStatus();
  }
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(ids, 1, &ids));
  out->rows = c->Dim(ids, 0);
  TF_RETURN_IF_ERROR(c->Concatenate(ids, c->Vector(dim), &out->own));
  ShapeHandle tail;
  TF_RETURN_IF_ERROR(c->Subshape(out->own, 1, &tail));
  DimensionHandle width = c->NumElements(tail);
  out->width = width;
  return OkStatus();
}

Status FusedEmbeddingShape(InferenceContext* c) {
  std::vector<int> tables;
  std::vector<std::string> layouts, combiners;
  std::vector<int64_t> dims;
  bool concat;
  TF_RETURN_IF_ERROR(c->GetAttr("table_ids", &tables));
  TF_RETURN_IF_ERROR(c->GetAttr("layouts", &layouts));
  TF_RETURN_IF_ERROR(c->GetAttr("combiners", &combiners));
  TF_RETURN_IF_ERROR(c->GetAttr("table_dims", &dims));
  TF_RETURN_IF_ERROR(c->GetAttr("concat", &concat));
  DataTypeVector table_types;
  TF_RETURN_IF_ERROR(c->GetAttr("Ttables", &table_types));
  if (layouts.size() != tables.size() || combiners.size() != tables.size()) {
    return errors::InvalidArgument("table_ids, layouts and combiners need one entry per feature");
  }
  const int ids_base = static_cast<int>(table_types.size());
  DimensionHandle rows = c->UnknownDim(), total = c->MakeDim(0);
  for (size_t f = 0; f < tables.size(); ++f) {
    if (tables[f] < 0 || tables[f] >= static_cast<int>(dims.size())) {
      return errors::InvalidArgument("feature ", f, " names table ", tables[f]);
    }
    DimensionHandle dim = dims[tables[f]] >= 0 ? c->MakeDim(dims[tables[f]]) : c->UnknownDim();
    FeatureShape shape;
    TF_RETURN_IF_ERROR(FeatureOutput(c, ids_base + f, layouts[f], combiners[f], dim, &shape));
    if (!concat) {
      c->set_output(f, shape.own);
      continue;
    }
    TF_RETURN_IF_ERROR(c->Merge(rows, shape.rows, &rows));
    TF_RETURN_IF_ERROR(c->Add(total, shape.width, &total));
  }
  if (concat) c->set_output(0, c->Matrix(rows, total));
  return OkStatus();
}

}  // namespace

// Embedding lookups of many features over many tables in one op.
// Feature f reads table table_ids[f] with ids[f], whose structure is
// layouts[f]: "dense" ([batch] or [batch, n] ids), "ragged" (ids values +
// row_splits), "segments" / "segments_n" (ids + sorted segment ids, as
// SparseSegmentSum; segments_n also takes num_segments). combiners[f]:
// none (gather), sum, mean, sqrtn; weighted[f] takes one float per id.
// An empty row gives zeros, except an unweighted ragged mean: NaN there,
// as tf.reduce_mean over a RaggedTensor (0/0).
// hash_buckets[f] > 0 maps ids first: strings by Fingerprint64 (exactly
// StringToHashBucketFast), integers by floormod. negative_ids[f]: "error"
// (GatherV2) or "wrap" (Keras take: id + rows). Tables are float32 or
// bfloat16 tensors, uint8 8-bit row-wise ones ([rows, dim + 8]: codes,
// then an fp32 scale and bias per row; core/embedding.h), or resource
// variables of those; table_dims[t] (-1: unknown; dim for uint8 tables)
// gives static shapes. A table may span several inputs:
// table_shards[t] consecutive ones (empty: one each), which
// tf.nn.embedding_lookup over a list of variables addresses as one table,
// with table_partitioning[t] "mod" or "div" (its partition_strategy).
// table_ids and table_dims count such a table once. concat: one
// [batch, sum of widths] output with the features side by side, else one
// output per feature.
REGISTER_OP("Recopt>FusedEmbeddingLookup")
    .Input("tables: Ttables")
    .Input("ids: Tids")
    .Input("partitions: Tpartitions")
    .Input("weights: num_weights * float")
    .Output("outputs: num_outputs * float")
    .Attr("Ttables: list({float, bfloat16, uint8, resource}) >= 1")
    .Attr("Tids: list({int32, int64, string}) >= 1")
    .Attr("Tpartitions: list({int32, int64}) >= 0")
    .Attr("num_weights: int >= 0")
    .Attr("num_outputs: int >= 1")
    .Attr("table_ids: list(int)")
    .Attr("table_dims: list(int)")
    .Attr("layouts: list(string)")
    .Attr("combiners: list(string)")
    .Attr("hash_buckets: list(int)")
    .Attr("negative_ids: list(string)")
    .Attr("weighted: list(bool)")
    .Attr("concat: bool = false")
    .Attr("table_shards: list(int) = []")
    .Attr("table_partitioning: list(string) = []")
    .SetShapeFn(FusedEmbeddingShape);

}  // namespace tensorflow
