r"""DIN attention pooling -> Recopt>DinAttention (the [B, T, parts*d]
concatenation, the per-position scores and the weighted keys are never
written). Runs after fuse_dense, so the activation unit is already one
Recopt>FusedMLP whose last layer outputs one score:

   q [B, d] -> ExpandDims/Tile/BroadcastTo/Reshape -> q_rep [B, T, d]   keys [B, T, d]
                 ConcatV2([q_rep | keys | Sub(q_rep, keys) | Sub(keys, q_rep) | Mul(q_rep, keys)], -1)
                                       |
                           Recopt>FusedMLP -> s [B, T, 1]
                                       |
   column:  SelectV2(ExpandDims(mask, -1), s, pad)                           raw weights
   flat:    ExpandDims([Softmax](SelectV2(mask, Squeeze(s, -1), pad)), -1)   [B, T] scores
                                       |
                      Sum(Mul(w, keys), axis=1)  -> pooled [B, d]      rewritten in place

   row:     BatchMatMulV2([Softmax](SelectV2(ExpandDims(mask, 1), Transpose(s, [0, 2, 1]), pad)), keys)
            -> [B, 1, d] (DeepCTR's form)   rewritten in place as ExpandDims(Recopt>DinAttention, 1)

   weights: [Softmax](SelectV2(mask, s[..., 0] or Squeeze(s, -1), pad)) [B, T] used as such (DIEN
            feeds them to its AUGRU)   rewritten in place as Recopt>DinAttention(output="weights"); the
            keys are the sequence the activation unit combines with the repeated query

pad: ZerosLike(s), a constant of equal values, Fill(_, c), BroadcastTo(c, _) or OnesLike(s) * c.
Without the SelectV2 (fixed-length sequences, no mask) every position counts:
the op gets an all-true mask, Fill(Shape(keys)[:2], True).
What the rewrite orphans is pruned by the pipeline. The match is
din_match.py (scores: din_scores.py); this file emits.
"""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes.din_match import DinPooling, DinWeights
from grappler_passes.graph_view import add_strided_slice
from grappler_passes.pass_base import GraphPass, NoMatch, SkipMatch

FUSED_OP = spec.DIN_ATTENTION
# The FusedMLP attrs the fused op takes over: its activation unit.
_MLP_ATTRS = ("num_layers", "activations", "alphas", "weights_bf16")


class FuseAttention(GraphPass):
    name = "fuse_attention"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only so far
    description = "DIN attention (FusedMLP over [q, k, q-k, q*k], mask, [softmax], weighted sum) -> Recopt>DinAttention"

    def run(self, ctx, result):
        view = ctx.view
        if not any(n.op == spec.FUSED_MLP for n in view.nodes()):
            return  # spares the shape inference of the whole graph
        info = view.tensor_info()
        poolings = [n for n in view.nodes() if n.op in ("Sum", "BatchMatMulV2", "BatchMatMul")]
        _fuse_each(DinPooling, view, info, poolings, result)
        # Scores left over once every pooling is fused are used as weights;
        # softmaxes orphaned by a pooling rewrite are not live any more.
        softmaxes = [n for n in view.nodes() if n.op == "Softmax"]
        live = view.live_nodes() if softmaxes else set()
        _fuse_each(DinWeights, view, info, [n for n in softmaxes if n.name in live], result)


def _fuse_each(kind, view, info, anchors, result):
    for node in anchors:
        try:
            match = kind(view, info, node)
        except NoMatch:
            continue
        except SkipMatch as why:
            result.skip(node.name, str(why))
            continue
        _emit(view, match)
        result.apply()


def _emit(view, m):
    a = m.anchor
    mask = m.mask if m.mask is not None else _all_positions(view, m)
    layers = m.mlp.attr["num_layers"].i
    inputs = [m.query, m.keys, mask] + view.data_inputs(m.mlp)[1:1 + 2 * layers]
    attrs = {k: m.mlp.attr[k] for k in _MLP_ATTRS}
    attrs.update(parts=m.parts, softmax=m.softmax, pad_value=m.pad, output=m.output)
    if m.output == "weights" or a.op == "Sum":
        view.rewrite(a, FUSED_OP, inputs, attrs)
    else:  # [B, 1, d]: the fused op's [B, d] with the axis put back
        fused = view.add_node(FUSED_OP, a.name + "/recopt_attention", inputs, attrs, device=a.device)
        axis = view.add_const(a.name + "/recopt_axis", np.int32(1))
        view.rewrite(a, "ExpandDims", [fused.name, axis.name], {"T": types_pb2.DT_FLOAT, "Tdim": types_pb2.DT_INT32})


def _all_positions(view, m):
    """An all-true [B, T] mask for unmasked attention: Fill(Shape(keys)[:2], True)."""
    base = m.anchor.name + "/recopt_all_positions"
    shape = view.add_node("Shape", base + "/shape", [m.keys], {"T": types_pb2.DT_FLOAT, "out_type": types_pb2.DT_INT32})
    dims = add_strided_slice(view, base + "/dims", shape.name, types_pb2.DT_INT32, [0], [2])
    true = view.add_const(base + "/true", np.array(True))
    return view.add_node("Fill", base, [dims.name, true.name], {"T": types_pb2.DT_BOOL, "index_type": types_pb2.DT_INT32}).name
