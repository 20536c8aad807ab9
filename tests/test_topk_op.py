"""Recopt>TopK against tf.math.top_k (TopKV2): values and indices must match
exactly, ties to the lower index, NaN rows as TopKV2 orders them."""
import numpy as np
import pytest
import tensorflow as tf

from tests.isa_util import ISAS, assert_script_passes

BIG = 1 << 20          # long enough for the sampled path, split over the pool
SAMPLED_MIN = 16384    # core/topk.h kTopKSampledMinCols


def _both(ops, x, k, sorted=True):
    want = tf.math.top_k(x, k, sorted=sorted)
    got = ops.recopt_top_k(x, k, sorted=sorted)
    return (want[0].numpy(), want[1].numpy()), (got[0].numpy(), got[1].numpy())


def _assert_same(ops, x, k, sorted=True):
    (wv, wi), (gv, gi) = _both(ops, x, k, sorted)
    assert gi.dtype == np.int32 and gv.dtype == wv.dtype
    if sorted:
        np.testing.assert_array_equal(gi, wi)
        np.testing.assert_array_equal(gv, wv)
    else:  # TopKV2 leaves the order unspecified; the selected set is not
        np.testing.assert_array_equal(np.sort(gi, axis=-1), np.sort(wi, axis=-1))
        flat_x = np.asarray(x).reshape(-1, np.asarray(x).shape[-1])
        np.testing.assert_array_equal(gv.reshape(len(flat_x), -1),
                                      np.take_along_axis(flat_x, gi.reshape(len(flat_x), -1), 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("n,k", [(1, 1), (7, 3), (1000, 1000), (SAMPLED_MIN, 1), (SAMPLED_MIN, 500),
                                 (BIG, 1000), (BIG, 16), (SAMPLED_MIN + 37, 10), (100_003, 100)])
def test_random_rows_match(ops, dtype, n, k):
    rng = np.random.default_rng(n + k)
    if np.issubdtype(dtype, np.integer):
        x = rng.integers(-1000, 1000, size=(3, n)).astype(dtype)  # many ties
    else:
        x = rng.standard_normal((3, n)).astype(dtype)
    _assert_same(ops, x, k)


@pytest.mark.parametrize("sorted", [True, False])
def test_unsorted_selects_the_same_set(ops, sorted):
    x = np.random.default_rng(1).standard_normal((4, 200_000)).astype(np.float32)
    _assert_same(ops, x, 700, sorted=sorted)


@pytest.mark.parametrize("shape", [(BIG,), (2, 3, 50_000), (1, BIG), (0, BIG), (5, 0)])
def test_ranks_and_empty_shapes(ops, shape):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    k = 0 if shape[-1] == 0 else 100
    (wv, wi), (gv, gi) = _both(ops, x, k)
    assert gv.shape == wv.shape == shape[:-1] + (k,)
    np.testing.assert_array_equal(gi, wi)
    np.testing.assert_array_equal(gv, wv)


@pytest.mark.parametrize("k", [0, 1, 999])
def test_k_zero_one_and_large(ops, k):
    x = np.random.default_rng(3).standard_normal((2, 100_000)).astype(np.float32)
    _assert_same(ops, x, k)


@pytest.mark.parametrize("name", ["all_equal", "ascending", "descending", "two_values", "signed_zeros",
                                  "infinities"])
def test_adversarial_rows(ops, name):
    n = 300_000
    rng = np.random.default_rng(4)
    x = {
        "all_equal": np.full(n, 0.5),
        "ascending": np.arange(n, dtype=np.float64),
        "descending": -np.arange(n, dtype=np.float64),
        "two_values": rng.integers(0, 2, n).astype(np.float64),
        "signed_zeros": np.where(rng.random(n) < 0.5, -0.0, 0.0),
        "infinities": np.where(rng.random(n) < 0.01, np.inf, np.where(rng.random(n) < 0.5, -np.inf, 1.0)),
    }[name].astype(np.float32)
    for k in (1, 10, 1000):
        _assert_same(ops, x[None, :], k)
    if name == "signed_zeros":  # -0.0 == 0.0: index order decides, and the sign survives
        (_, _), (gv, gi) = _both(ops, x, 1000)
        np.testing.assert_array_equal(np.signbit(gv), np.signbit(x[gi]))


@pytest.mark.parametrize("where", ["sampled_region", "everywhere", "one_late", "all"])
@pytest.mark.parametrize("k", [1, 2, 50])
def test_nan_rows_follow_topkv2(ops, where, k):
    n = 100_000
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, n)).astype(np.float32)
    if where == "sampled_region":
        x[0, :16] = np.nan
    elif where == "everywhere":
        x[:, rng.integers(0, n, 50)] = np.nan
    elif where == "one_late":
        x[1, n - 3] = np.nan  # found by the scan, not by the sample
    else:
        x[:] = np.nan
    _assert_same(ops, x, k)


