"""Recopt>ExactScoreTopK against Recopt>ScoreTopK over the fp32 rows: the
same values and indices bit for bit, on every candidate set, whether the
quantized scan narrowed the field (survivors >= k) or the query fell back
to the fp32 scan (survivors == -1)."""
import textwrap

import numpy as np
import pytest

from tests.isa_util import ISAS, assert_script_passes
from tf_recopt.ops import retrieval

EMPTY = np.zeros([0], np.float32)
STORAGES = pytest.mark.parametrize("storage", retrieval.EXACT_STORAGES)


def _exact(ops, q, c, k, storage, bias=EMPTY, scale=1.0, bounds_factor=1.0, centre=True, **attrs):
    blocks, scales, bounds, mid = retrieval.encode_exact(c, storage, centre)
    v, i, s = ops.recopt_exact_score_top_k(q, blocks, scales, bias, k, c, bounds * np.float32(bounds_factor), mid,
                                           scale=scale, num_candidates=len(c), **attrs)
    return v.numpy(), i.numpy(), s.numpy()


def _fp32(ops, q, c, k, bias=EMPTY, scale=1.0):
    v, i = ops.recopt_score_top_k(q, c, EMPTY, bias, k, scale=scale)
    return v.numpy(), i.numpy()


def _assert_exact(ops, q, c, k, storage, **kw):
    v, i, s = _exact(ops, q, c, k, storage, **kw)
    want_v, want_i = _fp32(ops, q, c, k, kw.get("bias", EMPTY), kw.get("scale", 1.0))
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(v, want_v)
    assert s.shape == (len(q),)
    # Fewer survivors than k would mean the bound dropped a top-k candidate.
    assert ((s >= k) | (s == -1)).all(), s
    return s


