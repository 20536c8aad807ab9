r"""Layers written on column vectors [B, d, 1] -> the same layers on rows [B, d].

DeepCTR's DCN-v2 ("matrix") and DCNMix cross layers keep x as a column,
x_l = ExpandDims(x, 2), and project it with the weight on the left:

   Einsum("ij,bjk->bik", W[i, j], X[B, j, 1])
       -> ExpandDims(MatMul(Squeeze(X, [2]), W, transpose_b), 2)

TensorFlow runs that Einsum as B matrix-vector products (DCNMix at batch
512: 24 of them, 13 ms, twice ONNX Runtime). As a MatMul it is one GEMM,
and once the ExpandDims are moved past the elementwise ops that follow
(they commute with any op that keeps the trailing axis of size 1),

   Squeeze(ExpandDims(y, 2), [2])              -> y
   Tanh|Sigmoid|Relu|...(ExpandDims(y, 2))     -> ExpandDims(Tanh(y), 2)
   Add|Mul|Sub(ExpandDims(y, 2), ExpandDims(z, 2) | Const [..., 1])
                                               -> ExpandDims(Add(y, z | Const[...]), 2)
   BatchMatMul(Pack([a_1..a_E], axis=2), q [B, E, 1])    (DCNMix's mixture of experts)
                                               -> ExpandDims(AddN(a_e * q[:, e]), 2)

an expert's V -> tanh -> C -> tanh -> U (+ bias) chain is plain
MatMul/Tanh/BiasAdd on rows, which canonicalize and fuse_dense turn into
one Recopt>FusedMLP. Only the ExpandDims this pass made are moved, so
column-vector graphs it did not rewrite (DCN-v1's cross stack, which
fuse_cross takes whole) are left as they are.
"""
import re

import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes import shapes
from grappler_passes.graph_view import parse_input
from grappler_passes.pass_base import GraphPass

# Weight [i, j] or [j, i], column X [b, j, k] with k of size 1, out [b, i, k].
_EQUATION = re.compile(r"^([a-z])([a-z]),([a-z])([a-z])([a-z])->([a-z])([a-z])([a-z])$")
_UNARY = frozenset({"Tanh", "Sigmoid", "Relu", "Relu6", "Elu", "Selu", "Softplus", "Neg", "Abs", "Square",
                    "Exp", "Log1p", "Sqrt", "Rsqrt"})
_BINARY = frozenset({"Add", "AddV2", "Sub", "Mul", "RealDiv", "Maximum", "Minimum", "SquaredDifference"})
MAX_ROUNDS = 64


def _weight_first(equation):
    """For "ij,bjk->bik" (weight letters first): True if W is [i, j] (out
    = X W^T), False if [j, i]; None when it is another contraction."""
    m = _EQUATION.match(equation.replace(" ", ""))
    if not m:
        return None
    w0, w1, b, j, k, o0, o1, o2 = m.groups()
    if len({b, j, k}) != 3 or (o0, o2) != (b, k) or j == o1 or o1 in (b, k):
        return None
    if (w0, w1) == (o1, j):
        return True
    if (w0, w1) == (j, o1):
        return False
    return None


class ColumnVectors(GraphPass):
    name = "column_vectors"
    description = "Einsum 'ij,bjk->bik' on [B, d, 1] columns -> MatMul on [B, d] rows, ExpandDims moved past elementwise ops"

    def run(self, ctx, result):
        view = ctx.view
        einsums = [n for n in view.nodes() if n.op == "Einsum" and n.attr["T"].type == types_pb2.DT_FLOAT
                   and _weight_first(n.attr["equation"].s.decode()) is not None]
        if not einsums:
            return
        rows = _Rows(view, view.tensor_info())
        for node in einsums:
            why = rows.to_matmul(node)
            if why:
                result.skip(node.name, why)
            else:
                result.apply()
        for node in [n for n in view.nodes() if n.op in ("BatchMatMul", "BatchMatMulV2")]:
            if rows.mixture(node):
                result.apply()
        if not rows.ours:
            return
        for _ in range(MAX_ROUNDS):
            changed = False
            for node in list(view.nodes()):
                if view.node(node.name) is not node or node.name in view.protected or view.has_control_inputs(node):
                    continue
                if rows.cancel(node) or rows.sink(node):
                    result.apply()
                    changed = True
            if not changed:
                return


