// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

Status BilinearShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x, w, b;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &w));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &b));
  shape_inference::DimensionHandle dim;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 2), c->Dim(w, 1), &dim));
  TF_RETURN_IF_ERROR(c->Merge(dim, c->Dim(w, 2), &dim));
  TF_RETURN_IF_ERROR(c->Merge(dim, c->Dim(b, 1), &dim));
  std::vector<int64_t> rows;
  TF_RETURN_IF_ERROR(c->GetAttr("rows", &rows));
  c->set_output(0, c->MakeShape({c->Dim(x, 0), c->MakeDim(static_cast<int64_t>(rows.size())), dim}));
  return OkStatus();
}

}  // namespace

// FiBiNET's bilinear interaction over field pairs t of x [B, F, d]:
//   y[:, t] = (x[:, rows[t]] @ weights[g] + biases[g]) * x[:, cols[t]],  g = weight_index[t]
// weights [G, d, d], biases [G, d]: DeepCTR's bilinear_type "interaction"
// (one W per pair), "each" (one per field) or "all" (one shared W).
// Output [B, P, d], the concat of the per-pair products along axis 1.
REGISTER_OP("Recopt>BilinearInteraction")
    .Input("x: float")
    .Input("weights: float")
    .Input("biases: float")
    .Output("y: float")
    .Attr("rows: list(int)")
    .Attr("cols: list(int)")
    .Attr("weight_index: list(int)")
    .SetShapeFn(BilinearShape);

}  // namespace tensorflow
