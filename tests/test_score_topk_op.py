"""Recopt>ScoreTopK against tf.math.top_k(matmul(q, c, transpose_b=True))."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import retrieval

EMPTY = np.zeros([0], np.float32)


def _stock(q, c, k, scales=None, scale=1.0, bias=None):
    s = tf.matmul(q, tf.cast(c, tf.float32), transpose_b=True)
    if scales is not None and len(scales):
        s = s * scales[None, :]
    s = s * scale
    if bias is not None and len(bias):
        s = s + bias[None, :]
    v, i = tf.math.top_k(s, k)
    return v.numpy(), i.numpy(), s.numpy()


def _fused(ops, q, c, k, scales=EMPTY, bias=EMPTY, scale=1.0, layout="rows"):
    if layout == "blocks16":
        v, i = ops.recopt_score_top_k(q, retrieval.to_blocks(c), scales, bias, k, scale=scale,
                                      layout=layout, num_candidates=len(c))
    else:
        v, i = ops.recopt_score_top_k(q, c, scales, bias, k, scale=scale)
    return v.numpy(), i.numpy()


LAYOUTS = pytest.mark.parametrize("layout", retrieval.LAYOUTS)


def _assert_matches(want_v, want_i, got_v, got_i, scores):
    """Scores agree to fp32 rounding; an index may differ only where the
    stock scores tie within that rounding (the dot products sum in another order)."""
    np.testing.assert_allclose(got_v, want_v, rtol=1e-5, atol=1e-5)
    for row in range(len(want_i)):
        diff = want_i[row] != got_i[row]
        if diff.any():
            np.testing.assert_allclose(scores[row, got_i[row][diff]], scores[row, want_i[row][diff]],
                                       rtol=1e-5, atol=1e-5)
    # Sorted by score, and no candidate twice.
    assert (np.diff(got_v, axis=1) <= 0).all()
    assert all(len(set(r)) == len(r) for r in got_i)


@LAYOUTS
@pytest.mark.parametrize("batch", [1, 3, 8, 64])
@pytest.mark.parametrize("n,d,k", [(1, 4, 1), (1000, 16, 10), (100_003, 64, 500), (50_000, 33, 1000)])
def test_fp32_matches_matmul_top_k(ops, batch, n, d, k, layout):
    """Batches 1, 3 and 64 reach every query tile of the blocks16 kernel
    (8, 4, 2 and 1 queries on AVX-512); 100_003 ends in a partial block."""
    rng = np.random.default_rng(batch * n + d)
    q = rng.standard_normal((batch, d)).astype(np.float32)
    c = rng.standard_normal((n, d)).astype(np.float32)
    want_v, want_i, scores = _stock(q, c, k)
    got_v, got_i = _fused(ops, q, c, k, layout=layout)
    assert got_i.dtype == np.int32 and got_v.shape == (batch, k)
    _assert_matches(want_v, want_i, got_v, got_i, scores)


@LAYOUTS
@pytest.mark.parametrize("n", [20_000, 20_007])
def test_scale_bias_and_row_scales(ops, layout, n):
    rng = np.random.default_rng(1)
    q = rng.standard_normal((4, 32)).astype(np.float32)
    c = rng.standard_normal((n, 32)).astype(np.float32)
    scales = rng.uniform(0.5, 2, n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    bias[-3:] = 50.0  # the last candidates win: a partial block's scales and bias are read right
    want_v, want_i, scores = _stock(q, c, 100, scales=scales, scale=0.25, bias=bias)
    got_v, got_i = _fused(ops, q, c, 100, scales=scales, bias=bias, scale=0.25, layout=layout)
    assert set(range(n - 3, n)) <= set(got_i[0])
    _assert_matches(want_v, want_i, got_v, got_i, scores)


@LAYOUTS
@pytest.mark.parametrize("storage", ["bf16", "int8"])
@pytest.mark.parametrize("batch,d", [(8, 64), (1, 64), (3, 37), (2, 5), (21, 64)])
def test_compressed_storage_is_exact_for_its_own_values(ops, storage, batch, d, layout):
    """With bf16/int8 storage the op is exact for the dequantised matrix;
    recall against fp32 is what the pass reports. Odd batches and widths
    reach the single-query and scalar-tail paths of the widening loads;
    21 queries are split over threads in groups of 8, 8 and 5."""
    rng = np.random.default_rng(2)
    q = rng.standard_normal((batch, d)).astype(np.float32)
    c = rng.standard_normal((200_000, d)).astype(np.float32)
    stored, scales = retrieval.encode(c, storage)
    dequant = stored.astype(np.float32) * (scales[:, None] if len(scales) else 1.0)
    want_v, want_i, scores = _stock(q, dequant, 500)
    got_v, got_i = _fused(ops, q, stored, 500, scales=scales, layout=layout)
    np.testing.assert_allclose(got_v, want_v, rtol=1e-4, atol=1e-4)
    assert retrieval.recall_at_k(want_i, got_i) > 0.999
    fp32_i = _stock(q, c, 500)[1]
    assert retrieval.recall_at_k(fp32_i, got_i) > (0.98 if d >= 32 else 0.9)


# 2 queries: threads split the candidates; 20: they split the queries.
@LAYOUTS
@pytest.mark.parametrize("batch", [2, 20])
def test_ties_go_to_the_lower_index(ops, layout, batch):
    c = np.ones((30_000, 8), np.float32)
    c[::7] = 2.0
    q = np.ones((batch, 8), np.float32)
    want_v, want_i, _ = _stock(q, c, 1000)
    got_v, got_i = _fused(ops, q, c, 1000, layout=layout)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_v, want_v)


@LAYOUTS
@pytest.mark.parametrize("batch", [2, 20])
def test_nan_scores_follow_topkv2(ops, layout, batch):
    rng = np.random.default_rng(3)
    c = rng.integers(-3, 4, (5000, 8)).astype(np.float32)  # integer dot products: no rounding
    c[[10, 4000]] = np.nan
    q = rng.integers(-3, 4, (batch, 8)).astype(np.float32)
    q[1, 0] = q[-1, 0] = np.nan  # every score of queries 1 and the last is NaN
    for k in (1, 5, 100):
        want_v, want_i, _ = _stock(q, c, k)
        got_v, got_i = _fused(ops, q, c, k, layout=layout)
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_array_equal(got_v, want_v)


@LAYOUTS
@pytest.mark.parametrize("batch,n,k", [(0, 100, 5), (2, 100, 0), (2, 0, 0), (1, 5, 5), (3, 16, 16)])
def test_empty_and_k_equal_n(ops, batch, n, k, layout):
    rng = np.random.default_rng(4)
    q = rng.integers(-3, 4, (batch, 8)).astype(np.float32)
    c = rng.integers(-3, 4, (n, 8)).astype(np.float32)
    want_v, want_i, _ = _stock(q, c, k)
    got_v, got_i = _fused(ops, q, c, k, layout=layout)
    assert got_v.shape == want_v.shape == (batch, k)
    np.testing.assert_array_equal(got_i, want_i)


def test_errors_name_the_input(ops):
    q = np.zeros((2, 8), np.float32)
    c = np.zeros((10, 8), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least k columns. Had 10, needed 11"):
        ops.recopt_score_top_k(q, c, EMPTY, EMPTY, 11)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=r"candidates must be \[n, 8\]|Dimensions"):
        ops.recopt_score_top_k(q, np.zeros((10, 7), np.float32), EMPTY, EMPTY, 1)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="bias must be"):
        ops.recopt_score_top_k(q, c, EMPTY, np.zeros(3, np.float32), 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="int8 candidates need row_scales"):
        ops.recopt_score_top_k(q, c.astype(np.int8), EMPTY, EMPTY, 1)


def test_blocks16_errors_name_the_field(ops):
    q = np.zeros((2, 8), np.float32)
    blocks = retrieval.to_blocks(np.zeros((20, 8), np.float32))
    assert blocks.shape == (2, 8, 16)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="needs 1 blocks16 blocks|Dimension"):
        ops.recopt_score_top_k(q, blocks, EMPTY, EMPTY, 1, layout="blocks16", num_candidates=16)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="num_candidates >= 0"):
        ops.recopt_score_top_k(q, blocks, EMPTY, EMPTY, 1, layout="blocks16")
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=r"\[blocks, 8, 16\]|rank|Dimension"):
        ops.recopt_score_top_k(q, np.zeros((2, 8, 8), np.float32), EMPTY, EMPTY, 1, layout="blocks16",
                               num_candidates=20)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="bias must be"):
        ops.recopt_score_top_k(q, blocks, EMPTY, np.zeros(32, np.float32), 1, layout="blocks16", num_candidates=20)


def test_to_blocks_places_each_element():
    c = np.arange(37 * 3, dtype=np.float32).reshape(37, 3)
    b = retrieval.to_blocks(c)
    assert b.shape == (3, 3, 16) and b.flags.c_contiguous
    for j in range(37):
        np.testing.assert_array_equal(b[j // 16, :, j % 16], c[j])
    assert not b[2, :, 5:].any()  # the padding rows are zero
    assert retrieval.to_blocks(np.zeros((0, 4), np.int8)).shape == (0, 4, 16)
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        retrieval.to_blocks(np.zeros(5))


def test_quantize_int8_round_trip():
    c = np.array([[0.0, 0.0], [1.0, -0.5], [-254.0, 127.0]], np.float32)
    q, scales = retrieval.quantize_int8(c)
    assert q.dtype == np.int8
    np.testing.assert_allclose(scales, [1.0, 1 / 127, 2.0], rtol=1e-7)
    assert (np.abs(q * scales[:, None] - c) <= scales[:, None] / 2 + 1e-6).all()  # half a step per row
    assert retrieval.recall_at_k([[1, 2], [3, 4]], [[2, 9], [3, 4]]) == 0.75


_ISA_SCRIPT = """
import numpy as np, tensorflow as tf
import tf_recopt
from tf_recopt.ops import retrieval
ops = tf_recopt.load_ops()
rng = np.random.default_rng(5)
for storage in ("fp32", "bf16", "int8"):
    for batch, d in ((1, 64), (3, 37), (2, 7), (9, 16)):
        q = rng.standard_normal((batch, d)).astype(np.float32)
        stored, scales = retrieval.encode(rng.standard_normal((30_000, d)).astype(np.float32), storage)
        dequant = stored.astype(np.float32) * (scales[:, None] if len(scales) else 1.0)
        want_v, want_i = tf.math.top_k(tf.matmul(q, dequant, transpose_b=True), 100)
        for got_v, got_i in (
                ops.recopt_score_top_k(q, stored, scales, np.zeros([0], np.float32), 100),
                ops.recopt_score_top_k(q, retrieval.to_blocks(stored), scales, np.zeros([0], np.float32), 100,
                                       layout="blocks16", num_candidates=len(stored))):
            np.testing.assert_allclose(got_v.numpy(), want_v.numpy(), rtol=1e-4, atol=1e-4)
            assert retrieval.recall_at_k(want_i.numpy(), got_i.numpy()) > 0.99, (storage, batch, d)

