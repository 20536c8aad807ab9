// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

Status AfmPoolingShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x, w;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &w));
  shape_inference::DimensionHandle dim;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 2), c->Dim(w, 0), &dim));
  c->set_output(0, c->Matrix(c->Dim(x, 0), dim));
  return OkStatus();
}

}  // namespace

// AFM's attention pooling over field pairs t = (rows[t], cols[t]) of x [B, F, d]:
//   e_t = x[:, rows[t]] * x[:, cols[t]]                           [B, d]
//   s_t = act(e_t @ attention_w + attention_b) @ projection_h      [B, 1]
//   y = sum_t softmax_t(s)_t * e_t                                 [B, d]
// DeepCTR's AFMLayer up to its attention output (before projection_p);
// projection_h is [units, 1] or [units]. A bias after projection_h is
// not an input: the softmax over pairs cancels it.
REGISTER_OP("Recopt>AfmPooling")
    .Input("x: float")
    .Input("attention_w: float")
    .Input("attention_b: float")
    .Input("projection_h: float")
    .Output("y: float")
    .Attr("rows: list(int)")
    .Attr("cols: list(int)")
    .Attr("activation: string = 'relu'")
    .Attr("alpha: float = 0.0")
    .SetShapeFn(AfmPoolingShape);

}  // namespace tensorflow
