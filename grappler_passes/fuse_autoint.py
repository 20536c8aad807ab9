r"""AutoInt's interacting layer (DeepCTR's InteractingLayer: multi-head
self-attention over the fields, heads split and stacked on a new axis 0)
-> Recopt>MultiHeadAttention, the op fuse_mha emits for Keras' layer:

   x [B, F, E]
   Recopt>FusedMLP(x; W_Q)  (W_K)  (W_V)      one linear layer each (fuse_dense ran first)
        |
   Split(axis=2, H) -> Pack(axis=0)   [H, B, F, d]      per projection
        |
   BatchMatMulV2(Q, K, adj_y) [-> Mul | RealDiv by a constant] -> Softmax
        |
   BatchMatMulV2(weights, V)          [H, B, F, d]
        |
   Split(axis=0, H) -> ConcatV2(axis=-1) -> Squeeze([0])   [B, F, H*d]
                                              rewritten in place; the output
                                              kernel is the identity

The residual tensordot, its add and the relu after the Squeeze are left to
the passes that handle them (the residual stays a FusedMLP). fuse_mha runs
before fuse_dense and reads raw projections; this form is matched on the
FusedMLPs so any spelling of DeepCTR's tensordot fuses.
"""
import numpy as np

import custom_ops.spec as spec
from grappler_passes import shapes
from grappler_passes.graph_view import parse_input
from grappler_passes.pass_base import GraphPass, SkipMatch, apply_plans
from grappler_passes.pattern import P, match, require_safe

_BMM = "BatchMatMulV2|BatchMatMul"


def _heads(label):
    return P("Pack", f"{label}_stack", [P("Split", f"{label}_split", [None, P(spec.FUSED_MLP, label)])])


def _pattern(scaled):
    scores = P(_BMM, "scores", [_heads("q"), _heads("k")])
    if scaled:
        scores = P("Mul|RealDiv", "scale", [scores, P("Const", "scale_value", keep=True)])
    context = P(_BMM, "context", [P("Softmax", "softmax", [scores]), _heads("v")])
    return P("Squeeze", "squeeze", [P("ConcatV2", "merge", [P("Split", "heads_split", [None, context])])])


PATTERNS = (_pattern(scaled=True), _pattern(scaled=False))


class FuseAutoInt(GraphPass):
    name = "fuse_autoint"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only
    description = "AutoInt's interacting layer (split/stack heads) -> Recopt>MultiHeadAttention"

    def run(self, ctx, result):
        view = ctx.view
        found = [(node, m) for node in view.nodes() if node.op == "Squeeze"
                 for m in [next((m for p in PATTERNS for m in [match(p, node, view)] if m), None)] if m]
        apply_plans(view, result, found, _AutoIntPlan)


