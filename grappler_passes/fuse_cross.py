r"""DCN's cross network (DeepCTR's CrossNet, parameterization="vector")
-> Recopt>CrossNetwork:

   x0 [B, dim]
   ExpandDims(x0, 2) = e [B, dim, 1]                        x_0 = e
   per layer l:
     tensordot(x_l, w_l, axes=(1, 0))  [B, 1, 1]            Transpose([0, 2, 1]) -> Reshape ->
                                                            Recopt>FusedMLP (one linear [dim, 1]
                                                            layer: fuse_dense ran first) -> Reshape
     BatchMatMulV2(e, that)  [B, dim, 1]
     AddV2(., b_l (a Const [dim, 1]))
     AddV2(., x_l) = x_{l+1}                               either operand order at each add
   Squeeze(x_L, [2])        rewritten in place: CrossNetwork(x0, w [L, dim], c [L], b [L, dim]) [B, dim]

Matched from the Squeeze back to the ExpandDims, one layer at a time.
"""
import numpy as np

import custom_ops.spec as spec
from grappler_passes import shapes
from grappler_passes.pass_base import GraphPass, SkipMatch, apply_plans

_ADD = ("Add", "AddV2")


class FuseCross(GraphPass):
    name = "fuse_cross"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only
    description = "DCN cross layers x0 * (x . w) + b + x on [B, dim, 1] -> Recopt>CrossNetwork"

    def run(self, ctx, result):
        view = ctx.view
        found = [(n, n) for n in view.nodes() if n.op == "Squeeze" and _producer_op(view, n.input[0]) in _ADD
                 and list(n.attr["squeeze_dims"].list.i) in ([2], [-1])]
        apply_plans(view, result, found, _CrossPlan)


def _producer_op(view, tensor):
    node = view.node(view.skip_identity(tensor))
    return None if node is None else node.op


class _CrossPlan:
    def __init__(self, view, info, squeeze):
        self.view, self.squeeze, self.inside = view, squeeze, {squeeze.name}
        self.e = self.dim = None  # x0's ExpandDims and the width, from the first layer read
        x = view.source(squeeze.input[0])
        layers = []
        while True:
            node = view.node(view.skip_identity(x))
            if node is not None and node.op == "ExpandDims":
                break
            x, layer = self._layer(x)
            layers.append(layer)
            if len(layers) > 64:
                raise SkipMatch("more than 64 cross layers: not a cross network")
        if not layers:
            raise SkipMatch(f"'{squeeze.name}' squeezes no cross layer")
        expand = view.node(view.skip_identity(x))
        if view.source(expand.name) != self.e or view.const_int(expand.input[1]) not in (2, -1):
            raise SkipMatch("the layers' x0 is not the ExpandDims their chain starts from")
        self.x0 = view.source(expand.input[0])
        shape = shapes.shape_of(info, self.x0)
        if shape is None or len(shape) != 2 or shape[1] != self.dim:
            raise SkipMatch(f"'{self.x0}' is not [B, {self.dim}]")
        layers.reverse()
        self.kernels = np.stack([l[0] for l in layers]).astype(np.float32)
        self.kernel_bias = np.array([l[1] for l in layers], np.float32)
        self.biases = np.stack([l[2] for l in layers]).astype(np.float32)
        for name in self.inside - {squeeze.name}:
            # The tensordot sandwich reads x_l's Shape too; that dies with it.
            shapes_of = {c.name for c, _ in view.consumers(name) if c.op == "Shape"}
            if not view.removable(name, self.inside | shapes_of):
                raise SkipMatch(f"'{name}' is also used outside the cross network")

    def _node(self, tensor, ops, what):
        node = self.view.node(self.view.skip_identity(tensor))
        if node is None or node.op not in ops:
            raise SkipMatch(f"'{tensor}' is not {what}")
        self.inside.add(node.name)
        return node

    def _layer(self, tensor):
        """(x_l, (w, c, b)) for x_{l+1} = AddV2(AddV2(BMM(e, tensordot(x_l, w)), b), x_l)."""
        view = self.view
        outer = self._node(tensor, _ADD, "a cross layer's residual add")
        for k in (0, 1):
            inner = view.node(view.skip_identity(outer.input[k]))
            if inner is not None and inner.op in _ADD and any(
                    _producer_op(view, t) in ("BatchMatMulV2", "BatchMatMul") for t in inner.input[:2]):
                x_prev = view.source(outer.input[1 - k])
                break
        else:
            raise SkipMatch(f"'{outer.name}' does not add a cross term to the previous layer")
        self.inside.add(inner.name)
        bmm_at = 0 if _producer_op(view, inner.input[0]) in ("BatchMatMulV2", "BatchMatMul") else 1
        bias = view.const_value(inner.input[1 - bmm_at])
        bmm = self._node(inner.input[bmm_at], ("BatchMatMulV2", "BatchMatMul"), "x0 times the layer's scalar")
        if bmm.attr["adj_x"].b or bmm.attr["adj_y"].b:
            raise SkipMatch(f"'{bmm.name}' is not x0 [B, dim, 1] @ s [B, 1, 1]")
        e = view.source(bmm.input[0])
        if self.e is not None and self.e != e:
            raise SkipMatch(f"'{bmm.name}' multiplies a different x0")
        self.e = e
        w, c = self._tensordot(bmm.input[1], x_prev)
        self.dim = w.size if self.dim is None else self.dim
        if bias is None or bias.size != self.dim or w.size != self.dim:
            raise SkipMatch(f"'{inner.name}' does not add a constant [{self.dim}, 1] bias")
        return x_prev, (w.reshape(-1), c, bias.reshape(-1))

    def _tensordot(self, tensor, x_prev):
        """(w, c) of tensordot(x_prev, w, axes=(1, 0)) [+ c] as fuse_dense leaves it."""
        view = self.view
        out = self._node(tensor, ("Reshape",), "the tensordot's output reshape")
        mlp = self._node(out.input[0], (spec.FUSED_MLP,), "the tensordot's matmul")
        if mlp.attr["num_layers"].i != 1 or [a.decode() for a in mlp.attr["activations"].list.s] != ["linear"] or \
                mlp.attr["weights_bf16"].b or list(mlp.attr["int8_layers"].list.i):
            raise SkipMatch(f"'{mlp.name}' is not one fp32 linear layer")
        flat = self._node(mlp.input[0], ("Reshape",), "the tensordot's input reshape")
        transpose = self._node(flat.input[0], ("Transpose",), "the tensordot's transpose")
        perm = view.const_value(transpose.input[1])
        if perm is None or list(np.asarray(perm).reshape(-1)) != [0, 2, 1] or view.source(transpose.input[0]) != x_prev:
            raise SkipMatch(f"'{transpose.name}' does not contract the previous layer's axis 1")
        w, c = (view.const_value(t) for t in view.data_inputs(mlp)[1:3])
        if w is None or c is None or w.ndim != 2 or w.shape[1] != 1:
            raise SkipMatch(f"'{mlp.name}' is not a constant [dim, 1] kernel")
        return w, float(np.asarray(c).reshape(-1)[0])

    def emit(self, view):
        name = self.squeeze.name
        inputs = [self.x0] + [view.add_const(f"{name}/recopt_{k}", v).name for k, v in
                              (("kernels", self.kernels), ("kernel_bias", self.kernel_bias), ("biases", self.biases))]
        view.rewrite(self.squeeze, spec.CROSS_NETWORK, inputs, {})