# int8 blocks16 with integer queries whose largest element is 32767: the
# int16 path (avx512vnni) rounds nothing, and every partial sum stays below
# 2^24, so every path's scores are the exact integers and the order (ties to
# the lower index) is fixed. Batch 15 takes tiles of 8, 4, 2 and 1; odd
# widths end on a single element; -128 is int8's one value without a negation.
for batch, d in ((15, 37), (1, 64), (2, 7), (3, 1)):
    c = rng.integers(-2, 3, (1000, d)).astype(np.int8)
    c[5, :2] = -128
    c[900] = c[10]  # a tie
    q = rng.integers(-32767, 32768, (batch, d)).astype(np.float32)
    q[:, 0] = 32767 * np.where(rng.random(batch) < 0.5, 1, -1)
    exact = q.astype(np.int64) @ c.T.astype(np.int64)
    order = np.lexsort((np.broadcast_to(np.arange(1000), exact.shape), -exact), axis=1)[:, :300]
    got_v, got_i = ops.recopt_score_top_k(q, retrieval.to_blocks(c), np.ones(1000, np.float32),
                                          np.zeros([0], np.float32), 300, layout="blocks16", num_candidates=1000)
    np.testing.assert_array_equal(got_i.numpy(), order, err_msg=f"{batch} {d}")
    np.testing.assert_array_equal(got_v.numpy(), np.take_along_axis(exact, order, 1).astype(np.float32))

