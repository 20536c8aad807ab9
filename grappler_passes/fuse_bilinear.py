r"""FiBiNET's bilinear interaction (DeepCTR's BilinearInteraction, any
bilinear_type) -> Recopt>BilinearInteraction, one op instead of three per
field pair:

   fields v_0 .. v_{F-1}, each [B, 1, d]
        |
   Recopt>FusedMLP(v_i; W, b)  one linear layer [d, d]     (fuse_dense ran first:
        |                  v_j                              tensordot(v_i, W, axes=(-1, 0)))
        Mul   p_ij [B, 1, d]   ... one per pair, in any order, either operand first
          \   |   /
         ConcatV2(axis=1)  [B, P, d]    rewritten in place:
                                        BilinearInteraction(stack(v), W [G, d, d], b [G, d])

Each distinct FusedMLP is one weight group: one per pair ("interaction"),
per field ("each") or per field with the same W ("all"), so a layer the
model shares across pairs stays shared. The fields are stacked by
field_pairs.stack_fields (the Split input itself for FiBiNET's SENET
output).
"""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes import field_pairs, shapes
from grappler_passes.graph_view import parse_input
from grappler_passes.pass_base import GraphPass, SkipMatch, apply_plans


class FuseBilinear(GraphPass):
    name = "fuse_bilinear"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only
    description = "per-pair tensordot(v_i, W) * v_j concatenated -> Recopt>BilinearInteraction"

    def run(self, ctx, result):
        view = ctx.view
        found = [(n, n) for n in view.nodes() if n.op == "ConcatV2" and _first_is_bilinear(view, n)]
        apply_plans(view, result, found, _BilinearPlan)


def _first_is_bilinear(view, concat):
    """Cheap prefilter: the first input is a Mul of a FusedMLP output."""
    inputs = view.data_inputs(concat)
    if len(inputs) < 2:
        return False
    mul = view.node(view.skip_identity(inputs[0]))
    if mul is None or mul.op != "Mul":
        return False
    return any(getattr(view.node(view.skip_identity(t)), "op", None) == spec.FUSED_MLP for t in mul.input[:2])


class _BilinearPlan:
    """What the rewrite needs, read from the concat; the graph is not touched."""

    def __init__(self, view, info, concat):
        self.concat = concat
        if view.const_int(concat.input[-1]) not in (1, -2):
            raise SkipMatch(f"'{concat.name}' does not concatenate along axis 1")
        if concat.attr["T"].type != types_pb2.DT_FLOAT:
            raise SkipMatch(f"'{concat.name}' is not float32")
        products = [view.node(view.skip_identity(t)) for t in view.data_inputs(concat)[:-1]]
        out_shape = shapes.shape_of(info, concat.name)
        if out_shape is None or len(out_shape) != 3 or out_shape[2] is None:
            raise SkipMatch(f"'{concat.name}' is not [B, P, d] with a static d")
        self.dim = out_shape[2]
        groups, left, right, weight_of = {}, [], [], []
        for mul in products:
            mlp, vi, vj = self._pair(view, info, mul)
            weight_of.append(groups.setdefault(mlp.name, len(groups)))
            left.append(vi)
            right.append(vj)
        self.mlps = [view.node(name) for name in groups]
        self._check_uses(view, products)
        self.weights, self.biases = self._weights(view)
        self.x, self.rows, self.cols = field_pairs.index_fields(left, right)
        self.weight_of = weight_of

    def _pair(self, view, info, mul):
        """(FusedMLP, v_i, v_j) for Mul(FusedMLP(v_i), v_j) in either order."""
        if mul is None or mul.op != "Mul" or mul.attr["T"].type != types_pb2.DT_FLOAT:
            raise SkipMatch(f"'{getattr(mul, 'name', '?')}' is not a pair product (Mul)")
        operands = [view.node(view.skip_identity(t)) for t in view.data_inputs(mul)]
        mlps = [i for i, n in enumerate(operands) if n is not None and n.op == spec.FUSED_MLP]
        if len(mlps) != 1:
            raise SkipMatch(f"'{mul.name}' does not multiply one bilinear projection by a field")
        mlp = operands[mlps[0]]
        other = view.data_inputs(mul)[1 - mlps[0]]
        if parse_input(view.skip_identity(view.data_inputs(mul)[mlps[0]]))[1] != 0:
            raise SkipMatch(f"'{mul.name}' reads an unexpected output of '{mlp.name}'")
        if mlp.attr["num_layers"].i != 1 or [a.decode() for a in mlp.attr["activations"].list.s] != ["linear"]:
            raise SkipMatch(f"'{mlp.name}' is not one linear layer")
        if mlp.attr["weights_bf16"].b or list(mlp.attr["int8_layers"].list.i):
            raise SkipMatch(f"'{mlp.name}' runs in reduced precision; BilinearInteraction is fp32")
        vi = field_pairs.field(view, info, view.data_inputs(mlp)[0], self.dim)
        vj = field_pairs.field(view, info, other, self.dim)
        return mlp, vi, vj

    def _check_uses(self, view, products):
        inside = {self.concat.name} | {m.name for m in products}
        for node in list(products) + self.mlps:
            if not view.removable(node.name, inside):
                raise SkipMatch(f"'{node.name}' is also used outside the bilinear interaction")

    def _weights(self, view):
        ws, bs = [], []
        for mlp in self.mlps:
            w, b = (view.const_value(t) for t in view.data_inputs(mlp)[1:3])
            if w is None or b is None:
                raise SkipMatch(f"'{mlp.name}' has non-constant weights")
            if w.shape != (self.dim, self.dim):
                raise SkipMatch(f"'{mlp.name}' is {list(w.shape)}, not [{self.dim}, {self.dim}]")
            ws.append(w.astype(np.float32))
            bs.append(b.reshape(self.dim).astype(np.float32))
        return np.stack(ws), np.stack(bs)

    def emit(self, view):
        name, device = self.concat.name, self.concat.device
        x = field_pairs.stack_fields(view, self.x, f"{name}/recopt_fields", device)
        w = view.add_const(f"{name}/recopt_weights", self.weights).name
        b = view.add_const(f"{name}/recopt_biases", self.biases).name
        view.rewrite(self.concat, spec.BILINEAR_INTERACTION, [x, w, b],
                     {"rows": self.rows, "cols": self.cols, "weight_index": self.weight_of})
