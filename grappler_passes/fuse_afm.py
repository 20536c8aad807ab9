r"""AFM's attention-based pooling (DeepCTR's AFMLayer, hand-written AFMs)
-> Recopt>AfmPooling, so the [B, P, d] pair products are never written:

   fields f_0 .. f_{F-1}, each [B, 1, d]           or one x [B, F, d]
   ConcatV2(f_r0, f_r1, .., axis=1)   ConcatV2(f_c0, f_c1, ..)
                                       or GatherV2(x, rows, 1)  GatherV2(x, cols, 1)
                    \        /
                     Mul  e [B, P, d] ------------------------------.
                      |                                             |
   Recopt>FusedMLP [act, linear]: attention_W, b; projection_h      |   (fuse_dense ran first,
                      |  s [B, P, 1]                                |    in any spelling)
   Transpose -> Softmax -> Transpose       tf.nn.softmax(s, axis=1) |
                      |                                             |
                     Mul <------------------------------------------'
                      |
                     Sum(axis=1)           rewritten in place: AfmPooling(x, W, b, h) [B, d]
                                           (keep_dims: a Reshape to [B, 1, d] keeps the name)

With per-field inputs, x is the stack of the distinct fields in the order
they first appear (field_pairs.stack_fields). projection_h's bias is dropped: a softmax over the
pairs cancels it (a non-finite one is left alone: there it would not).
"""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes import field_pairs, shapes
from grappler_passes.pass_base import GraphPass, SkipMatch, apply_plans
from grappler_passes.pattern import P, match, require_safe


def _is_float(node, _view):
    return node.attr["T"].type == types_pb2.DT_FLOAT


_E = P("Mul", "e", [None, None], pred=_is_float)
_SOFTMAX = P("Transpose", "back", [P("Softmax", "softmax", [P("Transpose", "into", [P(spec.FUSED_MLP, "mlp", [_E])])])])
PATTERN = P("Sum", "sum", [P("Mul", "weighted", [_SOFTMAX, _E], pred=_is_float)])


class FuseAfm(GraphPass):
    name = "fuse_afm"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only
    description = "AFM pair products -> attention MLP -> softmax -> weighted sum -> Recopt>AfmPooling"

    def run(self, ctx, result):
        view = ctx.view
        found = [(node, m) for node in view.nodes() if node.op == "Sum"
                 for m in [match(PATTERN, node, view)] if m is not None]
        apply_plans(view, result, found, _AfmPlan)


class _AfmPlan:
    """What the rewrite needs, read from a match; the graph is not touched."""

    def __init__(self, view, info, m):
        require_safe(m, view)
        self.sum = m["sum"]
        self.pairs, self.dim = field_pairs.products_shape(info, m.tensors["e"], m["e"].name)
        self._check_sum(view)
        self._check_softmax_axis(view, info, m)
        self._read_mlp(view, m["mlp"])
        left, right = view.data_inputs(m["e"])
        self.x, self.rows, self.cols = field_pairs.pair_fields(view, info, left, right, self.dim)
        if len(self.rows) != self.pairs:
            raise SkipMatch(f"the pair products have {self.pairs} pairs but their inputs name {len(self.rows)}")

    def _check_sum(self, view):
        axis = view.const_int(self.sum.input[1])
        if axis not in (1, -2):
            raise SkipMatch(f"'{self.sum.name}' does not sum over the pairs (axis 1)")
        self.keep_dims = self.sum.attr["keep_dims"].b

    def _check_softmax_axis(self, view, info, m):
        """The transposes must move the pair axis last and back: tf.nn.softmax(s, axis=1)."""
        want = [[None, self.pairs, 1], [None, 1, self.pairs], [None, self.pairs, 1]]
        for label, shape in zip(("mlp", "into", "back"), want):
            got = shapes.shape_of(info, m.tensors[label])
            if got is None or len(got) != 3 or got[1:] != shape[1:] or got[0] == self.pairs:
                raise SkipMatch(f"'{m[label].name}' is not {shape}: the softmax is not over the pairs")
        for label in ("into", "back"):
            perm = view.const_value(m[label].input[1])
            if perm is not None and list(np.asarray(perm).reshape(-1)) not in ([0, 2, 1], [-3, -1, -2]):
                raise SkipMatch(f"'{m[label].name}' has perm {list(perm)}, not [0, 2, 1]")

    def _read_mlp(self, view, mlp):
        if mlp.attr["num_layers"].i != 2:
            raise SkipMatch(f"the attention MLP '{mlp.name}' has {mlp.attr['num_layers'].i} layers, not 2")
        if mlp.attr["weights_bf16"].b or list(mlp.attr["int8_layers"].list.i):
            raise SkipMatch(f"the attention MLP '{mlp.name}' runs in reduced precision; AfmPooling is fp32")
        acts = [a.decode() for a in mlp.attr["activations"].list.s]
        if acts[1] != "linear":
            raise SkipMatch(f"the attention score '{mlp.name}' has activation '{acts[1]}', not linear")
        self.activation, self.alpha = acts[0], float(mlp.attr["alphas"].list.f[0])
        inputs = view.data_inputs(mlp)
        values = [view.const_value(t) for t in inputs[1:5]]
        if any(v is None for v in values):
            raise SkipMatch(f"the attention MLP '{mlp.name}' has non-constant weights")
        w, h, _, c = values
        if w.shape[0] != self.dim or h.shape != (w.shape[1], 1):
            raise SkipMatch(f"the attention MLP '{mlp.name}' is not [{self.dim}, units] -> [units, 1]")
        if not np.all(np.isfinite(c)):
            raise SkipMatch(f"the attention score's bias in '{mlp.name}' is not finite: the softmax would not cancel it")
        self.w, self.h, self.b = inputs[1], inputs[2], inputs[3]

    def emit(self, view):
        device = self.sum.device
        x = field_pairs.stack_fields(view, self.x, f"{self.sum.name}/recopt_fields", device)
        attrs = {"rows": self.rows, "cols": self.cols, "activation": self.activation, "alpha": self.alpha}
        inputs = [x, self.w, self.b, self.h]
        if not self.keep_dims:
            view.rewrite(self.sum, spec.AFM_POOLING, inputs, attrs)
            return
        pooled = view.add_node(spec.AFM_POOLING, f"{self.sum.name}/recopt_afm", inputs, attrs, device=device)
        shape = view.add_const(f"{self.sum.name}/recopt_shape", np.array([-1, 1, self.dim], np.int32))
        view.rewrite(self.sum, "Reshape", [pooled.name, shape.name], {"T": types_pb2.DT_FLOAT,
                                                                     "Tshape": types_pb2.DT_INT32})

