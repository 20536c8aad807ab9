"""fuse_afm: AFM's attention pooling, written as DeepCTR's AFMLayer writes
it (per-field concats) or with gathers, becomes one Recopt>AfmPooling with
the same answers; near misses stay stock and say why."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.graph_util import optimize_with_parity

RNG = np.random.default_rng(21)
F, D, UNITS = 7, 8, 6
ROWS, COLS = map(list, zip(*itertools.combinations(range(F), 2)))
X = RNG.standard_normal((11, F, D)).astype(np.float32)
XSPEC = tf.TensorSpec([None, F, D], tf.float32)
W = tf.constant(RNG.standard_normal((D, UNITS)).astype(np.float32))
B = tf.constant(RNG.standard_normal(UNITS).astype(np.float32))
H = tf.constant(RNG.standard_normal((UNITS, 1)).astype(np.float32))
H_BIAS = tf.constant([0.7])
STOCK = {"Softmax", "Transpose", "Mul", "Sum"}


def _concat_pairs(x):
    """DeepCTR's AFMLayer: the fields as a list, p and q as 21-way concats."""
    fields = tf.split(x, F, axis=1)
    return tf.concat([fields[r] for r in ROWS], axis=1), tf.concat([fields[c] for c in COLS], axis=1)


def _gather_pairs(x):
    return tf.gather(x, ROWS, axis=1), tf.gather(x, COLS, axis=1)


def _afm(x, pairs=_concat_pairs, hidden=None, score_bias=False, softmax_axis=1, sum_axis=1, keepdims=False,
         leak_products=False):
    p, q = pairs(x)
    e = p * q
    hidden = hidden or (lambda e: tf.nn.relu(tf.nn.bias_add(tf.tensordot(e, W, axes=(-1, 0)), B)))
    scores = tf.tensordot(hidden(e), H, axes=(-1, 0))
    if score_bias:
        scores = scores + H_BIAS
    att = tf.nn.softmax(scores, axis=softmax_axis)
    out = tf.reduce_sum(att * e, axis=sum_axis, keepdims=keepdims)
    if leak_products:
        out = out + tf.reduce_max(e)
    return out


def _optimize(fn):
    return optimize_with_parity(fn, [XSPEC], [X], "fuse_afm")


FORMS = {
    "deepctr_concat": lambda x: _afm(x),
    "gather": lambda x: _afm(x, pairs=_gather_pairs),
    "einsum_sigmoid_units": lambda x: _afm(x, hidden=lambda e: tf.sigmoid(tf.einsum("bpd,du->bpu", e, W) + B)),
    "score_bias_cancelled": lambda x: _afm(x, score_bias=True),
    "keepdims": lambda x: _afm(x, pairs=_gather_pairs, keepdims=True),
    "negative_axes": lambda x: _afm(x, softmax_axis=-2, sum_axis=-2),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_afm_forms_fuse_with_parity(form):
    ops, _ = _optimize(FORMS[form])
    assert ops.count("Recopt>AfmPooling") == 1, ops
    assert not STOCK & set(ops), ops
    assert ops.count("ConcatV2") <= 1, ops  # the fields, stacked once for the op
    assert "Recopt>FusedMLP" not in ops, ops


NEAR_MISSES = {
    "products_used_elsewhere": (lambda x: _afm(x, leak_products=True), "outside the fused subgraph"),
    "two_hidden_layers": (lambda x: _afm(x, hidden=lambda e: tf.nn.relu(tf.tensordot(
        tf.nn.relu(tf.tensordot(e, W, axes=1) + B), tf.constant(np.eye(UNITS, dtype=np.float32)), axes=1))), "has 3 layers, not 2"),
    "sum_over_dims": (lambda x: _afm(x, sum_axis=2), "does not sum over the pairs"),
    "mixed_sources": (lambda x: _afm(x, pairs=lambda x: (_concat_pairs(x)[0], _gather_pairs(x)[1])),
                      "do not read the same fields"),
}


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_misses_stay_stock_with_a_reason(case):
    fn, reason = NEAR_MISSES[case]
    ops, skips = _optimize(fn)
    assert "Recopt>AfmPooling" not in ops, ops
    assert any(reason in why for why in skips), skips


def test_softmax_over_another_axis_is_not_matched():
    """Softmax over the (size-1) score axis: every weight is 1, not AFM."""
    ops, _ = _optimize(lambda x: _afm(x, softmax_axis=-1))
    assert "Recopt>AfmPooling" not in ops, ops