class _AutoIntPlan:
    """What the rewrite needs, read from a match; the graph is not touched."""

    def __init__(self, view, info, m):
        require_safe(m, view)
        self.heads = None  # from the first projection's split; the others must agree
        self.squeeze = m["squeeze"]
        if list(self.squeeze.attr["squeeze_dims"].list.i) != [0]:
            raise SkipMatch(f"'{self.squeeze.name}' does not drop the head-merge axis 0")
        for label in ("scores", "context"):
            node = m[label]
            adj_y = label == "scores"
            if node.attr["adj_x"].b or node.attr["adj_y"].b != adj_y:
                raise SkipMatch(f"'{node.name}' is not {'Q K^T' if adj_y else 'weights @ V'}")
        projections = [self._projection(view, info, m, label) for label in ("q", "k", "v")]
        sources = {p[0] for p in projections}
        if len(sources) != 1:
            raise SkipMatch("the query, key and value projections read different tensors: not self-attention")
        self.x = sources.pop()
        self.kernels = [p[1] for p in projections]
        self.biases = [p[2] for p in projections]
        widths = {k.shape[1] for k in self.kernels}
        if len(widths) != 1 or widths.pop() % self.heads:
            raise SkipMatch("the projections do not split into equal heads")
        self.head_dim = self.kernels[0].shape[1] // self.heads
        bf16 = {p[3] for p in projections}
        if len(bf16) != 1:
            raise SkipMatch("the projections mix fp32 and bf16 weights")
        self.bf16 = bf16.pop()
        self._check_merge(view, m)
        self.scale = self._scale(view, m)

    def _projection(self, view, info, m, label):
        """(x, kernel, bias, bf16) of head stack `label`, checking its split and pack."""
        mlp, split, stack = m[label], m[f"{label}_split"], m[f"{label}_stack"]
        if mlp.attr["num_layers"].i != 1 or [a.decode() for a in mlp.attr["activations"].list.s] != ["linear"]:
            raise SkipMatch(f"'{mlp.name}' is not one linear projection")
        if list(mlp.attr["int8_layers"].list.i):
            raise SkipMatch(f"'{mlp.name}' runs in int8; the attention op takes fp32 or bf16 weights")
        heads = split.attr["num_split"].i
        if self.heads is not None and self.heads != heads:
            raise SkipMatch(f"'{split.name}' splits {heads} heads, the others {self.heads}")
        self.heads = heads
        x = view.source(view.data_inputs(mlp)[0])
        x_shape = shapes.shape_of(info, x)
        if x_shape is None or len(x_shape) != 3:
            raise SkipMatch(f"'{x}' is not [B, F, E]")
        if view.const_int(split.input[0]) not in (2, -1):
            raise SkipMatch(f"'{split.name}' does not split the projection's last axis")
        if stack.attr["axis"].i != 0 or _ports(view, stack.input, split.name) != list(range(heads)):
            raise SkipMatch(f"'{stack.name}' does not stack {split.name}'s heads in order on axis 0")
        kernel, bias = (view.const_value(t) for t in view.data_inputs(mlp)[1:3])
        if kernel is None or bias is None:
            raise SkipMatch(f"'{mlp.name}' has non-constant weights")
        return x, kernel.astype(np.float32), bias.reshape(-1).astype(np.float32), mlp.attr["weights_bf16"].b

    def _check_merge(self, view, m):
        split, merge = m["heads_split"], m["merge"]
        if view.const_int(split.input[0]) != 0 or split.attr["num_split"].i != self.heads:
            raise SkipMatch(f"'{split.name}' does not split the {self.heads} heads on axis 0")
        if view.const_int(merge.input[-1]) not in (-1, 3) or \
                _ports(view, view.data_inputs(merge)[:-1], split.name) != list(range(self.heads)):
            raise SkipMatch(f"'{merge.name}' does not concatenate the heads in order on the last axis")

    @staticmethod
    def _scale(view, m):
        if "scale" not in m.nodes:
            return 1.0
        value = view.const_scalar(m.tensors["scale_value"])
        if value is None or value == 0 or not np.isfinite(value):
            raise SkipMatch(f"'{m['scale'].name}' does not scale by a finite scalar")
        if m["scale"].op == "RealDiv" and view.source(m["scale"].input[1]) != view.source(m.tensors["scale_value"]):
            raise SkipMatch(f"'{m['scale'].name}' divides a constant by the scores")
        return float(1.0 / value if m["scale"].op == "RealDiv" else value)

    def emit(self, view):
        base = self.squeeze.name + "/recopt_mha"
        width = self.heads * self.head_dim
        inputs = [self.x] * 3
        for i, (kernel, bias) in enumerate(zip(self.kernels + [np.eye(width, dtype=np.float32)],
                                               self.biases + [np.zeros(width, np.float32)])):
            inputs.append(view.add_const(f"{base}/kernel{i}", kernel).name)
            inputs.append(view.add_const(f"{base}/bias{i}", bias).name)
        view.rewrite(self.squeeze, spec.MULTI_HEAD_ATTENTION, inputs, {
            "num_heads": self.heads, "key_dim": self.head_dim, "value_dim": self.head_dim, "scale": self.scale,
            "mask_mode": b"select", "mask_value": 0.0, "zero_masked": False, "num_masks": 0,
            "weights_bf16": self.bf16, "causal": False})


def _ports(view, tensors, producer):
    """Output ports of `producer` that `tensors` read, in order (None where another node)."""
    ports = []
    for t in tensors:
        name, port = parse_input(view.skip_identity(t))
        ports.append(port if name == producer else None)
    return ports