# A query holding NaN or Inf scores as TensorFlow does; the others are unaffected.
c = rng.integers(-127, 128, (5000, 16)).astype(np.int8)
q = rng.standard_normal((4, 16)).astype(np.float32)
q[1, 3], q[2, 0] = np.nan, np.inf
want_v, want_i = tf.math.top_k(tf.matmul(q, c.astype(np.float32), transpose_b=True), 50)
got_v, got_i = ops.recopt_score_top_k(q, retrieval.to_blocks(c), np.ones(5000, np.float32), np.zeros([0], np.float32),
                                      50, layout="blocks16", num_candidates=5000)
np.testing.assert_array_equal(got_i.numpy()[[1, 2]], want_i.numpy()[[1, 2]])
np.testing.assert_array_equal(got_v.numpy()[[1, 2]], want_v.numpy()[[1, 2]])
np.testing.assert_allclose(got_v.numpy()[[0, 3]], want_v.numpy()[[0, 3]], rtol=1e-4, atol=1e-3)
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512", "avx512vnni"])
def test_every_isa_scores_every_storage(isa):
    """RECOPT_ISA forces a kernel path (one the CPU lacks falls back to the
    best it has): each path widens bf16/int8 rows its own way and tiles
    blocks16 queries by its own vector width; avx512vnni scores int8 blocks
    in integers."""
    result = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], capture_output=True, text=True,
                            env={**os.environ, "RECOPT_ISA": isa})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
