// Op registration and shape functions only; kernels are in kernels/.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

// [..., n] -> [..., k] for both outputs; k from a constant input when known.
Status TopKShape(InferenceContext* c, ShapeHandle input, int k_input) {
  ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(input, 1, &x));
  ShapeHandle unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(k_input), 0, &unused));
  DimensionHandle k;
  TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(k_input, &k));
  ShapeHandle out;
  TF_RETURN_IF_ERROR(c->ReplaceDim(x, -1, k, &out));
  c->set_output(0, out);
  c->set_output(1, out);
  return OkStatus();
}

}  // namespace

// TopKV2's contract (same inputs, attrs, outputs, errors and results, ties
// to the lower index, NaN as TopKV2 orders it), faster for long rows and small k.
REGISTER_OP("Recopt>TopK")
    .Input("input: T")
    .Input("k: int32")
    .Output("values: T")
    .Output("indices: int32")
    .Attr("sorted: bool = true")
    .Attr("T: {float, double, int32, int64}")
    .SetShapeFn([](InferenceContext* c) { return TopKShape(c, c->input(0), 1); });

// Top-k over scores[b, j] = dot(queries[b], candidates[j]) * row_scales[j]
// * scale + bias[j] (row_scales and bias may be empty: [0]), without
// materialising the [batch, n] scores. Equal to TopKV2 over MatMul's scores
// up to the fp32 rounding of the dot products. int8 candidates need
// row_scales (symmetric per-row quantisation); bfloat16 ones are widened.
// layout "rows": candidates [n, d]. layout "blocks16": candidates
// [ceil(n / 16), d, 16], candidate j's element e at [j / 16, e, j % 16], the
// last block zero-padded, and n in num_candidates (tf_recopt.ops.retrieval
// to_blocks); CPU only.
REGISTER_OP("Recopt>ScoreTopK")
    .Input("queries: float")
    .Input("candidates: Tcand")
    .Input("row_scales: float")
    .Input("bias: float")
    .Input("k: int32")
    .Output("values: float")
    .Output("indices: int32")
    .Attr("Tcand: {float, bfloat16, int8}")
    .Attr("scale: float = 1.0")
    .Attr("sorted: bool = true")
    .Attr("layout: {'rows', 'blocks16'} = 'rows'")
    .Attr("num_candidates: int = -1")
    .SetShapeFn([](InferenceContext* c) {
      std::string layout;
      TF_RETURN_IF_ERROR(c->GetAttr("layout", &layout));
      const bool blocks = layout == "blocks16";
      ShapeHandle q, cand;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &q));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), blocks ? 3 : 2, &cand));
      DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(q, 1), c->Dim(cand, 1), &unused));
      DimensionHandle n = c->Dim(cand, 0);
      if (blocks) {
        TF_RETURN_IF_ERROR(c->WithValue(c->Dim(cand, 2), 16, &unused));
        int64_t count = -1;
        TF_RETURN_IF_ERROR(c->GetAttr("num_candidates", &count));
        if (count < 0) return errors::InvalidArgument("layout 'blocks16' needs num_candidates >= 0");
        n = c->MakeDim(count);
      }
      ShapeHandle rows;
      TF_RETURN_IF_ERROR(c->Subshape(q, 0, 1, &rows));
      ShapeHandle scores;
      TF_RETURN_IF_ERROR(c->Concatenate(rows, c->Vector(n), &scores));
      return TopKShape(c, scores, 4);
    });

// Recopt>ScoreTopK over int8 or bfloat16 "blocks16" candidates, made exact:
// every candidate whose score the quantization bound cannot rule out of the
// top k is rescored from exact_rows (the fp32 candidates [n, d]), so values
// and indices equal Recopt>ScoreTopK's over fp32 "rows" (core/score_exact.h).
// row_bounds [n]: int8 the row scales, bfloat16 max(largest |value| of the
// row, 2^-100). centre [d] or [0]: the candidates input holds the
// quantized residuals c - centre (exact_rows stays c), which keeps the bound
// tight where all candidates share a large common part.
// survivors [batch]: candidates rescored per query, or -1
// where the query took the fp32 scan (NaN or inf, or more than
// max_survivors near-ties; 0: max(4096, 16 k)).
REGISTER_OP("Recopt>ExactScoreTopK")
    .Input("queries: float")
    .Input("candidates: Tcand")
    .Input("row_scales: float")
    .Input("bias: float")
    .Input("k: int32")
    .Input("exact_rows: float")
    .Input("row_bounds: float")
    .Input("centre: float")
    .Output("values: float")
    .Output("indices: int32")
    .Output("survivors: int32")
    .Attr("Tcand: {bfloat16, int8}")
    .Attr("scale: float = 1.0")
    .Attr("sorted: bool = true")
    .Attr("num_candidates: int")
    .Attr("max_survivors: int = 0")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle q, cand, rows;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &q));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &cand));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 2, &rows));
      DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(q, 1), c->Dim(cand, 1), &unused));
      TF_RETURN_IF_ERROR(c->Merge(c->Dim(q, 1), c->Dim(rows, 1), &unused));
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(cand, 2), 16, &unused));
      int64_t count = -1;
      TF_RETURN_IF_ERROR(c->GetAttr("num_candidates", &count));
      if (count < 0) return errors::InvalidArgument("num_candidates must be >= 0, got ", count);
      ShapeHandle batch;
      TF_RETURN_IF_ERROR(c->Subshape(q, 0, 1, &batch));
      ShapeHandle scores;
      TF_RETURN_IF_ERROR(c->Concatenate(batch, c->Vector(count), &scores));
      TF_RETURN_IF_ERROR(TopKShape(c, scores, 4));
      c->set_output(2, batch);
      return OkStatus();
    });

}  // namespace tensorflow
