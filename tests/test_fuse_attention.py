"""fuse_attention: each spelling of DIN's attention pooling becomes
Recopt>DinAttention with the same answers; near-misses stay stock."""
import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tests.conftest import saved_model_nodes
from tests.graph_util import frozen_graph, ops_of, optimize_graph, run_graph

RNG = np.random.default_rng(3)
B, T, D = 7, 12, 8
UNITS = (16, 8, 1)
SPECS = (tf.TensorSpec([None, D], tf.float32), tf.TensorSpec([None, T, D], tf.float32),
         tf.TensorSpec([None], tf.int32))
FEEDS = [RNG.standard_normal((B, D)).astype(np.float32), RNG.standard_normal((B, T, D)).astype(np.float32),
         np.array([0, 1, T, 5, 0, 3, T - 1], np.int32)]   # zero-length sequences included
PAD = -2.0 ** 32 + 1   # DeepCTR's padding score


def _weights(in_dim):
    dims = (in_dim,) + UNITS
    return [(tf.constant(RNG.standard_normal((a, b)) / np.sqrt(a), tf.float32),
             tf.constant(RNG.standard_normal(b) * 0.1, tf.float32)) for a, b in zip(dims, dims[1:])]


def _mlp(x, layers):
    for i, (w, b) in enumerate(layers):
        x = tf.matmul(x, w) + b      # rank-3 x: BatchMatMulV2 against a 2-D weight
        x = x if i == len(layers) - 1 else tf.nn.sigmoid(x)
    return x                          # [B, T, 1]


def _keras_repeat(q):
    import keras
    return keras.ops.repeat(keras.ops.expand_dims(q, 1), T, axis=1)


def _tile(q):
    return tf.tile(q[:, None, :], [1, T, 1])


def _broadcast(q):
    return tf.broadcast_to(tf.expand_dims(q, 1), [tf.shape(q)[0], T, D])


BLOCKS = {"q": lambda q, k: q, "k": lambda q, k: k, "q-k": lambda q, k: q - k, "k-q": lambda q, k: k - q,
          "q*k": lambda q, k: q * k, "k*q": lambda q, k: k * q, "q+k": lambda q, k: q + k}


def _attention(parts, repeat=_tile, pooling="column", softmax=False, pad="zeros", masked=True):
    layers = _weights(len(parts) * D)

    def fn(q, keys, lengths):
        q_rep = repeat(q)
        s = _mlp(tf.concat([BLOCKS[p](q_rep, keys) for p in parts], axis=-1), layers)
        mask = tf.sequence_mask(lengths, T)
        if pooling == "column":              # the zoo's attention_pool
            w = tf.where(mask[..., None], s, tf.zeros_like(s)) if masked else s
            return tf.reduce_sum(w * keys, axis=1)
        if pooling == "flat":
            s = tf.squeeze(s, -1)
            fill = tf.zeros_like(s) if pad == "zeros" else tf.ones_like(s) * PAD
            w = tf.where(mask, s, fill) if masked else s
            w = tf.nn.softmax(w) if softmax else w
            return tf.reduce_sum(keys * tf.expand_dims(w, -1), axis=1)
        s = tf.transpose(s, [0, 2, 1])      # DeepCTR's AttentionSequencePoolingLayer
        w = tf.where(tf.expand_dims(mask, 1), s, tf.ones_like(s) * PAD) if masked else s
        w = tf.nn.softmax(w) if softmax else w
        return tf.matmul(w, keys)            # [B, 1, d]
    return fn


def _run(fn):
    graph_def, inputs, outputs = frozen_graph(fn, *SPECS)
    optimized, results = optimize_graph(graph_def, inputs, outputs)
    want = run_graph(graph_def, inputs, outputs, FEEDS)
    got = run_graph(optimized, inputs, outputs, FEEDS)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)
    return ops_of(optimized), {r.name: r for r in results}


