// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

Status CinProductsShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x0, hidden;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x0));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &hidden));
  shape_inference::DimensionHandle batch, d, rows, width;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x0, 0), c->Dim(hidden, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x0, 2), c->Dim(hidden, 2), &d));
  TF_RETURN_IF_ERROR(c->Multiply(batch, d, &rows));
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(x0, 1), c->Dim(hidden, 1), &width));
  c->set_output(0, c->Matrix(rows, width));
  return OkStatus();
}

}  // namespace

// xDeepFM CIN's outer products as GEMM rows, x0 [B, F0, D], hidden [B, H, D]:
//   z[b * D + e, i * H + j] = x0[b, i, e] * hidden[b, j, e]      z: [B * D, F0 * H]
REGISTER_OP("Recopt>CinProducts")
    .Input("x0: float")
    .Input("hidden: float")
    .Output("z: float")
    .SetShapeFn(CinProductsShape);

}  // namespace tensorflow
