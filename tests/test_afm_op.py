"""Recopt>AfmPooling against its pure-TF reference (gather, multiply,
tensordot MLP, softmax over the pairs, weighted sum: DeepCTR's AFMLayer)."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.isa_util import ISAS, assert_script_passes
from tf_recopt.ops import reference

RNG = np.random.default_rng(11)


def _pairs(f):
    rows, cols = zip(*itertools.combinations(range(f), 2)) if f > 1 else ((), ())
    return list(rows), list(cols)


def _weights(d, units, scale=1.0):
    return (RNG.standard_normal((d, units)).astype(np.float32) * scale,
            RNG.standard_normal(units).astype(np.float32),
            RNG.standard_normal((units, 1)).astype(np.float32))


def _check(ops, x, rows, cols, weights, activation="relu", alpha=0.0, rtol=1e-5):
    got = ops.recopt_afm_pooling(x, *weights, rows=rows, cols=cols, activation=activation, alpha=alpha).numpy()
    want = reference.afm_pooling(tf.constant(x), *weights, rows, cols, activation, alpha).numpy()
    assert got.shape == want.shape == (x.shape[0], x.shape[2])
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 10)
    return got


@pytest.mark.parametrize("batch", [0, 1, 7, 513])
@pytest.mark.parametrize("f, d, units", [(2, 1, 1), (5, 4, 8), (26, 8, 8), (13, 16, 20), (30, 3, 33)])
def test_all_pairs_match(ops, batch, f, d, units):
    """Pair counts that fill 16-lane blocks and leave tails; units padded to 8."""
    x = RNG.standard_normal((batch, f, d)).astype(np.float32)
    _check(ops, x, *_pairs(f), _weights(d, units))


@pytest.mark.parametrize("activation", ["relu", "linear", "sigmoid", "tanh", "leaky_relu", "softplus", "gelu"])
def test_each_activation(ops, activation):
    x = RNG.standard_normal((33, 9, 8)).astype(np.float32)
    _check(ops, x, *_pairs(9), _weights(8, 12), activation=activation, alpha=0.3)


def test_any_pair_order_with_repeats_and_self_pairs(ops):
    x = RNG.standard_normal((5, 6, 8)).astype(np.float32)
    _check(ops, x, [5, 0, 3, 3, 2], [1, 0, 4, 4, 5], _weights(8, 8))


def test_no_pairs_gives_zeros(ops):
    x = RNG.standard_normal((3, 4, 8)).astype(np.float32)
    got = ops.recopt_afm_pooling(x, *_weights(8, 8), rows=[], cols=[]).numpy()
    np.testing.assert_array_equal(got, np.zeros((3, 8), np.float32))


def test_one_dominant_pair_takes_all_the_weight(ops):
    """Scores ~1e3 apart: the softmax must subtract the max, not overflow."""
    x = np.ones((2, 3, 4), np.float32)
    x[:, 2] = 30.0
    w = np.eye(4, dtype=np.float32)
    got = _check(ops, x, [0, 0, 1], [1, 2, 2], (w, np.zeros(4, np.float32), np.ones((4, 1), np.float32)))
    np.testing.assert_allclose(got, np.full((2, 4), 30.0), rtol=1e-6)


def test_nan_and_inf_rows_follow_tensorflow(ops):
    """A NaN anywhere in an example makes that example's output NaN, as
    TensorFlow's softmax does; other examples are untouched."""
    x = RNG.standard_normal((4, 5, 8)).astype(np.float32)
    x[1, 2, 3] = np.nan
    x[2, 0, 0] = np.inf
    weights = _weights(8, 8)
    rows, cols = _pairs(5)
    got = ops.recopt_afm_pooling(x, *weights, rows=rows, cols=cols).numpy()
    want = reference.afm_pooling(tf.constant(x), *weights, rows, cols).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1]).all()
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


def test_projection_may_be_a_vector(ops):
    x = RNG.standard_normal((3, 4, 8)).astype(np.float32)
    w, b, h = _weights(8, 8)
    rows, cols = _pairs(4)
    np.testing.assert_array_equal(ops.recopt_afm_pooling(x, w, b, h.reshape(-1), rows=rows, cols=cols).numpy(),
                                  ops.recopt_afm_pooling(x, w, b, h, rows=rows, cols=cols).numpy())


@pytest.mark.parametrize("rows, cols, message", [
    ([0, 4], [1, 2], r"rows\[1\] = 4 is not a field in \[0, 4\)"),
    ([0, 1], [1, -1], r"cols\[1\] = -1 is not a field"),
    ([0, 1], [1], "one entry per pair"),
])
def test_bad_pairs_name_the_index(ops, rows, cols, message):
    x = np.ones((2, 4, 8), np.float32)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        ops.recopt_afm_pooling(x, *_weights(8, 8), rows=rows, cols=cols)


def test_bad_shapes_name_the_input(ops):
    x = np.ones((2, 4, 8), np.float32)
    w, b, h = _weights(8, 8)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="attention_w"):
        ops.recopt_afm_pooling(x, w[:4], b, h, rows=[0], cols=[1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="projection_h"):
        ops.recopt_afm_pooling(x, w, b, h[:4], rows=[0], cols=[1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="attention_b"):
        ops.recopt_afm_pooling(x, w, b[:3], h, rows=[0], cols=[1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown activation 'swoosh'"):
        ops.recopt_afm_pooling(x, w, b, h, rows=[0], cols=[1], activation="swoosh")


_SCRIPT = """
import itertools, numpy as np, tensorflow as tf, tf_recopt
from tf_recopt.ops import reference
ops = tf_recopt.load_ops()
rng = np.random.default_rng(3)
for f, d, units in [(26, 8, 8), (7, 5, 9), (17, 16, 16)]:
    rows, cols = map(list, zip(*itertools.combinations(range(f), 2)))
    x = rng.standard_normal((37, f, d)).astype(np.float32)
    w, b, h = (rng.standard_normal(s).astype(np.float32) for s in [(d, units), (units,), (units, 1)])
    got = ops.recopt_afm_pooling(x, w, b, h, rows=rows, cols=cols).numpy()
    want = reference.afm_pooling(tf.constant(x), w, b, h, rows, cols).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
print("ok")
"""


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_path_matches(isa):
    """4-, 8- and 16-lane pair blocks (a path the CPU lacks falls back to the best it has)."""
    assert_script_passes(_SCRIPT, isa)
