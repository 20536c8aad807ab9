"""Multi-head attention -> Recopt>MultiHeadAttention (core/mha.h): the
projections, the [B, N, T, S] scores, the softmax and the context are one
op that keeps them in cache. mha_match reads the subgraph; this pass emits
the op in place of the output projection's last node, so its consumers and
name are unchanged. What the rewrite orphans is left for prune_dead_nodes.

Runs before fuse_dense, which would otherwise take the projections for
FusedMLPs and hide their kernels."""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes import mha_match
from grappler_passes.pass_base import GraphPass, NoMatch, SkipMatch

FUSED_OP = spec.MULTI_HEAD_ATTENTION


class FuseMultiHeadAttention(GraphPass):
    name = "fuse_mha"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only so far
    description = "multi-head attention (Q/K/V projections, scaled scores, mask, softmax, output projection) " \
                  "-> Recopt>MultiHeadAttention"

    def run(self, ctx, result):
        view = ctx.view
        anchors = [n for n in view.nodes() if n.op == "Softmax"]
        if not anchors:
            return  # spares the shape inference of the whole graph
        info = view.tensor_info()
        bf16 = ctx.precision("dense") == "bf16"
        for node in anchors:
            try:
                found = mha_match.Matcher(view, info, node).match()
            except NoMatch:
                continue
            except SkipMatch as why:
                result.skip(node.name, str(why))
                continue
            _emit(view, found, bf16)
            result.apply()


def _emit(view, att, bf16):
    final = att.final
    base = final.name + "/recopt_mha"
    inputs = [att.query.source, att.key.source, att.value.source]
    for i, (kernel, bias) in enumerate([(att.query.kernel, att.query.bias), (att.key.kernel, att.key.bias),
                                        (att.value.kernel, att.value.bias), (att.output_kernel, att.output_bias)]):
        inputs.append(view.add_const(f"{base}/kernel{i}", kernel.astype(np.float32)).name)
        inputs.append(view.add_const(f"{base}/bias{i}", bias.astype(np.float32)).name)
    tensor_mask = att.mask is not None and not att.mask.causal
    if tensor_mask:
        inputs.append(_mask_input(view, att.mask, base, final.device))
    attrs = {
        "num_heads": att.query.heads,
        "key_dim": att.query.width,
        "value_dim": att.value.width,
        "scale": att.scale,
        "mask_mode": (att.mask.mode if att.mask else "select").encode(),
        "mask_value": att.mask.value if att.mask else 0.0,
        "zero_masked": att.zero_masked,
        "num_masks": 1 if tensor_mask else 0,
        "weights_bf16": bf16,
        "causal": att.mask is not None and att.mask.causal,
    }
    view.rewrite(final, FUSED_OP, inputs, attrs)


def _mask_input(view, mask, base, device):
    """The op's [B or 1, T or 1, S] (or per-head [B or 1, N, T or 1, S])
    keep-mask from the graph's tensor (or from its value, for a mask made
    from the scores' shape)."""
    if mask.constant is not None:
        keep = mask.constant.reshape(mask.constant.shape[-3:] if not mask.squeeze else
                                     (1,) + mask.constant.shape[-2:])
        return view.add_const(f"{base}/mask", ~keep if mask.negate else keep).name
    tensor = mask.tensor
    if mask.squeeze:
        axis = [1]
        tensor = view.add_node("Squeeze", f"{base}/mask", [tensor], {
            "T": types_pb2.DT_BOOL, "squeeze_dims": axis}, device=device).name
    if mask.negate:
        tensor = view.add_node("LogicalNot", f"{base}/keep", [tensor], device=device).name
    return tensor
