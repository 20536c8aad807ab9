"""Recopt>BilinearInteraction against its pure-TF reference (per-pair
tensordot, multiply, concat: DeepCTR's BilinearInteraction in its three
bilinear_types)."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.isa_util import ISAS, assert_script_passes
from tf_recopt.ops import reference

RNG = np.random.default_rng(17)


def _pairs(f):
    rows, cols = zip(*itertools.combinations(range(f), 2)) if f > 1 else ((), ())
    return list(rows), list(cols)


def _weight_index(kind, rows):
    if kind == "interaction":
        return list(range(len(rows)))
    if kind == "each":
        return list(rows)
    return [0] * len(rows)


def _check(ops, x, rows, cols, weight_index, groups, biased=True):
    d = x.shape[2]
    w = RNG.standard_normal((groups, d, d)).astype(np.float32)
    b = (RNG.standard_normal((groups, d)) if biased else np.zeros((groups, d))).astype(np.float32)
    got = ops.recopt_bilinear_interaction(x, w, b, rows=rows, cols=cols, weight_index=weight_index).numpy()
    want = reference.bilinear_interaction(tf.constant(x), w, b, rows, cols, weight_index).numpy()
    assert got.shape == want.shape == (x.shape[0], len(rows), d)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * d)
    return got


def _deepctr(x, w_list, kind):
    """DeepCTR 0.9.4 BilinearInteraction.call on tf.split(x) fields."""
    inputs = tf.split(x, x.shape[1], axis=1)
    n = len(inputs)
    if kind == "interaction":
        p = [tf.multiply(tf.tensordot(v[0], w, axes=(-1, 0)), v[1])
             for v, w in zip(itertools.combinations(inputs, 2), w_list)]
    else:
        vidots = [tf.tensordot(inputs[i], w_list[i if kind == "each" else 0], axes=(-1, 0)) for i in range(n - 1)]
        p = [tf.multiply(vidots[i], inputs[j]) for i, j in itertools.combinations(range(n), 2)]
    return tf.concat(p, axis=1)


@pytest.mark.parametrize("batch", [0, 1, 31, 33, 513])
@pytest.mark.parametrize("f, d", [(2, 1), (5, 4), (26, 8), (9, 16), (6, 5), (4, 24)])
def test_every_pair_matches(ops, batch, f, d):
    """Block tails (32 examples), fixed (4, 8, 16) and any-width dims."""
    x = RNG.standard_normal((batch, f, d)).astype(np.float32)
    rows, cols = _pairs(f)
    _check(ops, x, rows, cols, list(range(len(rows))), len(rows))


@pytest.mark.parametrize("kind", ["interaction", "each", "all"])
def test_deepctr_bilinear_types(ops, kind):
    f, d = 6, 8
    x = RNG.standard_normal((19, f, d)).astype(np.float32)
    rows, cols = _pairs(f)
    groups = {"interaction": len(rows), "each": f - 1, "all": 1}[kind]
    w = RNG.standard_normal((groups, d, d)).astype(np.float32)
    got = ops.recopt_bilinear_interaction(x, w, np.zeros((groups, d), np.float32), rows=rows, cols=cols,
                                          weight_index=_weight_index(kind, rows)).numpy()
    want = _deepctr(tf.constant(x), list(w), kind).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_any_pair_order_with_repeats(ops):
    x = RNG.standard_normal((3, 5, 8)).astype(np.float32)
    _check(ops, x, [4, 0, 2, 2, 3], [0, 0, 1, 1, 4], [1, 0, 2, 2, 1], 3)


def test_no_pairs(ops):
    x = RNG.standard_normal((3, 5, 8)).astype(np.float32)
    got = ops.recopt_bilinear_interaction(x, np.ones((1, 8, 8), np.float32), np.zeros((1, 8), np.float32),
                                          rows=[], cols=[], weight_index=[]).numpy()
    assert got.shape == (3, 0, 8)


def test_nan_and_inf_stay_in_their_pairs(ops):
    x = RNG.standard_normal((2, 4, 8)).astype(np.float32)
    x[0, 1, 2] = np.nan
    x[1, 3, 0] = np.inf
    rows, cols = _pairs(4)
    w = RNG.standard_normal((len(rows), 8, 8)).astype(np.float32)
    b = np.zeros((len(rows), 8), np.float32)
    idx = list(range(len(rows)))
    got = ops.recopt_bilinear_interaction(x, w, b, rows=rows, cols=cols, weight_index=idx).numpy()
    want = reference.bilinear_interaction(tf.constant(x), w, b, rows, cols, idx).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, cols, index, message", [
    ([0, 4], [1, 2], [0, 0], r"rows\[1\] = 4 is not in \[0, 4\)"),
    ([0, 1], [1, -2], [0, 0], r"cols\[1\] = -2 is not in \[0, 4\)"),
    ([0, 1], [1, 2], [0, 3], r"weight_index\[1\] = 3 is not in \[0, 2\)"),
    ([0, 1], [1, 2], [0], "one entry per pair"),
])
def test_bad_attrs_name_the_entry(ops, rows, cols, index, message):
    x = np.ones((2, 4, 8), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        ops.recopt_bilinear_interaction(x, np.ones((2, 8, 8), np.float32), np.zeros((2, 8), np.float32),
                                        rows=rows, cols=cols, weight_index=index)


def test_bad_shapes_name_the_input(ops):
    x = np.ones((2, 4, 8), np.float32)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="weights|Dimensions"):
        ops.recopt_bilinear_interaction(x, np.ones((2, 8, 4), np.float32), np.zeros((2, 8), np.float32),
                                        rows=[0], cols=[1], weight_index=[0])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="biases|Dimensions"):
        ops.recopt_bilinear_interaction(x, np.ones((2, 8, 8), np.float32), np.zeros((3, 8), np.float32),
                                        rows=[0], cols=[1], weight_index=[0])


_SCRIPT = """
import itertools, numpy as np, tensorflow as tf, tf_recopt
from tf_recopt.ops import reference
ops = tf_recopt.load_ops()
rng = np.random.default_rng(3)
for f, d in [(26, 8), (7, 5), (9, 16), (5, 4), (4, 40)]:
    rows, cols = map(list, zip(*itertools.combinations(range(f), 2)))
    idx = list(range(len(rows)))
    x = rng.standard_normal((37, f, d)).astype(np.float32)
    w = rng.standard_normal((len(rows), d, d)).astype(np.float32)
    b = rng.standard_normal((len(rows), d)).astype(np.float32)
    got = ops.recopt_bilinear_interaction(x, w, b, rows=rows, cols=cols, weight_index=idx).numpy()
    want = reference.bilinear_interaction(tf.constant(x), w, b, rows, cols, idx).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
print("ok")
"""


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_path_matches(isa):
    """4-, 8- and 16-lane output chunks (a path the CPU lacks falls back to the best it has)."""
    assert_script_passes(_SCRIPT, isa)
