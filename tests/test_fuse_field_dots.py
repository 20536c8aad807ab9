"""fuse_field_dots: FwFM's weighted sum and FEFM's concat of per-pair
Keras batch_dots (as DeepCTR's FwFMLayer and FEFMLayer write them) become
one DotInteraction (+ MatMul by the field strengths) or one
BilinearInteraction (+ Sum), with the same answers; near misses stay
stock and say why."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.graph_util import optimize_with_parity

RNG = np.random.default_rng(37)
F, D = 6, 8
PAIRS = list(itertools.combinations(range(F), 2))
X = RNG.standard_normal((11, F, D)).astype(np.float32)
XSPEC = tf.TensorSpec([None, F, D], tf.float32)
R = RNG.standard_normal((F, F)).astype(np.float32)
W = {p: tf.constant((RNG.standard_normal((D, D)) / np.sqrt(D)).astype(np.float32)) for p in PAIRS}


def batch_dot(a, b):
    """tf_keras backend.batch_dot(a, b, axes=1) on [B, d] operands, as it lowers."""
    return tf.squeeze(tf.matmul(tf.expand_dims(a, 1), tf.expand_dims(b, 2)), 1)


def _sliced(x, i):
    return tf.squeeze(x[0:, i:i + 1, 0:], axis=1)


def fwfm(x, field=_sliced, strength=None):
    """DeepCTR 0.9.4 FwFMLayer.call; strength(x) replaces the constant r_ij in a near miss."""
    terms = []
    for i, j in PAIRS:
        dot = batch_dot(field(x, i), field(x, j))
        terms.append(tf.scalar_mul(R[i, j], dot) if strength is None else strength(x) * dot)
    return tf.add_n(terms)


def fefm(x, project=lambda v, w: tf.matmul(v, w + tf.transpose(w))):
    """DeepCTR 0.9.4 FEFMLayer.call."""
    return tf.concat([batch_dot(project(_sliced(x, i), W[(i, j)]), _sliced(x, j)) for i, j in PAIRS], axis=1)


def _fwfm_and_one_dot(x):
    """FwFM whose first pair's dot product is also a model output."""
    dots = {(i, j): batch_dot(_sliced(x, i), _sliced(x, j)) for i, j in PAIRS}
    return tf.add_n([tf.scalar_mul(R[p], dots[p]) for p in PAIRS]), dots[PAIRS[0]]


def _optimize(fn):
    return optimize_with_parity(fn, [XSPEC], [X], "fuse_field_dots")


FORMS = {
    "fwfm": (lambda x: fwfm(x), "Recopt>DotInteraction"),
    "fwfm_shrunk_slices": (lambda x: fwfm(x, field=lambda x, i: x[:, i, :]), "Recopt>DotInteraction"),
    "fwfm_unstacked_fields": (lambda x: fwfm(x, field=lambda x, i: tf.unstack(x, axis=1)[i]), "Recopt>DotInteraction"),
    "fefm": (lambda x: fefm(x), "Recopt>BilinearInteraction"),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_field_dots_fuse_with_parity(form):
    fn, op = FORMS[form]
    ops, _ = _optimize(fn)
    assert ops.count(op) == 1, ops
    assert "BatchMatMulV2" not in ops and "AddN" not in ops and "Recopt>FusedMLP" not in ops, ops


NEAR_MISSES = {
    "strength_from_the_input": (lambda x: fwfm(x, strength=lambda x: x[:, 0, :1]),
                                "does not scale its dot product by a constant"),
    "dot_used_elsewhere": (lambda x: _fwfm_and_one_dot(x), "also used outside the pair dot products"),
    "activated_projection": (lambda x: fefm(x, project=lambda v, w: tf.nn.relu(tf.matmul(v, w))),
                             "is not one fp32 linear projection"),
}


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_misses_stay_stock_with_a_reason(case):
    import re
    fn, reason = NEAR_MISSES[case]
    ops, skips = _optimize(fn)
    assert "Recopt>BilinearInteraction" not in ops and "Recopt>DotInteraction" not in ops, ops
    assert any(re.search(reason, why) for why in skips), skips
