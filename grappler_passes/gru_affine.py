"""Symbolic evaluation of a recurrent loop body, for gru_cell.

Every tensor of one step is classified as a constant (numpy), an affine form
x_t Wx + h Wh + b of the step input and the previous state, or an
element-wise expression over those (sigmoid, tanh, +, -, *, and a product of
a non-affine term with a constant matrix). Matrix products, bias adds,
splits, slices and concatenations of affine forms stay affine, so the same
reader covers Keras 3's fused and per-gate cells, tf_keras's standard_gru
and hand-written cells alike. Anything else raises SkipMatch with the node.
"""
import dataclasses
from typing import Optional

import numpy as np
from tensorflow.python.framework import tensor_util

from grappler_passes.pass_base import SkipMatch


@dataclasses.dataclass
class Affine:
    """x Wx + h Wh + b over the last axis. wh "I" stands for the state itself
    when its width is unknown (an identity of unknown size, before any product)."""
    wx: object = None
    wh: object = None
    b: Optional[np.ndarray] = None

    def width(self):
        for part in (self.wx, self.wh):
            if part is not None and not isinstance(part, str):
                return part.shape[1]
        return None if self.b is None else self.b.shape[0]

    def is_state(self):
        if self.wx is not None or self.b is not None or self.wh is None:
            return False
        return isinstance(self.wh, str) or np.array_equal(self.wh, np.eye(len(self.wh)))


@dataclasses.dataclass
class Expr:
    op: str           # sigmoid, tanh, add, sub, mul, matmul
    args: tuple


def _add_parts(a, b):
    if a is None or b is None:
        return b if a is None else a
    if isinstance(a, str) or isinstance(b, str):
        raise SkipMatch("an identity term is added to a projection")
    return a + b


def add(a, b):
    if isinstance(a, Affine) and isinstance(b, Affine):
        return Affine(_add_parts(a.wx, b.wx), _add_parts(a.wh, b.wh), _add_parts(a.b, b.b))
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Affine) and isinstance(y, np.ndarray) and y.ndim == 1:
            return Affine(x.wx, x.wh, _add_parts(x.b, y.astype(np.float32)))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a + b
    return Expr("add", (a, b))


def _matmul(a, w):
    if not isinstance(w, np.ndarray) or w.ndim != 2:
        raise SkipMatch("a matrix product whose weight is not a constant matrix")
    if isinstance(a, Expr) and a.op == "concat":
        return _matmul_concat(a.args, w)
    if isinstance(a, Affine):
        def times(part):
            if part is None:
                return None
            return w if isinstance(part, str) else part @ w
        return Affine(times(a.wx), times(a.wh), None if a.b is None else a.b @ w)
    return Expr("matmul", (a, w))


def _matmul_concat(parts, w):
    """concat(parts) W = sum of part_i W[rows of part i] (TF1's GRUCell
    multiplies concat([x, r * h]) by one candidate kernel)."""
    total, first = None, 0
    for part in parts:
        width = _expr_width(part)
        piece = _matmul(part, w[first:first + width])
        total = piece if total is None else add(total, piece)
        first += width
    if first != w.shape[0]:
        raise SkipMatch("a concatenation multiplied by a kernel of another height")
    return total


def _columns(value, begin, end):
    """value[..., begin:end] for constants, affine forms and element-wise expressions."""
    if isinstance(value, np.ndarray):
        return value[..., begin:end]
    if isinstance(value, Affine):
        def cut(part):
            if isinstance(part, str):
                raise SkipMatch("a slice of the raw step input or state")
            return None if part is None else part[..., begin:end]
        return Affine(cut(value.wx), cut(value.wh), cut(value.b))
    if value.op in ("sigmoid", "tanh"):
        return Expr(value.op, (_columns(value.args[0], begin, end),))
    raise SkipMatch(f"a slice of a {value.op} expression")


