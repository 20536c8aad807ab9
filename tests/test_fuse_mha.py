"""fuse_mha: Keras 3, tf_keras and hand-written multi-head attention become
Recopt>MultiHeadAttention with the same answers; attention whose pieces
are used elsewhere, or whose mask the op cannot take, stays stock."""
import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tests.conftest import run_signature, saved_model_nodes
from tests import legacy_keras_export
from tests.graph_util import frozen_graph, ops_of, optimize_graph, run_graph
from tests.legacy_keras_export import MHA_D, MHA_S, MHA_T

RNG = np.random.default_rng(23)
B, T, S, D = 6, 7, 11, 16
FUSED = "Recopt>MultiHeadAttention"


def _x(steps, batch=B, width=D):
    return RNG.standard_normal((batch, steps, width)).astype(np.float32)


def _spec(steps, width=D, dtype=tf.float32):
    return tf.TensorSpec([None, steps, width], dtype)


def _lengths_mask(t, s, batch=B):
    lengths = RNG.integers(0, s + 1, batch)
    lengths[0] = 0   # one example attends to nothing
    return np.broadcast_to((np.arange(s)[None, :] < lengths[:, None])[:, None, :], (batch, t, s)).copy()


def _fuse(fn, feeds, specs):
    tf_recopt.load_ops()
    graph_def, inputs, outputs = frozen_graph(fn, *specs)
    optimized, results = optimize_graph(graph_def, inputs, outputs)
    want = run_graph(graph_def, inputs, outputs, list(feeds))
    got = run_graph(optimized, inputs, outputs, list(feeds))
    for w, g in zip(want, got):
        assert w.shape == g.shape
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    return optimized, {r.name: r for r in results}["fuse_mha"]


def _assert_fused(optimized, count=1):
    ops = ops_of(optimized)
    assert ops.count(FUSED) == count
    assert not {"Softmax", "Einsum", "Recopt>FusedMLP"} & set(ops), ops


def _keras_mha(**kwargs):
    import keras
    keras.utils.set_random_seed(5)
    kwargs.setdefault("num_heads", 2)
    kwargs.setdefault("key_dim", 8)
    layer = keras.layers.MultiHeadAttention(bias_initializer="random_normal", **kwargs)
    layer(np.zeros((1, T, D), np.float32), np.zeros((1, S, D), np.float32))
    return layer


@pytest.mark.parametrize("kwargs", [dict(), dict(value_dim=5), dict(output_shape=12), dict(use_bias=False),
                                    dict(num_heads=4, key_dim=3)],
                         ids=["default", "value_dim", "output_shape", "no_bias", "4_heads"])
def test_keras3_self_attention_masked(kwargs):
    layer = _keras_mha(**kwargs)
    optimized, result = _fuse(lambda x, m: layer(x, x, attention_mask=m), [_x(T), _lengths_mask(T, T)],
                              [_spec(T), tf.TensorSpec([None, T, T], tf.bool)])
    _assert_fused(optimized)
    assert result.applied == 1


@pytest.mark.parametrize("steps", [T, None], ids=["static_t", "dynamic_t"])
def test_keras3_causal_and_padding_mask(steps):
    """SASRec-style: use_causal_mask with a padding mask; Keras ands them
    into one [B, T, T] mask before the softmax (the causal part from the
    inputs' shapes, so T may be dynamic), and that is the op's mask."""
    layer = _keras_mha()
    optimized, _ = _fuse(lambda x, m: layer(x, x, attention_mask=m, use_causal_mask=True),
                         [_x(T), _lengths_mask(T, T)],
                         [tf.TensorSpec([None, steps, D]), tf.TensorSpec([None, steps, steps], tf.bool)])
    _assert_fused(optimized)


def test_keras3_dynamic_sequence_length():
    """Input(shape=(None, d)): Keras 3 projects with Einsum then."""
    layer = _keras_mha()
    optimized, _ = _fuse(lambda x, m: layer(x, x, attention_mask=m), [_x(T), _lengths_mask(T, T)],
                         [tf.TensorSpec([None, None, D]), tf.TensorSpec([None, None, None], tf.bool)])
    _assert_fused(optimized)


