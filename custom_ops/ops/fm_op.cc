// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

Status FactorizationMachineShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
  bool reduce;
  TF_RETURN_IF_ERROR(c->GetAttr("reduce", &reduce));
  if (reduce) {
    c->set_output(0, c->Matrix(c->Dim(x, 0), 1));
  } else {
    c->set_output(0, c->MakeShape({c->Dim(x, 0), c->MakeDim(int64_t{1}), c->Dim(x, 2)}));
  }
  return OkStatus();
}

}  // namespace

// The factorization-machine second-order term of x [B, F, k] (fields' embeddings):
//   t = scale * (square(reduce_sum(x, 1, keepdims=True)) - reduce_sum(x * x, 1, keepdims=True))   [B, 1, k]
// reduce = true: reduce_sum(t, 2) -> [B, 1] (DeepCTR's FM layer, scale 0.5);
// reduce = false: t itself (NFM's BiInteractionPooling).
REGISTER_OP("Recopt>FactorizationMachine")
    .Input("x: float")
    .Output("y: float")
    .Attr("reduce: bool = true")
    .Attr("scale: float = 0.5")
    .SetShapeFn(FactorizationMachineShape);

}  // namespace tensorflow