def _candidates(kind, n, d, rng):
    if kind == "random":
        return rng.standard_normal((n, d)).astype(np.float32)
    if kind == "clustered":  # all rows near one point: the spread is far below a quantization step
        return (3 * rng.standard_normal((1, d)) + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
    if kind == "near_duplicates":  # groups of 50 rows 1e-6 apart
        base = rng.standard_normal(((n + 49) // 50, d)).astype(np.float32)
        return (np.repeat(base, 50, axis=0)[:n] + 1e-6 * rng.standard_normal((n, d))).astype(np.float32)
    if kind == "popularity":  # norms over three decades, as item vectors of popular and rare items
        norms = 10.0 ** rng.uniform(-1.5, 1.5, (n, 1))
        return (rng.standard_normal((n, d)) * norms).astype(np.float32)
    raise ValueError(kind)


@STORAGES
@pytest.mark.parametrize("kind", ["random", "clustered", "near_duplicates", "popularity"])
@pytest.mark.parametrize("batch", [1, 8, 64])
def test_equals_fp32_scan(ops, storage, kind, batch):
    rng = np.random.default_rng(batch)
    c = _candidates(kind, 60_003, 64, rng)
    q = rng.standard_normal((batch, 64)).astype(np.float32)
    s = _assert_exact(ops, q, c, 200, storage)
    if kind != "near_duplicates":
        # The bound narrows these to a few times k: the point of the op.
        assert (s >= 200).all() and (s < 20 * 200).all(), s


@STORAGES
@pytest.mark.parametrize("kind", ["random", "clustered", "popularity"])
def test_uncentred_candidates(ops, storage, kind):
    """Without a centre the op is as exact; clustered rows then have
    quantization steps far above their score spread, and every query takes
    the fp32 scan (what centring is for)."""
    rng = np.random.default_rng(11)
    c = _candidates(kind, 30_001, 48, rng)
    q = rng.standard_normal((8, 48)).astype(np.float32)
    s = _assert_exact(ops, q, c, 100, storage, centre=False)
    assert (s == -1).all() if kind == "clustered" else (s >= 100).all(), s


@STORAGES
@pytest.mark.parametrize("n,d,k", [(1, 4, 1), (17, 7, 17), (1000, 33, 999), (4099, 130, 64), (5000, 16, 1)])
def test_shapes_and_k_near_n(ops, storage, n, d, k):
    """Odd widths (VNNI's unpaired last element), n not a multiple of 16,
    k = n and k = n - 1, k = 1."""
    rng = np.random.default_rng(n + d)
    q = rng.standard_normal((3, d)).astype(np.float32)
    _assert_exact(ops, q, rng.standard_normal((n, d)).astype(np.float32), k, storage)


@STORAGES
def test_ties_keep_the_lower_index(ops, storage):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((500, 32)).astype(np.float32)
    c = np.concatenate([base, base, base])  # every score three times
    q = rng.standard_normal((4, 32)).astype(np.float32)
    _assert_exact(ops, q, c, 100, storage)
    same = np.tile(base[:1], (3000, 1))  # all scores equal: ids 0..k-1
    v, i, _ = _exact(ops, q, same, 50, storage)
    np.testing.assert_array_equal(i, np.tile(np.arange(50), (4, 1)))


@STORAGES
def test_outlier_rows_and_bias_and_negative_scale(ops, storage):
    rng = np.random.default_rng(2)
    c = rng.standard_normal((20_000, 64)).astype(np.float32)
    c[::997] *= 1e4  # rows whose quantization step is 1e4 times the rest
    q = rng.standard_normal((8, 64)).astype(np.float32)
    bias = (100 * rng.standard_normal(20_000)).astype(np.float32)
    _assert_exact(ops, q, c, 300, storage)
    _assert_exact(ops, q, c, 300, storage, bias=bias, scale=-0.37)


@STORAGES
def test_nan_and_inf_queries_take_the_fp32_scan(ops, storage):
    rng = np.random.default_rng(3)
    c = rng.standard_normal((10_000, 16)).astype(np.float32)
    q = rng.standard_normal((4, 16)).astype(np.float32)
    q[1, 3] = np.nan
    q[2, 0] = np.inf
    s = _assert_exact(ops, q, c, 20, storage)
    assert s[1] == -1 and s[2] == -1 and s[0] >= 20 and s[3] >= 20


@STORAGES
def test_too_many_survivors_take_the_fp32_scan(ops, storage):
    rng = np.random.default_rng(4)
    c = rng.standard_normal((30_000, 32)).astype(np.float32)
    q = rng.standard_normal((2, 32)).astype(np.float32)
    s = _assert_exact(ops, q, c, 100, storage, max_survivors=100)
    assert (s == -1).all()


@STORAGES
def test_empty_batch_and_k_zero(ops, storage):
    rng = np.random.default_rng(5)
    c = rng.standard_normal((100, 8)).astype(np.float32)
    v, i, s = _exact(ops, np.zeros((0, 8), np.float32), c, 5, storage)
    assert v.shape == (0, 5) and i.shape == (0, 5) and s.shape == (0,)
    v, i, s = _exact(ops, rng.standard_normal((2, 8)).astype(np.float32), c, 0, storage)
    assert v.shape == (2, 0) and (s == 0).all()


def test_shrunk_bound_breaks_exactness(ops):
    """Sabotage: the same checks fail once the row bounds are cut (int8 to
    1/50, bf16 to 1/100), so the tests above depend on the bound. The bound
    is a worst case: every rounding error at its limit with one sign, where
    random signs cancel, so at this size cuts to a tenth still held."""
    rng = np.random.default_rng(6)
    c = _candidates("random", 60_003, 64, rng)
    q = rng.standard_normal((8, 64)).astype(np.float32)
    for storage, factor in (("int8", 0.02), ("bf16", 0.01)):
        _, i, _ = _exact(ops, q, c, 200, storage, bounds_factor=factor)
        assert not np.array_equal(i, _fp32(ops, q, c, 200)[1]), storage


def test_bad_inputs_name_the_input(ops):
    import tensorflow as tf
    rng = np.random.default_rng(7)
    c = rng.standard_normal((40, 8)).astype(np.float32)
    q = rng.standard_normal((2, 8)).astype(np.float32)
    blocks, scales, bounds, mid = retrieval.encode_exact(c, "int8")
    with pytest.raises(tf.errors.InvalidArgumentError, match="exact_rows must be"):
        ops.recopt_exact_score_top_k(q, blocks, scales, EMPTY, 3, c[:39], bounds, mid, num_candidates=40)
    with pytest.raises(tf.errors.InvalidArgumentError, match="row_bounds must be"):
        ops.recopt_exact_score_top_k(q, blocks, scales, EMPTY, 3, c, bounds[:5], mid, num_candidates=40)
    with pytest.raises(tf.errors.InvalidArgumentError, match="centre must be"):
        ops.recopt_exact_score_top_k(q, blocks, scales, EMPTY, 3, c, bounds, mid[:5], num_candidates=40)
    with pytest.raises(tf.errors.InvalidArgumentError, match="int8 candidates need row_scales"):
        ops.recopt_exact_score_top_k(q, blocks, EMPTY, EMPTY, 3, c, bounds, mid, num_candidates=40)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least k columns"):
        ops.recopt_exact_score_top_k(q, blocks, scales, EMPTY, 41, c, bounds, mid, num_candidates=40)


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_path_is_exact(isa):
    """The int8 scan is VNNI integers on avx512 and widened fp32 elsewhere;
    the bound covers both (core/score_exact.cc)."""
    assert_script_passes(textwrap.dedent("""
        import numpy as np
        import tf_recopt
        from tests.test_exact_score_topk_op import _assert_exact, _candidates
        ops = tf_recopt.load_ops()
        rng = np.random.default_rng(8)
        for storage in ("int8", "bf16"):
            for kind in ("random", "popularity", "near_duplicates", "clustered"):
                c = _candidates(kind, 20_011, 40, rng)
                for batch in (1, 5, 16):
                    q = rng.standard_normal((batch, 40)).astype(np.float32)
                    _assert_exact(ops, q, c, 100, storage)
        print("ok")
    """), isa)