@pytest.mark.parametrize("t", [1, T])
def test_keras3_cross_attention(t):
    """A target item (t = 1) or a short query over a behaviour sequence."""
    layer = _keras_mha()
    optimized, _ = _fuse(lambda q, kv: layer(q, kv), [_x(t), _x(S)], [_spec(t), _spec(S)])
    _assert_fused(optimized)


def test_keras3_separate_key_and_value():
    layer = _keras_mha()
    optimized, _ = _fuse(lambda q, k, v: layer(q, v, key=k), [_x(T), _x(S), _x(S)],
                         [_spec(T), _spec(S), _spec(S)])
    _assert_fused(optimized)


def test_keras3_two_layers_stacked():
    first, second = _keras_mha(), _keras_mha(num_heads=3, key_dim=4)
    optimized, result = _fuse(lambda x: second(first(x, x), x), [_x(T)], [_spec(T)])
    _assert_fused(optimized, count=2)
    assert result.applied == 2


def _dense(units, seed):
    rng = np.random.default_rng(seed)
    w = tf.constant(rng.standard_normal((D, units)).astype(np.float32) / 4)
    b = tf.constant(rng.standard_normal(units).astype(np.float32) / 10)
    return lambda x: tf.matmul(x, w) + b


def _hand_written_bst(x, ids, heads=2, depth=8, additive=True):
    """Behaviour Sequence Transformer style: Dense projections, split heads
    by reshape + transpose, matmul(q, k^T) / sqrt(depth), padding mask from
    the ids, softmax, matmul, merge heads, Dense."""
    def split(t):
        return tf.transpose(tf.reshape(t, [-1, T, heads, depth]), [0, 2, 1, 3])
    q, k, v = split(_dense(heads * depth, 1)(x)), split(_dense(heads * depth, 2)(x)), split(_dense(heads * depth, 3)(x))
    scores = tf.matmul(q, k, transpose_b=True) / tf.math.sqrt(float(depth))
    padding = tf.equal(ids, 0)[:, None, None, :]                      # [B, 1, 1, S], True = blocked
    if additive:
        scores += tf.cast(padding, tf.float32) * -1e9
    else:
        scores = tf.where(padding, -1e9 * tf.ones_like(scores), scores)
    ctx = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
    ctx = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [-1, T, heads * depth])
    w_o = tf.constant(np.random.default_rng(4).standard_normal((heads * depth, D)).astype(np.float32) / 4)
    return tf.matmul(ctx, w_o) + 0.5


@pytest.mark.parametrize("additive", [True, False], ids=["added_mask", "where_mask"])
def test_hand_written_bst_block(additive):
    ids = RNG.integers(0, 4, (B, T)).astype(np.int64)
    ids[1] = 0   # all padding
    optimized, _ = _fuse(lambda x, i: _hand_written_bst(x, i, additive=additive), [_x(T), ids],
                         [_spec(T), tf.TensorSpec([None, T], tf.int64)])
    _assert_fused(optimized)
    assert "LogicalNot" in ops_of(optimized)   # the op takes keep, the model wrote blocked


_EINSUM_W = [tf.constant((RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)) for shape in
             [(D, 2, 4), (D, 2, 4), (D, 2, 4), (2, 4, 5)]]   # Glorot-like scale: outputs of order 1


def _einsum_attention(q, kv, keep=None, keep_of=None):
    """Heads as einsum over [d, N, H] kernels, the scale on the query; the
    mask `keep`, or keep_of(scores)."""
    wq, wk, wv, wo = _EINSUM_W
    qh = tf.einsum("btd,dnh->btnh", q, wq) * 0.5
    kh, vh = tf.einsum("bsd,dnh->bsnh", kv, wk), tf.einsum("bsd,dnh->bsnh", kv, wv)
    scores = tf.einsum("btnh,bsnh->bnts", qh, kh)
    if keep_of is not None:
        keep = keep_of(scores)
    if keep is not None:
        scores = tf.where(keep, scores, -1e9)
    return tf.einsum("btnh,nhe->bte", tf.einsum("bnts,bsnh->btnh", tf.nn.softmax(scores), vh), wo)


