// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

#include <string>

namespace tensorflow {
namespace {

Status DinAttentionShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle query, keys, mask;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &query));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &keys));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &mask));
  shape_inference::DimensionHandle batch, steps, dim;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(query, 0), c->Dim(keys, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(mask, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(keys, 1), c->Dim(mask, 1), &steps));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(query, 1), c->Dim(keys, 2), &dim));
  std::string output;
  TF_RETURN_IF_ERROR(c->GetAttr("output", &output));
  c->set_output(0, output == "weights" ? c->Matrix(batch, steps) : c->Matrix(batch, dim));
  return OkStatus();
}

}  // namespace

// DIN attention pooling (core/din_attention.h): for each example,
//   s_t = mlp([parts of q and keys[t]]), s_t = mask[t] ? s_t : pad_value,
//   w = softmax(s) if softmax else s,  pooled = sum_t w_t * keys[t].
// parts name the first layer's d-wide input blocks in order: q, k, q-k,
// k-q, q*k. The MLP's last layer outputs one score. Weights must be constants.
// output "weights" returns w [B, T] instead of pooling (DIEN feeds its
// attention scores to the AUGRU rather than summing the keys).
REGISTER_OP("Recopt>DinAttention")
    .Input("query: float")
    .Input("keys: float")
    .Input("mask: bool")
    .Input("weights: num_layers * float")
    .Input("biases: num_layers * float")
    .Output("pooled: float")
    .Attr("num_layers: int >= 1")
    .Attr("activations: list(string)")
    .Attr("alphas: list(float)")
    .Attr("weights_bf16: bool = false")
    .Attr("parts: list(string)")
    .Attr("softmax: bool = false")
    .Attr("pad_value: float = 0")
    .Attr("output: {'pooled', 'weights'} = 'pooled'")
    .SetShapeFn(DinAttentionShape);

}  // namespace tensorflow
