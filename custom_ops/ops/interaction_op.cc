// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

Status DotInteractionShape(shape_inference::InferenceContext* c) {
  int64_t num_features;
  std::vector<int64_t> indices;
  TF_RETURN_IF_ERROR(c->GetAttr("num_features", &num_features));
  TF_RETURN_IF_ERROR(c->GetAttr("indices", &indices));
  shape_inference::ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
  shape_inference::DimensionHandle unused;
  TF_RETURN_IF_ERROR(c->WithValue(c->Dim(x, 1), num_features, &unused));
  int64_t num_dense;
  TF_RETURN_IF_ERROR(c->GetAttr("num_dense", &num_dense));
  shape_inference::DimensionHandle batch = c->Dim(x, 0), width = c->MakeDim(static_cast<int64_t>(indices.size()));
  if (num_dense == 1) {
    shape_inference::ShapeHandle dense;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &dense));
    TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(dense, 0), &batch));
    TF_RETURN_IF_ERROR(c->Add(width, c->Dim(dense, 1), &width));
  }
  c->set_output(0, c->Matrix(batch, width));
  return OkStatus();
}

}  // namespace

// y[b, t] = dot(x[b, i_t], x[b, j_t]) with indices[t] = i_t * num_features + j_t:
// the columns of reshape(x @ x^T, [B, F*F]) that a gather with constant
// indices keeps (DLRM's lower triangle, with or without the diagonal). An
// index of -1 is a column of zeros: tensorflow-recommenders' skip_gather
// output, all F*F entries with the upper triangle set to 0.
// With a dense input (num_dense = 1, [B, k]) the output is DLRM's
// concat([dense, y], 1) (dense_first) or concat([y, dense], 1), written in place.
REGISTER_OP("Recopt>DotInteraction")
    .Input("x: float")
    .Input("dense: num_dense * float")
    .Output("y: float")
    .Attr("num_features: int >= 1")
    .Attr("indices: list(int)")
    .Attr("num_dense: int >= 0 = 0")
    .Attr("dense_first: bool = true")
    .SetShapeFn(DotInteractionShape);

}  // namespace tensorflow