def test_hand_written_einsum_heads():
    optimized, _ = _fuse(_einsum_attention, [_x(T), _x(S)], [_spec(T), _spec(S)])
    _assert_fused(optimized)


def test_hand_written_mask_with_head_axis():
    """A [B, 1, 1, S] keep-mask built by indexing: squeezed to the op's [B, 1, S]."""
    fn = lambda q, kv, m: _einsum_attention(q, kv, keep=m[:, None, None, :])   # noqa: E731
    optimized, _ = _fuse(fn, [_x(T), _x(S), _lengths_mask(1, S)[:, 0]],
                         [_spec(T), _spec(S), tf.TensorSpec([None, S], tf.bool)])
    _assert_fused(optimized)


def test_hand_written_mask_per_head():
    """A [B, N, T, S] keep-mask, one per head, goes to the op unchanged."""
    keep = RNG.random((B, 2, T, S)) < 0.6
    keep[..., 0] = True
    optimized, _ = _fuse(lambda q, kv, m: _einsum_attention(q, kv, keep=m), [_x(T), _x(S), keep],
                         [_spec(T), _spec(S), tf.TensorSpec([None, 2, T, S], tf.bool)])
    _assert_fused(optimized)


def test_keras3_attention_mask_per_head():
    """Keras 3 broadcasts attention_mask against [B, N, T, S] scores, so a
    4-D mask gives each head its own."""
    layer = _keras_mha()
    keep = RNG.random((B, 2, T, S)) < 0.6
    optimized, _ = _fuse(lambda q, kv, m: layer(q, kv, attention_mask=m), [_x(T), _x(S), keep],
                         [_spec(T), _spec(S), tf.TensorSpec([None, 2, T, S], tf.bool)])
    _assert_fused(optimized)


def test_returned_scores_stay_stock():
    layer = _keras_mha()
    optimized, result = _fuse(lambda x: layer(x, x, return_attention_scores=True), [_x(T)], [_spec(T)])
    assert FUSED not in ops_of(optimized)
    assert "other uses" in result.skipped[0][1]


def test_keras3_scores_path_when_scores_are_dropped():
    """With return_attention_scores Keras 3 takes its transpose + BatchMatMulV2
    path; if the signature drops the scores, that form is fused too."""
    layer = _keras_mha()
    optimized, _ = _fuse(lambda x, m: layer(x, x, attention_mask=m, return_attention_scores=True)[0],
                         [_x(T), _lengths_mask(T, T)], [_spec(T), tf.TensorSpec([None, T, T], tf.bool)])
    _assert_fused(optimized)
    assert not {"Transpose", "BatchMatMulV2"} & set(ops_of(optimized))


def test_batch_shared_causal_mask():
    """A [1, 1, T, T] constant mask is the op's batch-shared [1, T, T] mask."""
    causal = tf.constant(np.tril(np.ones((1, 1, T, T), bool)))
    optimized, _ = _fuse(lambda x: _einsum_attention(x, x, keep=causal), [_x(T)], [_spec(T)])
    _assert_fused(optimized)


def test_keras3_causal_mask_alone():
    """use_causal_mask without a padding mask (SASRec's next-item form):
    Keras builds one [1, 1, T, T] mask from the scores' shape; with T static
    it is a constant, the op's batch-shared mask."""
    layer = _keras_mha()
    optimized, _ = _fuse(lambda x: layer(x, x, use_causal_mask=True), [_x(T)], [_spec(T)])
    _assert_fused(optimized)
    assert not {"MatrixBandPart", "Shape"} & set(ops_of(optimized))


@pytest.mark.parametrize("steps", [1, 5, T])
def test_keras3_causal_mask_of_dynamic_length(steps):
    """With T unknown the causal mask comes from the scores' runtime shape:
    probed at several T and S, it is the band the op's causal attr applies."""
    layer = _keras_mha()
    optimized, _ = _fuse(lambda x: layer(x, x, use_causal_mask=True), [_x(steps)], [tf.TensorSpec([None, None, D])])
    _assert_fused(optimized)
    fused = [n for n in optimized.node if n.op == FUSED]
    assert fused[0].attr["causal"].b and fused[0].attr["num_masks"].i == 0
    assert not {"MatrixBandPart", "Shape"} & set(ops_of(optimized))


