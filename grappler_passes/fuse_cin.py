r"""xDeepFM's Compressed Interaction Network (DeepCTR's CIN), one layer at a
time -> outer products in GEMM layout + one Recopt>FusedMLP layer:

   x0 [B, F0, D]          h [B, Hk, D]     (h = x0 in the first layer)
   SplitV(x0, D x 1, 2)   SplitV(h, D x 1, 2)
   Pack(axis 0)           Pack(axis 0)         [D, B, F0, 1], [D, B, Hk, 1]
          \               /
          BatchMatMulV2(adj_y)                 [D, B, F0, Hk]
          Reshape [D, -1, F0*Hk]
          Transpose [1, 0, 2]                  [B, D, F0*Hk]
          ExpandDims(1) -> Conv2D(W [1, 1, F0*Hk, H], VALID) -> Squeeze(-3)    (tf.nn.conv1d)
          BiasAdd(b)                           [B, D, H]
          activation                           optional; any spelling activation_match knows

becomes

   Recopt>CinProducts(x0, h) [B*D, F0*Hk] -> Recopt>FusedMLP(W, b, activation) -> Reshape [B, D, H]

rewritten in place of the activation (or BiasAdd) node. Row (b, d) of the
products is the conv's input row, so the answer is the same; what goes is
the [D, B, F0*Hk] transpose (the products written and read once more), the
2*D split outputs, the packs and the conv's reshaping, and the GEMM becomes
FusedMLP's, with its bf16/int8 forms under `precision`. The products are
their own op because TensorFlow's broadcast multiply, the stock-op way to
write them, costs more than the transpose it saves (bench.ctr_interactions
"cin" and bench.pass_ablation on DeepCTR's xDeepFM give the numbers).
The splits and packs stay for prune_dead_nodes (x0's are shared by every layer).
"""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from custom_ops.spec import mlp as mlp_spec
from grappler_passes import shapes
from grappler_passes.activation_match import find_activation
from grappler_passes.fuse_dense import int8_worthy
from grappler_passes.pass_base import GraphPass, SkipMatch, apply_plans
from grappler_passes.pattern import P, match, require, require_safe


def _perm(values):
    def check(node, view):
        perm = view.const_value(node.input[1])
        if perm is None or list(np.asarray(perm).reshape(-1)) != values:
            return f"'{node.name}' does not permute {values}"
        return None
    return check


def _conv1d(node, view):
    def ints(attr):  # `in` first: indexing a missing attr would add it, and matchers only read
        return list(node.attr[attr].list.i) if attr in node.attr else []
    if node.attr["data_format"].s != b"NHWC" or node.attr["padding"].s != b"VALID" or \
            any(s != 1 for s in ints("strides")) or any(d != 1 for d in ints("dilations")):
        return f"'{node.name}' is not a stride-1, VALID, NHWC conv1d"
    return None


def _product(node, view):
    if node.attr["adj_x"].b or not node.attr["adj_y"].b or node.attr["T"].type != types_pb2.DT_FLOAT:
        return f"'{node.name}' is not a float32 a @ b^T"
    return None


_EXPAND = P("ExpandDims", "expand", [P("Transpose", "transpose", [
    P("Reshape", "reshape", [P("BatchMatMulV2|BatchMatMul", "bmm",
                               [P("Pack", "x0_stack", keep=True), P("Pack", "h_stack", keep=True)], check=_product),
                             None]), None], check=_perm([1, 0, 2])), None],
    pred=lambda n, view: view.const_int(n.input[1]) in (1, -3), why="'{node}' does not expand axis 1")


def _bias_last(node, view):  # an NCHW BiasAdd would add along the embedding axis
    if "data_format" in node.attr and node.attr["data_format"].s == b"NCHW":
        return f"'{node.name}' adds its bias along axis 1 (NCHW)"
    return None


LAYER = P("BiasAdd|Add|AddV2", "bias", [
    P("Squeeze", "squeeze", [P("Conv2D", "conv", [_EXPAND, P("Const", "w", keep=True)], check=_conv1d)],
      pred=lambda n, view: list(n.attr["squeeze_dims"].list.i) in ([-3], [1]), why="'{node}' squeezes another axis"),
    P("Const", "b", keep=True)], check=_bias_last)


_CONV1D_OUT = P("BiasAdd|Add|AddV2", inputs=[P("Squeeze", inputs=[P("Conv2D")]), None])


class FuseCin(GraphPass):
    name = "fuse_cin"
    requires_custom_ops = True
    gpu_kernels = False  # FusedMLP's GPU kernel takes bf16/int8 differently; CPU only so far
    description = "xDeepFM CIN layer (split/pack outer products + conv1d) -> products + Recopt>FusedMLP"

    def run(self, ctx, result):
        view = ctx.view
        precision = ctx.precision("dense")
        # Anchor: a bias add over a squeezed Conv2D (conv1d's lowering), so
        # a near miss further up is reported with its reason.
        found = [(n, n) for n in view.nodes() if n.op in ("BiasAdd", "Add", "AddV2")
                 and match(_CONV1D_OUT, n, view) is not None]
        apply_plans(view, result, found, lambda v, info, n: _CinPlan(v, info, require(LAYER, n, v), precision))


