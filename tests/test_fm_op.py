"""Recopt>FactorizationMachine against its pure-TF reference (DeepCTR's FM
layer and NFM's BiInteractionPooling)."""
import numpy as np
import pytest
import tensorflow as tf

from tests.isa_util import ISAS, assert_script_passes
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


_SCRIPT = """
import numpy as np, tensorflow as tf, tf_recopt
from tf_recopt.ops import reference
ops = tf_recopt.load_ops()
rng = np.random.default_rng(5)
for f, k in [(26, 8), (3, 1), (9, 17), (39, 16), (5, 40)]:
    x = rng.standard_normal((37, f, k)).astype(np.float32)
    for reduce in (True, False):
        got = ops.recopt_factorization_machine(x, reduce=reduce, scale=0.5).numpy()
        want = reference.factorization_machine(tf.constant(x), reduce, 0.5).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * f * k)
print("ok")
"""


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_path_matches(isa):
    """k in 4-, 8- and 16-lane vectors with tails."""
    assert_script_passes(_SCRIPT, isa)
