// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

Status GruShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle x, h0, kernel, recurrent;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &x));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &h0));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &kernel));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 2, &recurrent));
  bool time_major = false;
  TF_RETURN_IF_ERROR(c->GetAttr("time_major", &time_major));
  shape_inference::DimensionHandle batch, steps, units, unused;
  batch = c->Dim(x, time_major ? 1 : 0);
  steps = c->Dim(x, time_major ? 0 : 1);
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(h0, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(x, 2), c->Dim(kernel, 0), &unused));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(h0, 1), c->Dim(recurrent, 0), &units));
  c->set_output(0, time_major ? c->MakeShape({steps, batch, units}) : c->MakeShape({batch, steps, units}));
  c->set_output(1, c->Matrix(batch, units));
  return OkStatus();
}

}  // namespace

// A Keras GRU layer (core/gru.h), gates ordered z, r, h as Keras packs them:
//   z = sigmoid(x Wz + bz + h Rz + rbz),  r = sigmoid(x Wr + br + h Rr + rbr),
//   reset_after: c = tanh(x Wh + bh + r * (h Rh + rbh))
//   otherwise:   c = tanh(x Wh + bh + rbh + (r * h) Rh)
//   h' = z * h + (1 - z) * c.
// Outputs every step's state (in x's layout) and the last state (h0 when
// T = 0). With a mask ([B, T] bool in x's layout; num_masks = 1) a masked
// step keeps the state and outputs the last unmasked step's state (zeros
// before the first), as Keras' masked RNN loop does. With attention (DIEN's
// AUGRU; [B, T] scores in x's layout, num_attention = 1) each step's z is
// first replaced by 1 - a * (1 - z) (attention_mode "update", the paper's
// AUGRU) or (1 - a) * z ("keep", DIEN's released code and DeepCTR).
// Weights must be constants: they are packed on first use.
REGISTER_OP("Recopt>GRU")
    .Input("x: float")
    .Input("initial_state: float")
    .Input("kernel: float")
    .Input("recurrent_kernel: float")
    .Input("input_bias: float")
    .Input("recurrent_bias: float")
    .Input("mask: num_masks * bool")
    .Input("attention: num_attention * float")
    .Output("sequence: float")
    .Output("final_state: float")
    .Attr("reset_after: bool = true")
    .Attr("time_major: bool = false")
    .Attr("weights_bf16: bool = false")
    .Attr("num_masks: int >= 0 = 0")
    .Attr("num_attention: int >= 0 = 0")
    .Attr("attention_mode: {'update', 'keep'} = 'update'")
    .SetShapeFn(GruShape);

}  // namespace tensorflow
