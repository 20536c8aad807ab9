"""Recopt>DotInteraction against its pure-TF reference (BatchMatMul +
reshape + gather, the subgraph it replaces)."""
import numpy as np
import pytest
import tensorflow as tf

from tests.isa_util import ISAS, assert_script_passes
from tf_recopt.ops import reference

RNG = np.random.default_rng(5)


def _lower(f, diagonal=False):
    rows, cols = np.tril_indices(f, 0 if diagonal else -1)
    return (rows * f + cols).tolist()


def _check(ops, x, indices):
    got = ops.recopt_dot_interaction(x, [], num_features=x.shape[1], indices=indices).numpy()
    want = reference.dot_interaction(tf.constant(x), indices).numpy()
    assert got.shape == want.shape == (x.shape[0], len(indices))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(x.shape[2]))


@pytest.mark.parametrize("batch", [0, 1, 7, 513])
@pytest.mark.parametrize("f, d", [(1, 4), (2, 1), (5, 7), (27, 64), (9, 130)])
def test_lower_triangle_matches(ops, batch, f, d):
    x = RNG.standard_normal((batch, f, d)).astype(np.float32)
    _check(ops, x, _lower(f))
    _check(ops, x, _lower(f, diagonal=True))


def test_any_constant_selection_in_any_order(ops):
    x = RNG.standard_normal((4, 6, 16)).astype(np.float32)
    _check(ops, x, [35, 0, 7, 7, 30, 5, 1])   # upper and lower, diagonal, repeats
    _check(ops, x, [])


def _skip_gather(f, diagonal):
    """tfrs' skip_gather layout: all F*F columns, the upper triangle zeroed."""
    keep = np.tril(np.ones((f, f), bool), 0 if diagonal else -1).ravel()
    return [i if k else -1 for i, k in enumerate(keep)]


@pytest.mark.parametrize("batch", [0, 1, 7, 513])
@pytest.mark.parametrize("f, d", [(1, 4), (5, 7), (27, 64)])
def test_zero_columns_match(ops, batch, f, d):
    x = RNG.standard_normal((batch, f, d)).astype(np.float32)
    _check(ops, x, _skip_gather(f, diagonal=False))
    _check(ops, x, _skip_gather(f, diagonal=True))
    _check(ops, x, [-1])
    _check(ops, x, [-1, 0, -1, -1])


def test_zero_columns_stay_zero_beside_nan_and_inf(ops):
    """tf.where(upper, 0, x x^T) gives exact zeros even where x x^T is NaN."""
    x = np.full((2, 3, 4), np.nan, np.float32)
    x[1] = np.inf
    got = ops.recopt_dot_interaction(x, [], num_features=3, indices=_skip_gather(3, False)).numpy()
    zero = np.array(_skip_gather(3, False)) == -1
    assert np.all(got[:, zero] == 0.0) and not np.signbit(got[:, zero]).any()
    assert np.isnan(got[0, ~zero]).all() and np.isinf(got[1, ~zero]).all()


def test_nan_and_inf_propagate_like_matmul(ops):
    x = RNG.standard_normal((3, 4, 8)).astype(np.float32)
    x[1, 2, 3] = np.nan
    x[2, 0, 0] = np.inf
    got = ops.recopt_dot_interaction(x, [], num_features=4, indices=_lower(4)).numpy()
    want = reference.dot_interaction(tf.constant(x), _lower(4)).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


def test_bad_indices_and_shapes_are_named(ops):
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=r"indices\[1\] = 9 is not in \[0, 9\)"):
        ops.recopt_dot_interaction(x, [], num_features=3, indices=[0, 9])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=r"indices\[0\] = -2 is not in"):
        ops.recopt_dot_interaction(x, [], num_features=3, indices=[-2])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="3"):
        ops.recopt_dot_interaction(np.zeros((2, 4, 4), np.float32), [], num_features=3, indices=[0])


@pytest.mark.parametrize("dense_first", [True, False])
@pytest.mark.parametrize("batch, k", [(0, 5), (1, 13), (300, 64), (4, 0)])
def test_dense_concat(ops, dense_first, batch, k):
    """DLRM's concat([dense, interactions], 1), written by the op in place."""
    x = RNG.standard_normal((batch, 27, 16)).astype(np.float32)
    dense = RNG.standard_normal((batch, k)).astype(np.float32)
    got = ops.recopt_dot_interaction(x, [dense], num_features=27, indices=_lower(27),
                                     dense_first=dense_first).numpy()
    want = reference.dot_interaction(tf.constant(x), _lower(27), dense, dense_first).numpy()
    assert got.shape == want.shape == (batch, k + 351)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_dense_of_another_batch_is_named(ops):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="dense must be"):
        ops.recopt_dot_interaction(np.zeros((2, 3, 4), np.float32), [np.zeros((3, 5), np.float32)], num_features=3,
                                   indices=[3])


_ISA_SCRIPT = """
import numpy as np, tensorflow as tf, tf_recopt
from tf_recopt.ops import reference
ops = tf_recopt.load_ops()
rng = np.random.default_rng(4)
for f, d in [(26, 8), (5, 1), (37, 16), (17, 3), (27, 64)]:
    rows, cols = np.tril_indices(f, -1)
    for indices in [(rows * f + cols).tolist(), [f * f - 1, 0, -1, 3, 3]]:
        x = rng.standard_normal((9, f, d)).astype(np.float32)
        got = ops.recopt_dot_interaction(x, [], num_features=f, indices=indices).numpy()
        want = reference.dot_interaction(tf.constant(x), indices).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.sqrt(d))
print("ok")
"""


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_path_matches(isa):
    """The narrow-field path (d <= 16, pairs from the transposed Gram rows)
    and the score-kernel path, on 4-, 8- and 16-lane vectors."""
    assert_script_passes(_ISA_SCRIPT, isa)
