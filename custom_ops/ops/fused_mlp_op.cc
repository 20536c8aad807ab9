// Op registration and shape function only; the kernel is in kernels/.
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

Status FusedMlpShape(shape_inference::InferenceContext* c) {
  int num_layers;
  TF_RETURN_IF_ERROR(c->GetAttr("num_layers", &num_layers));
  shape_inference::ShapeHandle x;
  TF_RETURN_IF_ERROR(c->WithRankAtLeast(c->input(0), 2, &x));
  shape_inference::DimensionHandle prev = c->Dim(x, -1);
  for (int l = 0; l < num_layers; ++l) {
    shape_inference::ShapeHandle w, b;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(1 + l), 2, &w));
    TF_RETURN_IF_ERROR(c->WithRank(c->input(1 + num_layers + l), 1, &b));
    shape_inference::DimensionHandle unused;
    TF_RETURN_IF_ERROR(c->Merge(prev, c->Dim(w, 0), &unused));
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(w, 1), c->Dim(b, 0), &prev));
  }
  shape_inference::ShapeHandle out;
  TF_RETURN_IF_ERROR(c->ReplaceDim(x, -1, prev, &out));
  c->set_output(0, out);
  return OkStatus();
}

}  // namespace

// y = act_L(... act_1(x @ W_1 + b_1) ... @ W_L + b_L) over the last axis of x.
// Weights are packed once per kernel instance, so they must be constants;
// weights_bf16 rounds them to bfloat16. gemm picks the backend: "onednn"
// (oneDNN matmuls; with weights_bf16, every layer's input is rounded to
// bfloat16 too and the products run on AVX512_BF16 / AMX, fp32 accumulation),
// "packed" (the hand kernels of core/gemm_isa.inc; bf16 weights, fp32 inputs),
// or "auto": oneDNN where it is loaded and has a fast kernel, else packed.
// int8_layers (oneDNN, not with weights_bf16): those layers multiply in
// integers, weights rounded to int8 per output column and each input row
// to int8 (uint8 after relu, relu6, sigmoid or softplus) with a scale of
// its own, products summed in int32 (VNNI / AMX-INT8), scale, bias and
// activation in fp32: core/onednn_mlp.h. They run in fp32 where oneDNN or
// its int8 kernels are absent, with gemm="packed", and for a call whose
// input holds a NaN or Inf.
REGISTER_OP("Recopt>FusedMLP")
    .Input("x: float")
    .Input("weights: num_layers * float")
    .Input("biases: num_layers * float")
    .Output("y: float")
    .Attr("num_layers: int >= 1")
    .Attr("activations: list(string)")
    .Attr("alphas: list(float)")
    .Attr("weights_bf16: bool = false")
    .Attr("gemm: string = 'auto'")
    .Attr("int8_layers: list(int) = []")
    .SetShapeFn(FusedMlpShape);

}  // namespace tensorflow