class _Rows:
    """The rewrite state: the shapes read before the first edit (names keep
    their shapes: every rewrite in place leaves a node's output as it was),
    the rank-2 tensors made here, and the ExpandDims made here."""

    def __init__(self, view, info):
        self.view, self.info = view, info
        self.made = set()   # rank-2 nodes this pass added
        self.ours = set()   # ExpandDims this pass made: the only ones it moves

    def to_matmul(self, node):
        """Rewrites one Einsum in place; returns why not, or None."""
        view = self.view
        w = view.const_value(node.input[0])
        if w is None or view.has_control_inputs(node):
            return "the weight-first einsum has no constant weight first"
        x = node.input[1]
        shape = shapes.shape_of(self.info, x)
        if w.ndim != 2 or shape is None or len(shape) != 3 or shape[2] != 1:
            return f"'{x}' is not a [B, d, 1] column (shape {shape})"
        transposed = _weight_first(node.attr["equation"].s.decode())
        if shape[1] is not None and shape[1] != w.shape[1 if transposed else 0]:
            return f"weight {list(w.shape)} does not contract '{x}' {shape}"
        base = node.name + "/recopt_rows"
        mm = self._add("MatMul", base, [self._squeezed(x, base, node.device), node.input[0]],
                       {"T": types_pb2.DT_FLOAT, "transpose_a": False, "transpose_b": transposed}, node.device)
        self._expand_in_place(node, mm)
        return None

    def mixture(self, node):
        """BatchMatMul(Pack([a_1..a_E], axis=2), q [B, E, 1]), the experts'
        weighted sum (DCNMix), -> ExpandDims(AddN(a_e * q[:, e]), 2).
        TensorFlow packs on the inner axis one float at a time (a step-stats
        trace of DCNMix at batch 512: 1.9 ms a layer, for a [512, 221, 4]
        stack)."""
        view = self.view
        if node.attr["adj_x"].b or node.attr["adj_y"].b or node.attr["T"].type != types_pb2.DT_FLOAT or \
                view.has_control_inputs(node):
            return False
        pack = view.node(view.skip_identity(node.input[0]))
        if pack is None or pack.op != "Pack" or pack.attr["axis"].i not in (2, -1) or \
                any(self._rank(t) != 2 for t in pack.input) or view.has_control_inputs(pack):
            return False
        n = len(pack.input)
        q = node.input[1]
        shape = shapes.shape_of(self.info, q)
        if shape is None or len(shape) != 3 or shape[1:] != [n, 1]:
            return False
        base, dev = node.name + "/recopt_rows", node.device
        flat = self._add("Squeeze", base + "/weights", [q], {"T": types_pb2.DT_FLOAT, "squeeze_dims": [2]}, dev)
        axis = view.add_const(base + "/split_axis", np.array(1, np.int32)).name
        split = self._add("Split", base + "/split", [axis, flat], {"T": types_pb2.DT_FLOAT, "num_split": n}, dev)
        terms = [self._add("Mul", f"{base}/term{e}", [a, split if e == 0 else f"{split}:{e}"],
                           {"T": types_pb2.DT_FLOAT}, dev) for e, a in enumerate(pack.input)]
        total = self._add("AddN", base, terms, {"T": types_pb2.DT_FLOAT, "N": n}, dev) if n > 1 else terms[0]
        self._expand_in_place(node, total)
        return True

    def cancel(self, node):
        """Squeeze(ExpandDims(y, a), [a]) -> y, for any ExpandDims."""
        if node.op != "Squeeze":
            return False
        view = self.view
        expand = view.node(view.skip_identity(node.input[0]))
        if expand is None or expand.op != "ExpandDims":
            return False
        axis, dims = view.const_int(expand.input[1]), list(node.attr["squeeze_dims"].list.i)
        if axis is None or len(dims) != 1 or not self._same_axis(axis, dims[0], expand.input[0]):
            return False
        view.replace_uses(node.name, expand.input[0])
        view.remove_nodes([node.name])
        return True

    def sink(self, node):
        """Op(ExpandDims(y, 2), ...) -> ExpandDims(Op(y, ...), 2), where one
        ExpandDims is ours and every other operand is an ExpandDims of rows
        or a constant whose last axis has size 1."""
        view = self.view
        if node.op in _UNARY:
            src = view.node(view.skip_identity(node.input[0]))
            if src is None or src.name not in self.ours:
                return False
            self._expand_in_place(node, self._add(node.op, node.name + "/recopt_rows", [src.input[0]],
                                                   _attrs(node), node.device))
            return True
        if node.op not in _BINARY:
            return False
        plan, mine = [], False
        for tensor in node.input[:2]:
            src = view.node(view.skip_identity(tensor))
            if src is not None and src.op == "ExpandDims" and view.const_int(src.input[1]) in (2, -1) and \
                    self._rank(src.input[0]) == 2:
                plan.append(("rows", src.input[0]))
                mine = mine or src.name in self.ours
                continue
            value = view.const_value(tensor)
            if value is None or value.ndim > 3 or (value.ndim > 0 and value.shape[-1] != 1):
                return False
            plan.append(("const", value.reshape(value.shape[:-1]) if value.ndim else value))
        if not mine:
            return False
        operands = [v if kind == "rows" else view.add_const(f"{node.name}/recopt_rows_c{i}", v).name
                    for i, (kind, v) in enumerate(plan)]
        self._expand_in_place(node, self._add(node.op, node.name + "/recopt_rows", operands, _attrs(node),
                                              node.device))
        return True

    def _add(self, op, name, inputs, attrs, device):
        node = self.view.add_node(op, name, inputs, attrs, device)
        self.made.add(node.name)
        return node.name

    def _rank(self, tensor):
        name = self.view.skip_identity(tensor)
        if parse_input(name)[0] in self.made:
            return 2
        shape = shapes.shape_of(self.info, name)
        return None if shape is None else len(shape)

    def _same_axis(self, a, b, tensor):
        """Whether ExpandDims axis a on `tensor` and Squeeze axis b name one axis."""
        if a == b:
            return True
        rank = self._rank(tensor)
        return rank is not None and a % (rank + 1) == b % (rank + 1)

    def _squeezed(self, column, base, device):
        """Squeeze(column, [2]): an existing one if the graph has it."""
        view = self.view
        source = parse_input(view.source(column))
        for consumer, _ in view.consumers(source[0]):
            if consumer.op == "Squeeze" and list(consumer.attr["squeeze_dims"].list.i) in ([2], [-1]) and \
                    parse_input(view.source(consumer.input[0])) == source and not view.has_control_inputs(consumer):
                return consumer.name
        return view.add_node("Squeeze", base + "/squeeze", [column],
                             {"T": types_pb2.DT_FLOAT, "squeeze_dims": [2]}, device).name

    def _expand_in_place(self, node, rows):
        axis = self.view.add_const(node.name + "/recopt_rows_axis", np.array(2, np.int32)).name
        self.view.rewrite(node, "ExpandDims", [rows, axis], {"T": types_pb2.DT_FLOAT, "Tdim": types_pb2.DT_INT32})
        self.ours.add(node.name)


def _attrs(node):
    return {k: v for k, v in node.attr.items() if not k.startswith("_")}
