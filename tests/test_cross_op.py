"""Recopt>CrossNetwork against its pure-TF reference (DeepCTR's CrossNet,
vector parameterisation)."""
import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference

RNG = np.random.default_rng(47)


@pytest.mark.parametrize("batch", [0, 1, 7, 513])
@pytest.mark.parametrize("dim, layers", [(1, 1), (8, 2), (221, 3), (33, 6)])
def test_matches_reference(ops, batch, dim, layers):
    x0 = RNG.standard_normal((batch, dim)).astype(np.float32)
    w = (RNG.standard_normal((layers, dim)) / np.sqrt(dim)).astype(np.float32)
    c = RNG.standard_normal(layers).astype(np.float32)
    b = RNG.standard_normal((layers, dim)).astype(np.float32)
    got = ops.recopt_cross_network(x0, w, c, b).numpy()
    want = reference.cross_network(tf.constant(x0), w, c, b).numpy()
    assert got.shape == want.shape == (batch, dim)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_nan_stays_in_its_example(ops):
    x0 = RNG.standard_normal((3, 8)).astype(np.float32)
    x0[1, 2] = np.nan
    w, c, b = np.ones((2, 8), np.float32), np.zeros(2, np.float32), np.zeros((2, 8), np.float32)
    got = ops.recopt_cross_network(x0, w, c, b).numpy()
    assert np.isnan(got[1]).all() and np.isfinite(got[[0, 2]]).all()


def test_bad_shapes_name_the_input(ops):
    x0 = np.ones((2, 8), np.float32)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="kernels|Dimensions"):
        ops.recopt_cross_network(x0, np.ones((2, 4), np.float32), np.zeros(2, np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="biases"):
        ops.recopt_cross_network(x0, np.ones((2, 8), np.float32), np.zeros(2, np.float32), np.zeros((3, 8), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="kernel_bias"):
        ops.recopt_cross_network(x0, np.ones((2, 8), np.float32), np.zeros(3, np.float32), np.zeros((2, 8), np.float32))
