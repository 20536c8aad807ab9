"""Reads a GRU cell out of a While loop body: the body is evaluated
symbolically (gru_affine.py) and the new state must then have the GRU shape

    h' = z * h + (1 - z) * c,  z = sigmoid(A_z),  r = sigmoid(A_r)
    c  = tanh(A_x + r * A_h)          (reset after: A_h has no x term)
    c  = tanh(A_x + (r * h) W_h)      (reset before)

with any operand order, A_* being affine forms of the step input and the
previous state. The mix may also be written with the update gate
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

from grappler_passes.gru_affine import Affine, Body, Expr, add
from grappler_passes.pass_base import SkipMatch


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
    return _match_mix(Body(fdef, values, input_lists, time).value(new_state_ref))


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
            affine = add(affine, t)
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