def _concat_columns(values):
    if all(isinstance(v, np.ndarray) for v in values):
        return np.concatenate(values, axis=-1)
    widths = [_expr_width(v) for v in values]
    if None in widths:
        raise SkipMatch("a concatenation of a term of unknown width")
    if not all(isinstance(v, Affine) for v in values):
        return Expr("concat", tuple(values))   # only a matrix product may read it

    def stack(parts):
        if all(p is None for p in parts):
            return None
        rows = next(p.shape[0] for p in parts if p is not None)
        return np.concatenate([np.zeros((rows, w), np.float32) if p is None else p for p, w in zip(parts, widths)], 1)
    return Affine(stack([v.wx for v in values]), stack([v.wh for v in values]),
                  stack([None if v.b is None else v.b[None] for v in values]))


class Body:
    """A FunctionDef's nodes, with tensor references resolved to values."""

    def __init__(self, fdef, arg_values, input_list, time):
        self.nodes = {n.name: n for n in fdef.node_def}
        self.args = {a.name: i for i, a in enumerate(fdef.signature.input_arg)}
        self.arg_values = arg_values   # arg index -> value (Affine / ndarray)
        self.input_list, self.time = input_list, time
        self.memo = {}

    def value(self, ref):
        if ref in self.memo:
            return self.memo[ref]
        if ref in self.args:
            i = self.args[ref]
            if i not in self.arg_values:
                raise SkipMatch(f"the step reads loop variable {ref!r}, which is neither the state nor a constant")
            return self.arg_values[i]
        name, _, rest = ref.partition(":")
        index = int(rest.rpartition(":")[2]) if rest else 0
        self.memo[ref] = out = self._evaluate(self.nodes[name], index)
        return out

    def inputs(self, node):
        return [i for i in node.input if not i.startswith("^")]

    def const_input(self, node, i):
        v = self.value(self.inputs(node)[i])
        if not isinstance(v, np.ndarray):
            raise SkipMatch(f"{node.op} {node.name!r}: input {i} is not a constant")
        return v

    def _evaluate(self, node, index):
        op, ins = node.op, self.inputs(node)
        if op == "Const":
            return tensor_util.MakeNdarray(node.attr["value"].tensor)
        if op in ("Identity", "Snapshot", "ReadVariableOp"):
            return self.value(ins[0])
        handler = getattr(self, "_" + op, None)
        if handler is None:
            raise SkipMatch(f"{op} {node.name!r} is not part of a GRU step")
        return handler(node, ins, index)

    # ---- ops ------------------------------------------------------------
    def _TensorListGetItem(self, node, ins, index):
        columns = self.input_list.get(self.args.get(ins[0]))
        if columns is None or self.args.get(ins[1]) != self.time:
            raise SkipMatch(f"TensorListGetItem {node.name!r} reads another list or step than the input's")
        return Affine(wx=columns)

    def _MatMul(self, node, ins, index):
        if node.attr["transpose_a"].b:
            raise SkipMatch(f"MatMul {node.name!r} transposes the activations")
        w = self.value(ins[1])
        if isinstance(w, np.ndarray) and node.attr["transpose_b"].b:
            w = w.T
        return _matmul(self.value(ins[0]), w)

    def _BiasAdd(self, node, ins, index):
        return add(self.value(ins[0]), self.value(ins[1]))

    def _AddV2(self, node, ins, index):
        return add(self.value(ins[0]), self.value(ins[1]))

    _Add = _AddV2

    def _Sub(self, node, ins, index):
        a, b = self.value(ins[0]), self.value(ins[1])
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return a - b
        return Expr("sub", (a, b))

    def _Mul(self, node, ins, index):
        a, b = self.value(ins[0]), self.value(ins[1])
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            return a * b
        return Expr("mul", (a, b))

    def _Sigmoid(self, node, ins, index):
        return Expr("sigmoid", (self.value(ins[0]),))

    def _Tanh(self, node, ins, index):
        return Expr("tanh", (self.value(ins[0]),))

    def _Squeeze(self, node, ins, index):
        return np.squeeze(self.const_input(node, 0), axis=tuple(node.attr["squeeze_dims"].list.i) or None)

    def _Unpack(self, node, ins, index):
        return np.moveaxis(self.const_input(node, 0), node.attr["axis"].i, 0)[index]

    def _Split(self, node, ins, index):
        axis, value = int(self.const_input(node, 0)), self.value(ins[1])
        parts = node.attr["num_split"].i
        return self._split(node, value, axis, [None] * parts, index)

    def _SplitV(self, node, ins, index):
        sizes = [int(s) for s in self.const_input(node, 1)]
        return self._split(node, self.value(ins[0]), int(self.const_input(node, 2)), sizes, index)

    def _split(self, node, value, axis, sizes, index):
        if isinstance(value, np.ndarray):
            if None in sizes:
                return np.split(value, len(sizes), axis=axis)[index]
            return np.split(value, np.cumsum(sizes)[:-1], axis=axis)[index]
        if axis not in (1, -1):
            raise SkipMatch(f"{node.op} {node.name!r} splits axis {axis}, not the feature axis")
        width = _expr_width(value)
        if width is None:
            raise SkipMatch(f"{node.op} {node.name!r} splits a term of unknown width")
        if None in sizes:
            sizes = [width // len(sizes)] * len(sizes)
        begin = sum(sizes[:index])
        return _columns(value, begin, begin + sizes[index])

    def _StridedSlice(self, node, ins, index):
        value = self.value(ins[0])
        begin, end, strides = (self.const_input(node, i) for i in (1, 2, 3))
        if isinstance(value, np.ndarray):   # any slice of a weight, e.g. a bias row of a stacked variable
            return _fold(node, [value, begin, end, strides])
        masks = {k: node.attr[k].i for k in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                                             "shrink_axis_mask")}
        if (len(begin) != 2 or masks["ellipsis_mask"] or masks["new_axis_mask"] or masks["shrink_axis_mask"]
                or any(int(s) != 1 for s in strides)):
            raise SkipMatch(f"StridedSlice {node.name!r} is not a plain column range")
        if not masks["begin_mask"] & 1 and not masks["end_mask"] & 1:
            raise SkipMatch(f"StridedSlice {node.name!r} slices rows")
        lo = None if masks["begin_mask"] & 2 else int(begin[1])
        hi = None if masks["end_mask"] & 2 else int(end[1])
        width = _expr_width(value)
        if width is None:
            raise SkipMatch(f"StridedSlice {node.name!r} slices a term of unknown width")
        lo, hi, _ = slice(lo, hi).indices(width)
        return _columns(value, lo, hi)

    def _ConcatV2(self, node, ins, index):
        axis = int(self.const_input(node, len(ins) - 1))
        values = [self.value(i) for i in ins[:-1]]
        if axis not in (1, -1) and not all(isinstance(v, np.ndarray) for v in values):
            raise SkipMatch(f"ConcatV2 {node.name!r} joins axis {axis}, not the feature axis")
        return _concat_columns(values)


def _expr_width(e):
    """The static width of a term's last axis, None when unknown."""
    if isinstance(e, Affine):
        return e.width()
    if isinstance(e, np.ndarray):
        return e.shape[-1] if e.ndim else None
    if e.op == "concat":
        widths = [_expr_width(a) for a in e.args]
        return None if None in widths else sum(widths)
    if e.op == "matmul":
        return e.args[1].shape[1]
    widths = {_expr_width(a) for a in e.args} - {None}
    if len(widths) > 1:
        widths.discard(1)   # a [B, 1] factor broadcasts
    return widths.pop() if len(widths) == 1 else None


def _fold(node, values):
    """A weight-only node (a bias row picked out of a stacked variable) run once."""
    import tensorflow as tf
    from grappler_passes.sessions import evaluation_session
    graph = tf.Graph()
    with graph.as_default():
        feeds = [tf.constant(v) for v in values]
        copy = graph.create_op(node.op, feeds, [feeds[0].dtype], attrs=dict(node.attr), name="fold")
    with evaluation_session(graph) as sess:
        return sess.run(copy.outputs[0])
