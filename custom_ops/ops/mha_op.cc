// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

Status MultiHeadAttentionShape(shape_inference::InferenceContext* c) {
  shape_inference::ShapeHandle query, key, value, out_kernel;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &query));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &key));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 3, &value));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(9), 2, &out_kernel));
  shape_inference::DimensionHandle batch, steps;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(query, 0), c->Dim(key, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(value, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(key, 1), c->Dim(value, 1), &steps));
  c->set_output(0, c->MakeShape({batch, c->Dim(query, 1), c->Dim(out_kernel, 1)}));
  return OkStatus();
}

}  // namespace

// Keras MultiHeadAttention at inference (core/mha.h): query [B, T, dq],
// key [B, S, dk], value [B, S, dv] -> [B, T, E].
//   Q = query @ query_kernel + query_bias   ([dq, N*H], heads side by side)
//   K, V likewise; per head: P = softmax(mask(scale * Q_n K_n^T)) over S
//   output = concat_n(P V_n) @ output_kernel + output_bias
// mask (num_masks = 1): [B, T, S] or [B, 1, S] bool, true = attend, or
// the same with a leading 1 for a mask every example shares, or any of
// those with a head axis after the first ([B or 1, N, T or 1, S]: one
// mask per head); causal also
// masks key step s > query step t (Keras' band_part(ones, -1, 0)); a
// masked score becomes mask_value ('select', Keras 3) or has it added
// ('add', tf_keras); zero_masked also zeroes the masked weights after the
// softmax (Keras 3's explicit-scores path), so a fully masked query row
// attends to nothing. Weights must be constants.
REGISTER_OP("Recopt>MultiHeadAttention")
    .Input("query: float")
    .Input("key: float")
    .Input("value: float")
    .Input("query_kernel: float")
    .Input("query_bias: float")
    .Input("key_kernel: float")
    .Input("key_bias: float")
    .Input("value_kernel: float")
    .Input("value_bias: float")
    .Input("output_kernel: float")
    .Input("output_bias: float")
    .Input("mask: num_masks * bool")
    .Output("output: float")
    .Attr("num_heads: int >= 1")
    .Attr("key_dim: int >= 1")
    .Attr("value_dim: int >= 1")
    .Attr("scale: float")
    .Attr("mask_mode: {'select', 'add'} = 'select'")
    .Attr("mask_value: float = 0")
    .Attr("zero_masked: bool = false")
    .Attr("num_masks: int >= 0 = 0")
    .Attr("weights_bf16: bool = false")
    .Attr("causal: bool = false")
    .SetShapeFn(MultiHeadAttentionShape);

}  // namespace tensorflow