def _sampled_positions(n, k):
    """Mirror of TopKSample::Take's positions (core/topk.cc): used to build a
    row whose sample overestimates the threshold, so the retry path runs."""
    want = min(n, max(k, 8192))
    groups = -(-want // 16)
    stride = n // groups
    mask = (1 << 64) - 1
    positions = []
    for g in range(groups):
        z = (g + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        start = g * stride + (z % (stride - 16 + 1) if stride > 16 else 0)
        positions += range(start, min(n, start + 16))
    return np.array(positions)


# One long row is scanned in chunks over the pool (on 2+ cores); a batch of
# rows gives each thread whole rows.
@pytest.mark.parametrize("rows,n", [(1, 200_000), (1, BIG), (3, 200_000)], ids=["row", "chunked_row", "rows"])
def test_short_count_retries_with_lower_threshold(ops, rows, n):
    k = 1000
    x = np.zeros((rows, n), np.float32)
    pos = _sampled_positions(n, k)
    # Only sampled elements are large: the first threshold (about the 84th
    # sample value) passes far fewer than k elements.
    for r in range(rows):
        x[r, pos] = 1.0 + np.random.default_rng(6 + r).permutation(len(pos)).astype(np.float32)
    _assert_same(ops, x, k)
    assert set(tf.math.top_k(x, k)[1].numpy().ravel()) <= set(pos)


def test_nan_late_in_a_chunked_row(ops):
    x = np.random.default_rng(8).standard_normal(BIG).astype(np.float32)
    x[BIG - 5] = np.nan   # in the last chunk, after the other chunk's scan found none
    _assert_same(ops, x, 100)


def test_batch_of_rows_sharded(ops):
    x = np.random.default_rng(7).standard_normal((64, 40_000)).astype(np.float32)
    _assert_same(ops, x, 64)


def test_errors_match_topkv2(ops):
    x = tf.zeros([2, 5])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least k columns. Had 5, needed 6"):
        ops.recopt_top_k(x, 6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="need k >= 0, got -1"):
        ops.recopt_top_k(x, -1)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="must be >= 1-D|rank"):
        ops.recopt_top_k(tf.constant(1.0), 1)


def test_inside_tf_function_infers_shape(ops):
    @tf.function(input_signature=[tf.TensorSpec([None, 50_000], tf.float32)])
    def f(x):
        v, i = ops.recopt_top_k(x, 10)
        assert v.shape.as_list() == [None, 10] and i.shape.as_list() == [None, 10]
        return v, i
    x = np.random.default_rng(8).standard_normal((3, 50_000)).astype(np.float32)
    np.testing.assert_array_equal(f(x)[1].numpy(), tf.math.top_k(x, 10)[1].numpy())


# ---- short sorted rows (kernels/topk_plain.h ShortSortedRow: rank counting
# on the ISA kernels for float32, insertion for the other types) ----------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("n", [2, 13, 16, 17, 26, 64])
def test_short_rows_match_with_ties(ops, dtype, n):
    rng = np.random.default_rng(n)
    x = rng.integers(-3, 4, (257, n)).astype(dtype)   # many ties: index order decides
    for k in sorted({2, 3, n // 2 + 1, n}):
        if k <= n:
            _assert_same(ops, x, k)


def test_short_rows_signed_zeros_and_infinities(ops):
    rng = np.random.default_rng(6)
    x = np.where(rng.random((300, 26)) < 0.5, -0.0, 0.0).astype(np.float32)
    x[::7, 3] = np.inf
    x[::5, 9] = -np.inf
    (_, _), (gv, gi) = _both(ops, x, 13)
    _assert_same(ops, x, 13)
    np.testing.assert_array_equal(np.signbit(gv), np.signbit(np.take_along_axis(x, gi, 1)))


def test_short_rows_with_nan_take_topkv2s_answer(ops):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 26)).astype(np.float32)
    x[3, 5] = np.nan
    x[10, :] = np.nan
    x[20, [0, 25]] = np.nan
    for k in (2, 13, 26):
        _assert_same(ops, x, k)


_SHORT_ISA_SCRIPT = """
import numpy as np, tensorflow as tf, tf_recopt
ops = tf_recopt.load_ops()
rng = np.random.default_rng(8)
for n in (2, 5, 16, 26, 33, 64):
    x = rng.integers(-4, 5, (100, n)).astype(np.float32)
    for k in sorted({2, n // 2 + 1, n}):
        want = tf.math.top_k(x, k)
        got = ops.recopt_top_k(x, k)
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
        np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
print("ok")
"""


@pytest.mark.parametrize("isa", ISAS)
def test_short_rows_on_every_isa_path(isa):
    assert_script_passes(_SHORT_ISA_SCRIPT, isa)
