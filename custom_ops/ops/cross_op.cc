// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

Status CrossNetworkShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x0, kernels;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &x0));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &kernels));
  shape_inference::DimensionHandle dim;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x0, 1), c->Dim(kernels, 1), &dim));
  c->set_output(0, c->Matrix(c->Dim(x0, 0), dim));
  return OkStatus();
}

}  // namespace

// DCN's cross network, vector parameterisation, over x0 [B, dim]:
//   x_0 = x0;  x_{l+1} = x0 * (x_l . kernels[l] + kernel_bias[l]) + biases[l] + x_l
// kernels and biases [L, dim], kernel_bias [L]; output x_L [B, dim].
REGISTER_OP("Recopt>CrossNetwork")
    .Input("x0: float")
    .Input("kernels: float")
    .Input("kernel_bias: float")
    .Input("biases: float")
    .Output("y: float")
    .SetShapeFn(CrossNetworkShape);

}  // namespace tensorflow
