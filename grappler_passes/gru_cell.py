"""Reads a GRU cell out of a While loop body by evaluating it symbolically.

Every tensor of one step is classified as a constant (numpy), an affine form
x_t Wx + h Wh + b of the step input and the previous state, or an
element-wise expression over those (sigmoid, tanh, +, -, *, and a product of
a non-affine term with a constant matrix). Matrix products, bias adds,
splits, slices and concatenations of affine forms stay affine, so the same
reader covers Keras 3's fused and per-gate cells, tf_keras's standard_gru
and hand-written cells alike; the new state must then have the GRU shape

    h' = z * h + (1 - z) * c,  z = sigmoid(A_z),  r = sigmoid(A_r)
    c  = tanh(A_x + r * A_h)          (reset after: A_h has no x term)
    c  = tanh(A_x + (r * h) W_h)      (reset before)

with any operand order. The mix may also be written with the update gate
u = 1 - z as h' = (1 - u) * h + u * c (u's projection is then negated into
z's). DIEN's AUGRU multiplies the gate by an attention score a, a column of
the step input: h' = (1 - a*u) * h + a*u * c (the paper) or z' = (1 - a) * z
(DIEN's released code). The step input (one list, or the concatenation of
several read at the same step) is an identity matrix over its columns, so
slices of it, like the AUGRU's [x, a], stay affine. The result is the
Recopt>GRU weights in Keras' z, r, h column order.
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


def _add(a, b):
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
        total = piece if total is None else _add(total, piece)
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


class _Body:
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
        return _add(self.value(ins[0]), self.value(ins[1]))

    def _AddV2(self, node, ins, index):
        return _add(self.value(ins[0]), self.value(ins[1]))

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


@dataclasses.dataclass
class GruWeights:
    kernel: np.ndarray            # [d, 3u]
    recurrent_kernel: np.ndarray  # [u, 3u]
    input_bias: np.ndarray        # [3u]
    recurrent_bias: np.ndarray    # [3u]
    reset_after: bool
    attention: Optional[tuple] = None   # AUGRU: (mode "update" | "keep", step input column of the score)


def read_cell(fdef, new_state_ref, state, input_lists, time, const_args, units=None):
    """GruWeights of the step computing `new_state_ref` in `fdef`. state and
    time are input indices of the body; input_lists maps the index of each
    list read per step to its columns of the step input ([D, width] slices of
    an identity); const_args maps the loop-invariant inputs' indices to their
    ndarray values; units is the state's width when known statically (a
    state concatenated with the input, as TF1's GRUCell does, needs it)."""
    values = dict(const_args)
    values[state] = Affine(wh="I" if units is None else np.eye(units, dtype=np.float32))
    return _match_mix(_Body(fdef, values, input_lists, time).value(new_state_ref))


def _is_one(v):
    return isinstance(v, np.ndarray) and v.size == 1 and float(v.reshape(-1)[0]) == 1.0


def _is_state(v):
    return isinstance(v, Affine) and v.is_state()


def _pairs(e, op):
    """(a, b) and (b, a) when e is the commutative `op`."""
    if not isinstance(e, Expr) or e.op != op:
        return []
    a, b = e.args
    return [(a, b), (b, a)]


def _one_minus(e):
    """x when e is 1 - x, else None."""
    if isinstance(e, Expr) and e.op == "sub" and _is_one(e.args[0]):
        return e.args[1]
    return None


def _match_mix(e):
    """h' = k * h + (1 - k) * c or (1 - u) * h + u * c, in any operand order."""
    for kh, rest in _pairs(e, "add"):
        for k, h in _pairs(kh, "mul"):
            if not _is_state(h):
                continue
            for q, c in _pairs(rest, "mul"):
                if _one_minus(q) is k:
                    return _weights(*_keep_gate(k), c)
                if _one_minus(k) is q:
                    return _weights(*_update_gate(q), c)
    raise SkipMatch("the new state is not z * h + (1 - z) * candidate")


def _keep_gate(k):
    """(z's projection, attention) of the state's weight: sigmoid(A), or
    (1 - a) * sigmoid(A) in DIEN's released AUGRU."""
    for one_minus_a, g in _pairs(k, "mul"):
        column = _score_column(_one_minus(one_minus_a))
        if column is not None:
            return _gate(g, "update"), ("keep", column)
    return _gate(k, "update"), None


