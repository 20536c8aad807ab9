"""Recopt>FactorizationMachine against its pure-TF reference (DeepCTR's FM
layer and NFM's BiInteractionPooling)."""
import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference

RNG = np.random.default_rng(41)


@pytest.mark.parametrize("batch", [0, 1, 7, 513])
@pytest.mark.parametrize("f, k", [(1, 1), (2, 8), (26, 8), (39, 16), (5, 33)])
@pytest.mark.parametrize("reduce", [True, False])
def test_matches_reference(ops, batch, f, k, reduce):
    x = RNG.standard_normal((batch, f, k)).astype(np.float32)
    got = ops.recopt_factorization_machine(x, reduce=reduce, scale=0.5).numpy()
    want = reference.factorization_machine(tf.constant(x), reduce, 0.5).numpy()
    assert got.shape == want.shape == ((batch, 1) if reduce else (batch, 1, k))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * f * k)


def test_scale_and_nan_inf(ops):
    x = RNG.standard_normal((4, 6, 8)).astype(np.float32)
    x[1, 2, 3] = np.nan
    x[2, 0, 0] = np.inf
    for reduce in (True, False):
        got = ops.recopt_factorization_machine(x, reduce=reduce, scale=-2.0).numpy()
        want = reference.factorization_machine(tf.constant(x), reduce, -2.0).numpy()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-4)


def test_rank_is_checked(ops):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank|x must be"):
        ops.recopt_factorization_machine(np.ones((2, 8), np.float32))