def _band_of_shape(lower, upper):
    return lambda s: tf.linalg.band_part(tf.ones(tf.shape(s)[2:], tf.bool), lower, upper)[None, None]


def test_hand_written_causal_band_of_dynamic_length():
    optimized, _ = _fuse(lambda x: _einsum_attention(x, x, keep_of=_band_of_shape(-1, 0)), [_x(T)],
                         [tf.TensorSpec([None, None, D])])
    _assert_fused(optimized)


def test_shape_derived_mask_that_is_not_causal_stays_stock():
    """An upper band of the scores' shape: probing tells it from the causal band."""
    optimized, result = _fuse(lambda x: _einsum_attention(x, x, keep_of=_band_of_shape(0, -1)), [_x(T)],
                              [tf.TensorSpec([None, None, D])])
    assert FUSED not in ops_of(optimized) and result.skipped


def test_plain_softmax_is_not_attention():
    optimized, result = _fuse(lambda x: tf.nn.softmax(tf.einsum("btd,bsd->bts", x, x)[:, None]), [_x(T)],
                              [_spec(T)])
    assert FUSED not in ops_of(optimized) and not result.skipped


def test_non_constant_kernel_stays_stock():
    def fn(x, wq):
        q = tf.reshape(tf.matmul(x, wq), [-1, T, 2, 8])
        k = tf.reshape(_dense(16, 5)(x), [-1, T, 2, 8])
        p = tf.nn.softmax(tf.einsum("btnh,bsnh->bnts", q, k))
        out = tf.einsum("bnts,bsnh->btnh", p, k)
        return tf.matmul(tf.reshape(out, [-1, T, 16]), tf.eye(16))
    optimized, result = _fuse(fn, [_x(T), RNG.standard_normal((D, 16)).astype(np.float32)],
                              [_spec(T), tf.TensorSpec([D, 16], tf.float32)])
    assert FUSED not in ops_of(optimized)
    assert "constant" in result.skipped[0][1]


@pytest.fixture(scope="module")
def legacy_models(tmp_path_factory):
    return legacy_keras_export.export_or_fail("mha", tmp_path_factory.mktemp("legacy_mha"))


@pytest.mark.parametrize("variant", ["self_masked", "cross", "self_causal"])
def test_tf_keras_saved_models(legacy_models, tmp_path, variant):
    src, dst = str(legacy_models / variant), str(tmp_path / "opt")
    tf_recopt.optimize(src, dst)
    assert len(saved_model_nodes(dst, FUSED)) == 1
    assert not saved_model_nodes(dst, "Softmax")
    q = _x(MHA_T, width=MHA_D)
    feeds = {"q": q, "m": _lengths_mask(MHA_T, MHA_T)} if variant == "self_masked" else \
        {"q": q} if variant == "self_causal" else {"q": q, "kv": _x(MHA_S, width=MHA_D)}
    want, got = run_signature(src, feeds), run_signature(dst, feeds)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=2e-5)


def test_bf16_precision_sets_the_weights_attr():
    from types import SimpleNamespace

    from grappler_passes import run_pipeline
    tf_recopt.load_ops()
    layer = _keras_mha()
    graph_def, inputs, outputs = frozen_graph(lambda x: layer(x, x), _spec(T))
    protected = {n.split(":")[0] for n in inputs + outputs}
    optimized, _ = run_pipeline(graph_def, protected, options=SimpleNamespace(precision="bf16", device="cpu"))
    fused = [n for n in optimized.node if n.op == FUSED]
    assert len(fused) == 1 and fused[0].attr["weights_bf16"].b
    x = _x(T)
    want, got = run_graph(graph_def, inputs, outputs, [x]), run_graph(optimized, inputs, outputs, [x])
    np.testing.assert_allclose(got[0], want[0], rtol=3e-2, atol=3e-2)
    assert not np.allclose(got[0], want[0], rtol=1e-6, atol=1e-6)
