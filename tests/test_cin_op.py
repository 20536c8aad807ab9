"""Recopt>CinProducts against its pure-TF reference and DeepCTR's own
split/pack/matmul/transpose spelling of the same products."""
import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference

RNG = np.random.default_rng(61)


def _deepctr_rows(x0, h):
    """The rows DeepCTR's CIN.call hands its conv1d, flattened to [B*D, F0*H]."""
    d = x0.shape[-1]
    m = tf.matmul(tf.split(x0, d * [1], 2), tf.split(h, d * [1], 2), transpose_b=True)
    o = tf.transpose(tf.reshape(m, [d, -1, x0.shape[1] * h.shape[1]]), [1, 0, 2])
    return tf.reshape(o, [-1, x0.shape[1] * h.shape[1]])


@pytest.mark.parametrize("batch", [0, 1, 5, 300])
@pytest.mark.parametrize("f0, h, d", [(1, 1, 1), (26, 128, 8), (7, 3, 16), (5, 33, 3)])
def test_matches_reference(ops, batch, f0, h, d):
    x0 = RNG.standard_normal((batch, f0, d)).astype(np.float32)
    hidden = RNG.standard_normal((batch, h, d)).astype(np.float32)
    got = ops.recopt_cin_products(x0, hidden).numpy()
    want = reference.cin_products(x0, hidden).numpy()
    assert got.shape == want.shape == (batch * d, f0 * h)
    np.testing.assert_array_equal(got, want)   # one product per element: exact
    if batch:
        np.testing.assert_array_equal(got, _deepctr_rows(tf.constant(x0), tf.constant(hidden)).numpy())


def test_nan_and_inf_stay_in_their_products(ops):
    x0 = np.ones((3, 4, 2), np.float32)
    hidden = np.ones((3, 5, 2), np.float32)
    x0[1, 2, 0] = np.nan
    hidden[2, 0, 1] = np.inf
    got = ops.recopt_cin_products(x0, hidden).numpy().reshape(3, 2, 4, 5)
    assert np.isnan(got[1, 0, 2]).all() and np.isinf(got[2, 1, :, 0]).all()
    assert np.isfinite(np.delete(got.reshape(-1), np.flatnonzero(~np.isfinite(got.reshape(-1))))).all()
    assert (~np.isfinite(got)).sum() == 5 + 4


def test_bad_shapes_name_the_input(ops):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="hidden|Dimensions"):
        ops.recopt_cin_products(np.ones((2, 4, 8), np.float32), np.ones((2, 4, 7), np.float32))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="hidden|Dimensions"):
        ops.recopt_cin_products(np.ones((2, 4, 8), np.float32), np.ones((3, 4, 8), np.float32))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="x0|rank"):
        ops.recopt_cin_products(np.ones((2, 4), np.float32), np.ones((2, 4, 8), np.float32))
