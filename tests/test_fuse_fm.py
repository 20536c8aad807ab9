"""fuse_fm: the factorization-machine term in DeepCTR's FM and NFM's
BiInteractionPooling spellings (and hand-written variants) becomes one
Recopt>FactorizationMachine with the same answers; near misses stay stock."""
import numpy as np
import pytest
import tensorflow as tf

from tests.graph_util import optimize_with_parity

RNG = np.random.default_rng(43)
F, K = 9, 8
X = RNG.standard_normal((11, F, K)).astype(np.float32)
XSPEC = tf.TensorSpec([None, F, K], tf.float32)


def deepctr_fm(x):
    """DeepCTR 0.9.4 FM.call."""
    square_of_sum = tf.square(tf.reduce_sum(x, axis=1, keepdims=True))
    sum_of_square = tf.reduce_sum(x * x, axis=1, keepdims=True)
    return 0.5 * tf.reduce_sum(square_of_sum - sum_of_square, axis=2, keepdims=False)


def bi_interaction(x):
    """DeepCTR 0.9.4 BiInteractionPooling.call (NFM)."""
    square_of_sum = tf.square(tf.reduce_sum(x, axis=1, keepdims=True))
    sum_of_square = tf.reduce_sum(x * x, axis=1, keepdims=True)
    return 0.5 * (square_of_sum - sum_of_square)


def handwritten(x):
    s = tf.reduce_sum(x, axis=1, keepdims=True)
    return tf.reduce_sum(s * s - tf.reduce_sum(tf.pow(x, 2), axis=1, keepdims=True), axis=-1) / 2.0


def _optimize(fn):
    return optimize_with_parity(fn, [XSPEC], [X], "fuse_fm", rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fn, shape", [(deepctr_fm, (11, 1)), (bi_interaction, (11, 1, K)), (handwritten, (11, 1))])
def test_fm_forms_fuse_with_parity(fn, shape):
    ops, _ = _optimize(lambda x: fn(x) + 0.0)
    assert ops.count("Recopt>FactorizationMachine") == 1, ops
    assert not {"Square", "Sub", "Pow"} & set(ops), ops


def test_sum_of_squares_of_another_tensor_is_left_alone():
    def fn(x):
        y = tf.nn.relu(x)
        return tf.square(tf.reduce_sum(x, 1, keepdims=True)) - tf.reduce_sum(y * y, 1, keepdims=True)
    ops, skips = _optimize(fn)
    assert "Recopt>FactorizationMachine" not in ops, ops
    assert any("does not subtract the sum of squares" in why for why in skips), skips


def test_intermediate_used_elsewhere_is_left_alone():
    def fn(x):
        s = tf.reduce_sum(x, axis=1, keepdims=True)
        return 0.5 * (tf.square(s) - tf.reduce_sum(x * x, axis=1, keepdims=True)), s
    ops, skips = _optimize(fn)
    assert "Recopt>FactorizationMachine" not in ops, ops
    assert any("also used outside" in why for why in skips), skips
