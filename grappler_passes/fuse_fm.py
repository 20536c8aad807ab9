r"""The factorization-machine term (DeepCTR's FM layer in DeepFM, IFM, DIFM;
NFM's BiInteractionPooling; hand-written FMs) -> Recopt>FactorizationMachine:

   x [B, F, k]
   Sum(x, axis=1, keepdims)    Sum(sq(x), axis=1, keepdims)     sq: Square | Mul(x, x) | Pow(x, 2)
          |                            |
        sq(.)                          |
            \                         /
             Sub   (square of sum - sum of squares)  [B, 1, k]
              |
   [Mul | RealDiv by a constant]   [Sum(axis=2)]   [Mul | RealDiv]     in this order, each optional
              |
            root                    rewritten in place: FactorizationMachine(x, reduce, scale)
                                    (reduce: the Sum over k was there, [B, 1]; else [B, 1, k])

Matched from the Sub forward, so the scale may sit before or after the sum
over k, as authors write it.
"""
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes import shapes
from grappler_passes.pass_base import GraphPass, SkipMatch, apply_plans


class FuseFm(GraphPass):
    name = "fuse_fm"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only
    description = "square of sum - sum of squares (+ scale, + sum over k) -> Recopt>FactorizationMachine"

    def run(self, ctx, result):
        view = ctx.view
        found = [(n, n) for n in view.nodes() if n.op == "Sub" and _squared(view, n.input[0]) is not None]
        apply_plans(view, result, found, _FmPlan)


def _squared(view, tensor):
    """t when `tensor` is Square(t), Mul(t, t) or Pow(t, 2), else None."""
    node = view.node(view.skip_identity(tensor))
    if node is None:
        return None
    if node.op == "Square":
        return view.source(node.input[0])
    if node.op == "Mul" and view.source(node.input[0]) == view.source(node.input[1]):
        return view.source(node.input[0])
    if node.op == "Pow" and view.const_scalar(node.input[1]) == 2.0:
        return view.source(node.input[0])
    return None


class _FmPlan:
    def __init__(self, view, info, sub):
        self.view, self.inside = view, {sub.name}
        if sub.attr["T"].type != types_pb2.DT_FLOAT:
            raise SkipMatch(f"'{sub.name}' is not float32")
        summed = self._field_sum(_squared(view, sub.input[0]), sub)
        squares = self._field_sum(view.source(sub.input[1]), sub)
        self.inside.update({view.node(view.skip_identity(sub.input[0])).name})
        x = _squared(view, squares)
        if x is None or x != summed:
            raise SkipMatch(f"'{sub.name}' does not subtract the sum of squares of the tensor whose sum it squares")
        self.inside.add(view.node(view.skip_identity(squares)).name)
        shape = shapes.shape_of(info, x)
        if shape is None or len(shape) != 3 or shape[2] is None:
            raise SkipMatch(f"'{x}' is not [B, F, k] with a static k")
        self.x = x
        self.root, self.reduce, self.scale = self._forward(sub)
        for name in self.inside - {self.root.name}:
            if not view.removable(name, self.inside):
                raise SkipMatch(f"'{name}' is also used outside the factorization-machine term")

    def _field_sum(self, tensor, sub):
        """The input of Sum(t, axis=1, keepdims) behind `tensor`."""
        node = None if tensor is None else self.view.node(self.view.skip_identity(tensor))
        if node is None or node.op != "Sum" or self.view.const_int(node.input[1]) not in (1, -2) or \
                not node.attr["keep_dims"].b:
            raise SkipMatch(f"'{sub.name}' is not a difference of sums over the fields (axis 1, keepdims)")
        self.inside.add(node.name)
        return self.view.source(node.input[0])

    def _forward(self, node):
        """(root, reduce, scale): the optional scales and sum over k after the Sub."""
        view, reduce, scale = self.view, False, 1.0
        while True:
            users = view.consumers(node.name)
            if len(users) != 1 or node.name in view.protected or view.control_consumers(node.name):
                break
            user, port = users[0]
            value = view.const_scalar(user.input[1 - port]) if user.op in ("Mul", "RealDiv") else None
            if user.op == "Mul" and value is not None:
                scale *= value
            elif user.op == "RealDiv" and port == 0 and value:
                scale /= value
            elif user.op == "Sum" and not reduce and view.const_int(user.input[1]) in (2, -1) and \
                    not user.attr["keep_dims"].b:
                reduce = True
            else:
                break
            node = user
            self.inside.add(node.name)
        return node, reduce, float(scale)

    def emit(self, view):
        view.rewrite(self.root, spec.FACTORIZATION_MACHINE, [self.x], {"reduce": self.reduce, "scale": self.scale})