def _update_gate(u):
    """The same for the candidate's weight u = 1 - z: sigmoid(A) or, in the
    AUGRU paper, a * sigmoid(A). z's projection is then -A."""
    for a, g in _pairs(u, "mul"):
        column = _score_column(a)
        if column is not None:
            return _negated(_gate(g, "update")), ("update", column)
    return _negated(_gate(u, "update")), None


def _negated(a):
    def neg(part):
        return None if part is None else -part
    return Affine(neg(a.wx), neg(a.wh), neg(a.b))


def _score_column(a):
    """The step input column an attention score reads, when `a` is one."""
    if not isinstance(a, Affine) or a.wh is not None or a.b is not None or isinstance(a.wx, str) or a.wx is None:
        return None
    if a.wx.shape[1] != 1 or np.count_nonzero(a.wx) != 1 or a.wx.max() != 1.0:
        return None
    return int(np.argmax(a.wx[:, 0]))


def _gate(e, what):
    if not (isinstance(e, Expr) and e.op == "sigmoid" and isinstance(e.args[0], Affine)):
        raise SkipMatch(f"the {what} gate is not sigmoid of a projection")
    a = e.args[0]
    if isinstance(a.wx, str) or isinstance(a.wh, str) or a.width() is None:
        raise SkipMatch(f"the {what} gate adds the raw input or state")
    return a


def _terms(e):
    if isinstance(e, Expr) and e.op == "add":
        return _terms(e.args[0]) + _terms(e.args[1])
    return [e]


def _split_sum(e):
    """(affine part, the one non-affine term) of a sum, in any grouping."""
    affine, rest = Affine(), []
    for t in _terms(e):
        if isinstance(t, Affine) or (isinstance(t, np.ndarray) and t.ndim == 1):
            affine = _add(affine, t)
        else:
            rest.append(t)
    return affine, (rest[0] if len(rest) == 1 else None)


def _weights(z, attention, c):
    weights = _candidate(z, c)
    weights.attention = attention
    return weights


def _candidate(z, c):
    if not (isinstance(c, Expr) and c.op == "tanh"):
        raise SkipMatch("the candidate is not tanh(...)")
    ax, rest = _split_sum(c.args[0])
    if ax.wh is None and rest is not None:
        for r_expr, ah in _pairs(rest, "mul"):
            if isinstance(ah, Affine) and ah.wx is None and not isinstance(ah.wh, str) and ah.wh is not None:
                return _assemble(z, _gate(r_expr, "reset"), ax, ah.wh, ah.b, True)
        if isinstance(rest, Expr) and rest.op == "matmul":
            for r_expr, h in _pairs(rest.args[0], "mul"):
                if _is_state(h):
                    return _assemble(z, _gate(r_expr, "reset"), ax, rest.args[1], None, False)
    raise SkipMatch("the candidate is neither tanh(x Wx + r * (h Wh + b)) nor tanh(x Wx + (r * h) Wh)")


def _part(w, rows, units):
    if w is None:
        return np.zeros((rows, units), np.float32)
    return np.asarray(w, np.float32)


def _assemble(z, r, ax, wh, bh, reset_after):
    units = z.width()
    if r.width() != units or ax.width() != units or wh.shape != (units, units):
        raise SkipMatch("the gates and candidate disagree on the unit count")
    if isinstance(ax.wx, str) or ax.wx is None:
        raise SkipMatch("the candidate has no input projection")
    dim = ax.wx.shape[0]
    kernel = np.concatenate([_part(g.wx, dim, units) for g in (z, r, ax)], axis=1)
    recurrent = np.concatenate([_part(z.wh, units, units), _part(r.wh, units, units), wh], axis=1)
    zeros = np.zeros(units, np.float32)
    input_bias = np.concatenate([zeros if g.b is None else g.b for g in (z, r, ax)]).astype(np.float32)
    recurrent_bias = np.concatenate([zeros, zeros, zeros if bh is None else bh]).astype(np.float32)
    if kernel.shape != (dim, 3 * units) or recurrent.shape != (units, 3 * units):
        raise SkipMatch("projection shapes do not fit one GRU")
    return GruWeights(kernel, recurrent.astype(np.float32), input_bias, recurrent_bias, reset_after)