def _stacked(view, pack, depth):
    """t when `pack` is Pack(Split(t, depth x 1, axis 2), axis 0) with the
    pieces in order, else None."""
    if pack.attr["axis"].i != 0 or len(pack.input) != depth:
        return None
    split = view.node(view.skip_identity(pack.input[0]))
    if split is None or split.op not in ("Split", "SplitV") or split.attr["num_split"].i != depth:
        return None
    data, axis = (split.input[1], split.input[0]) if split.op == "Split" else (split.input[0], split.input[2])
    if split.op == "SplitV" and not np.array_equal(view.const_value(split.input[1]), np.ones(depth)):
        return None
    if view.const_int(axis) not in (2, -1):
        return None
    expected = [view.source(f"{split.name}:{i}") for i in range(depth)]
    return data if [view.source(view.skip_identity(t)) for t in pack.input] == expected else None


class _CinPlan:
    def __init__(self, view, info, m, precision):
        w = view.const_value(m.tensors["w"])
        b = view.const_value(m.tensors["b"])
        if w is None or w.ndim != 4 or w.shape[:2] != (1, 1):
            raise SkipMatch(f"'{m['conv'].name}' does not take a constant [1, 1, K, H] filter")
        k, h = w.shape[2:]
        if b is None or b.size != h or b.shape[-1] != h:
            raise SkipMatch(f"'{m['bias'].name}' does not add a constant [{h}] bias")
        a_pack, b_pack = m["x0_stack"], m["h_stack"]
        self.depth = len(a_pack.input)
        self.x0, self.h = _stacked(view, a_pack, self.depth), _stacked(view, b_pack, self.depth)
        if self.x0 is None or self.h is None:
            raise SkipMatch(f"'{m['bmm'].name}' does not multiply two tensors split along their last axis")
        x0_shape, h_shape = shapes.shape_of(info, self.x0), shapes.shape_of(info, self.h)
        if x0_shape is None or h_shape is None or len(x0_shape) != 3 or len(h_shape) != 3 or \
                None in (x0_shape[1], h_shape[1]) or x0_shape[2] != self.depth or h_shape[2] != self.depth:
            raise SkipMatch(f"'{self.x0}' and '{self.h}' are not [B, F, {self.depth}] with static F")
        if x0_shape[1] * h_shape[1] != k:
            raise SkipMatch(f"the filter takes {k} inputs, not F0*Hk = {x0_shape[1]}*{h_shape[1]}")
        reshaped = shapes.shape_of(info, m["reshape"].name)
        if reshaped is None or list(reshaped)[::2] != [self.depth, k]:
            raise SkipMatch(f"'{m['reshape'].name}' is not [{self.depth}, B, {k}]")
        self.w, self.b = w.reshape(k, h).astype(np.float32), b.reshape(h).astype(np.float32)
        self.int8 = precision == "int8" and int8_worthy(k, h)
        self.bf16 = precision == "bf16"
        self.activation, self.alpha, self.out = "linear", 0.0, m["bias"]
        found = find_activation(view, m["bias"].name)
        if found is None:
            require_safe(m, view)
            return
        self.activation, self.alpha, out, region = found
        if ":" in view.source(out):
            raise SkipMatch(f"the activation's output '{out}' is not a node's first output")
        self.out = view.node(out)
        inside = {n.name for n in m.removed} | {n.name for n in region}
        for node in list(m.removed) + list(region):
            if node.name != self.out.name and not view.removable(node.name, inside):
                raise SkipMatch(f"'{node.name}' is also used outside the CIN layer")

    def emit(self, view):
        name, device = self.out.name, self.out.device
        base = name + "/recopt_cin"

        def const(suffix, value):
            return view.add_const(f"{base}/{suffix}", value).name

        def node(op, suffix, inputs, attrs):
            return view.add_node(op, f"{base}/{suffix}", inputs, attrs, device=device).name

        rows = node(spec.CIN_PRODUCTS, "products", [self.x0, self.h], {})
        shape_t = {"T": types_pb2.DT_FLOAT, "Tshape": types_pb2.DT_INT32}
        attrs = mlp_spec.op_attrs([self.activation], [self.alpha], self.bf16, [0] if self.int8 else [])
        mlp = node(spec.FUSED_MLP, "mlp", [rows, const("w0", self.w), const("b0", self.b)], attrs)
        shape = const("out_shape", np.array([-1, self.depth, self.w.shape[1]], np.int32))
        # Same name as the replaced output: consumers keep reading `name:0`.
        view.rewrite(self.out, "Reshape", [mlp, shape], shape_t)