FORMS = {
    "zoo": dict(parts=["q", "k", "q-k", "q*k"], repeat=_keras_repeat),
    "tile_reordered": dict(parts=["k", "q*k", "k-q", "q"]),
    "broadcast_product_only": dict(parts=["k*q"], repeat=_broadcast),
    "flat_raw": dict(parts=["q", "k", "q-k", "q*k"], pooling="flat"),
    "flat_softmax": dict(parts=["q", "k", "q-k", "q*k"], pooling="flat", softmax=True, pad="deepctr"),
    "deepctr_row_softmax": dict(parts=["q", "k", "q-k", "q*k"], pooling="row", softmax=True),
    "deepctr_row_raw": dict(parts=["q", "k", "q-k", "q*k"], pooling="row"),
    # Fixed-length sequences: no mask at all, every position counts.
    "unmasked_column": dict(parts=["q", "k", "q-k", "q*k"], masked=False),
    "unmasked_flat_softmax": dict(parts=["q", "k", "q-k", "q*k"], pooling="flat", softmax=True, masked=False),
    "unmasked_row_softmax": dict(parts=["k", "q*k"], pooling="row", softmax=True, masked=False),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_form_fuses_with_same_answers(ops, form):
    found, results = _run(_attention(**FORMS[form]))
    assert found.count("Recopt>DinAttention") == 1, results["fuse_attention"].skipped
    assert "ConcatV2" not in found and "Recopt>FusedMLP" not in found and "Softmax" not in found


def _interleaved(q):
    """[B, d, T] reshaped to [B, T, d]: not q repeated (rows mix features)."""
    return tf.reshape(tf.tile(q[:, :, None], [1, 1, T]), [-1, T, D])


@pytest.mark.parametrize("form, why", [
    (dict(parts=["q", "k", "q+k"]), "one query"),                   # q + k is no part
    (dict(parts=["q", "k", "q*k"], repeat=_interleaved), "query's last axis"),
])
def test_near_misses_stay_stock(ops, form, why):
    found, results = _run(_attention(**form))
    assert "Recopt>DinAttention" not in found
    assert any(why in reason for _, reason in results["fuse_attention"].skipped), results["fuse_attention"].skipped


def test_float_mask_multiply_is_left_alone(ops):
    """w * cast(mask) differs from where(mask, w, 0) once w is inf or NaN."""
    layers = _weights(2 * D)

    def fn(q, keys, lengths):
        s = _mlp(tf.concat([_tile(q), keys], -1), layers)
        w = s * tf.cast(tf.sequence_mask(lengths, T), tf.float32)[..., None]
        return tf.reduce_sum(w * keys, axis=1)
    found, _ = _run(fn)
    assert "Recopt>DinAttention" not in found


def test_softmax_over_the_size_one_axis_is_left_alone(ops):
    """softmax of a [B, T, 1] column normalises nothing useful, but it is what the
    graph says: the pass must not read it as a softmax over T."""
    layers = _weights(2 * D)

    def fn(q, keys, lengths):
        s = _mlp(tf.concat([_tile(q), keys], -1), layers)
        w = tf.nn.softmax(tf.where(tf.sequence_mask(lengths, T)[..., None], s, tf.zeros_like(s)))
        return tf.reduce_sum(w * keys, axis=1)
    found, _ = _run(fn)
    assert "Recopt>DinAttention" not in found


@pytest.mark.parametrize("model", ["din"])
def test_zoo_models_fuse(ops, zoo_dir, tmp_path, model):
    out = str(tmp_path / model)
    report = tf_recopt.optimize(zoo_dir(model), out)
    assert report.parity_ok
    assert len(saved_model_nodes(out, "Recopt>DinAttention")) == 2   # serve and serving_default
    ids = np.array([[3, 9, 0, 0], [0, 0, 0, 0], [5, 1, 2, 7]], np.int64)
    feeds = {"target_item": tf.constant([4, 2, 8], tf.int64),
             "history": tf.constant(np.pad(ids, [(0, 0), (0, 6)]), tf.int64)}
    want = tf.saved_model.load(zoo_dir(model)).signatures["serving_default"](**feeds)
    got = tf.saved_model.load(out).signatures["serving_default"](**feeds)
    np.testing.assert_allclose(got["ctr"].numpy(), want["ctr"].numpy(), rtol=1e-5, atol=1e-6)


def test_mask_shared_by_the_batch_is_left_alone(ops):
    """A [1, T] mask broadcasts in where(); the op wants one row per example."""
    layers = _weights(2 * D)

    def fn(q, keys, lengths):
        s = _mlp(tf.concat([_tile(q), keys], -1), layers)
        w = tf.where(tf.sequence_mask([5], T)[..., None], s, tf.zeros_like(s))
        return tf.reduce_sum(w * keys, axis=1) + tf.cast(lengths[:, None], tf.float32)
    found, results = _run(fn)
    assert "Recopt>DinAttention" not in found
    assert any("is not [B, T]" in reason for _, reason in results["fuse_attention"].skipped)


# ---- scores used as weights (DIEN feeds them to its AUGRU) -------------------

def _scores_only(spelling, repeat=_tile):
    """The attention weights themselves leave the subgraph; the keys are only
    known as the sequence the activation unit combines with the query."""
    layers = _weights(4 * D)

    def fn(q, keys, lengths):
        q_rep = repeat(q)
        s = _mlp(tf.concat([q_rep, keys, q_rep - keys, q_rep * keys], axis=-1), layers)
        mask = tf.sequence_mask(lengths, T)
        if spelling == "zoo":   # tf_recopt.zoo.layers.attention_scores
            s = s[..., 0]
            return tf.nn.softmax(tf.where(mask, s, tf.fill(tf.shape(s), PAD)))
        if spelling == "unmasked":
            return tf.nn.softmax(s[..., 0]) + tf.cast(lengths[:, None], tf.float32)
        if spelling == "broadcast_pad":
            s = s[:, :, 0]
            return tf.nn.softmax(tf.where(mask, s, tf.broadcast_to(tf.constant(PAD), tf.shape(s)))) * 2.0
        s = tf.squeeze(s, -1)
        return tf.nn.softmax(tf.where(mask, s, tf.ones_like(s) * PAD))
    return fn


def test_unmasked_attention_gets_an_all_true_mask(ops):
    found, _ = _run(_attention(**FORMS["unmasked_column"]))
    assert found.count("Recopt>DinAttention") == 1 and "Fill" in found and "SelectV2" not in found


@pytest.mark.parametrize("spelling", ["zoo", "broadcast_pad", "squeeze", "unmasked"])
def test_softmax_scores_as_weights(ops, spelling):
    found, results = _run(_scores_only(spelling, repeat=_keras_repeat if spelling == "zoo" else _tile))
    assert found.count("Recopt>DinAttention") == 1, results["fuse_attention"].skipped
    assert "ConcatV2" not in found and "Recopt>FusedMLP" not in found and "Softmax" not in found


def test_scores_of_two_sequences_stay_stock(ops):
    """No repeated query: neither sequence can be the keys."""
    layers = _weights(2 * D)

    def fn(q, keys, lengths):
        s = _mlp(tf.concat([keys, keys * 2.0 + q[:, None, :]], -1), layers)[..., 0]
        return tf.nn.softmax(tf.where(tf.sequence_mask(lengths, T), s, tf.fill(tf.shape(s), PAD)))
    found, results = _run(fn)
    assert "Recopt>DinAttention" not in found
    assert any("one key sequence" in why for _, why in results["fuse_attention"].skipped)


def test_pooled_softmax_is_not_fused_twice(ops):
    found, results = _run(_attention(**FORMS["flat_softmax"]))
    assert found.count("Recopt>DinAttention") == 1 and results["fuse_attention"].applied == 1
