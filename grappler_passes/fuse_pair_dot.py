r"""Pairwise inner products of fields (DeepCTR's InnerProductLayer, used by
PNN and FGCNN; hand-written gathers) -> Recopt>DotInteraction, the op
fuse_interaction emits for DLRM, with the pairs as its flat indices:

   fields f_0 .. f_{F-1}, each [B, 1, d]          or one x [B, F, d]
   ConcatV2(f_r0, f_r1, .., axis=1)   ConcatV2(f_c0, ..)
                                      or GatherV2(x, rows, 1)  GatherV2(x, cols, 1)
                    \        /
                     Mul  [B, P, d]
                      |
                     Sum(axis=2)          rewritten in place: DotInteraction(x, rows*F + cols)
                                          [B, P]; keep_dims: a Reshape to [B, P, 1] keeps the name

DeepCTR writes both [B, P, d] operands and the product to memory (the
corpus FGCNN has 95 fields, 4465 pairs: its concats, multiply and sum were
~55 of its 77 ms at batch 512 in a traced Session run); the op reads each
example's fields once from L1.
"""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes import field_pairs, shapes
from grappler_passes.pass_base import GraphPass, SkipMatch, apply_plans
from grappler_passes.pattern import P, match, require_safe


def _is_float(node, _view):
    return node.attr["T"].type == types_pb2.DT_FLOAT


PATTERN = P("Sum", "sum", [P("Mul", "product", [None, None], pred=_is_float)], pred=_is_float)


class FusePairDot(GraphPass):
    name = "fuse_pair_dot"
    requires_custom_ops = True
    gpu_kernels = False  # DotInteraction has a CPU kernel only
    description = "sum(concat/gather of fields * concat/gather of fields, axis=-1) -> Recopt>DotInteraction"

    def run(self, ctx, result):
        view = ctx.view
        found = [(node, m) for node in view.nodes() if node.op == "Sum"
                 for m in [match(PATTERN, node, view)] if m is not None and _pair_operands(view, m)]
        apply_plans(view, result, found, _PairDotPlan)


def _pair_operands(view, m):
    """Cheap prefilter: both factors come from a concat or a gather."""
    return all(getattr(view.node(view.skip_identity(t)), "op", None) in ("ConcatV2", "GatherV2")
               for t in view.data_inputs(m["product"]))


class _PairDotPlan:
    def __init__(self, view, info, m):
        require_safe(m, view)
        self.sum = m["sum"]
        self.pairs, dim = field_pairs.products_shape(info, m.tensors["product"], m["product"].name)
        if view.const_int(self.sum.input[1]) not in (2, -1):
            raise SkipMatch(f"'{self.sum.name}' does not sum over the embedding axis")
        self.keep_dims = self.sum.attr["keep_dims"].b
        left, right = view.data_inputs(m["product"])
        self.x, rows, cols = field_pairs.pair_fields(view, info, left, right, dim)
        if len(rows) != self.pairs:
            raise SkipMatch(f"the pair products have {self.pairs} pairs but their inputs name {len(rows)}")
        self.num_features = len(self.x) if isinstance(self.x, list) else shapes.shape_of(info, self.x)[1]
        self.indices = [r * self.num_features + c for r, c in zip(rows, cols)]

    def emit(self, view):
        name, device = self.sum.name, self.sum.device
        x = field_pairs.stack_fields(view, self.x, f"{name}/recopt_fields", device)
        attrs = {"num_features": self.num_features, "indices": self.indices, "num_dense": 0}
        if not self.keep_dims:
            view.rewrite(self.sum, spec.DOT_INTERACTION, [x], attrs)
            return
        dots = view.add_node(spec.DOT_INTERACTION, f"{name}/recopt_dots", [x], attrs, device=device)
        shape = view.add_const(f"{name}/recopt_shape", np.array([-1, self.pairs, 1], np.int32))
        view.rewrite(self.sum, "Reshape", [dots.name, shape.name], {"T": types_pb2.DT_FLOAT,
                                                                    "Tshape": types_pb2.DT_INT32})
