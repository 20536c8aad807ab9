"""Embeddings behind Keras' StringLookup / IntegerLookup (the TFRS tutorials'
towers): the hash-table lookup in front must not hide the gathers from
fuse_embedding. A converted signature loses the table handle's shape data,
so without grappler_passes.shapes' stand-in every tensor after the lookup
was unknown rank and no gather matched."""
import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from grappler_passes.shapes import tensor_info
from tf_recopt import saved_model_io
from tf_recopt.options import OptimizeOptions
from tests.conftest import run_signature
from tests.legacy_keras_export import LOOKUP_USERS, export_or_fail

FUSED = "Recopt>FusedEmbeddingLookup"
VOCAB = [f"u{i}" for i in range(200)]
ITEM_VOCAB = np.arange(0, 1000, 5, dtype=np.int64)


def _keras3_model(out):
    import keras
    user = keras.Input(shape=(), dtype="string", name="user")
    item = keras.Input(shape=(), dtype="int64", name="item")
    tag = keras.Input(shape=(), dtype="string", name="tag")
    u = keras.layers.StringLookup(vocabulary=VOCAB)(user)
    i = keras.layers.IntegerLookup(vocabulary=ITEM_VOCAB)(item)
    # Two OOV buckets: Keras hashes unknown strings into them, a SelectV2
    # between the table lookup and the gather.
    t = keras.layers.StringLookup(vocabulary=VOCAB[:50], num_oov_indices=2)(tag)
    parts = [keras.layers.Embedding(rows, dim, embeddings_initializer="random_normal")(ids)
             for ids, rows, dim in [(u, 201, 16), (i, 201, 8), (t, 52, 4)]]
    y = keras.layers.Dense(3)(keras.layers.Concatenate()(parts))
    model = keras.Model([user, item, tag], y)
    model.export(out, verbose=False)


def _feeds(n, rng):
    known = rng.integers(0, 200, n)
    user = np.array([f"u{k}".encode() if k % 4 else b"stranger" for k in known])
    item = np.where(known % 3 == 0, 7, known * 5).astype(np.int64)   # 7 is not in the vocabulary
    tag = np.array([f"u{k % 60}".encode() for k in known])          # u50-u59 are OOV for tag
    return {"user": tf.constant(user), "item": tf.constant(item), "tag": tf.constant(tag)}


def _optimize(src, out, feeds):
    report = tf_recopt.optimize(src, out, sample_inputs=feeds)
    assert report.parity_ok
    return report.signatures["serving_default"].ops_after


@pytest.fixture(scope="module")
def keras3_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("lookup") / "k3")
    _keras3_model(path)
    return path


def test_lookup_output_keeps_its_keys_shape(ops, keras3_model):
    graph = saved_model_io.load(keras3_model, OptimizeOptions()).signatures["serving_default"]
    info = tensor_info(graph.graph_def)
    finds = [k for k in info if "LookupTableFindV2" in k]
    assert len(finds) == 3
    assert all(info[k][0] == [None] for k in finds), {k: info[k] for k in finds}


@pytest.mark.parametrize("batch", [1, 9, 256])
def test_keras3_string_and_integer_lookup_towers(ops, keras3_model, tmp_path, batch):
    out = str(tmp_path / "opt")
    feeds = _feeds(batch, np.random.default_rng(batch))
    after = _optimize(keras3_model, out, feeds)
    # One op writing the concat: the variable tables' gathers have no static
    # shape in the converted signature, so the concat's rank comes from them.
    assert after.get(FUSED) == 1 and "GatherV2" not in after and "ConcatV2" not in after, after
    assert after.get("LookupTableFindV2") == 3  # the tables themselves stay TensorFlow's
    want = run_signature(keras3_model, feeds)
    got = run_signature(out, feeds)
    np.testing.assert_allclose(got["output_0"], want["output_0"], rtol=1e-6, atol=1e-6)


def test_keras3_lookup_empty_batch(ops, keras3_model, tmp_path):
    out = str(tmp_path / "opt")
    _optimize(keras3_model, out, _feeds(4, np.random.default_rng(0)))
    empty = {"user": tf.constant([], tf.string), "item": tf.constant([], tf.int64),
             "tag": tf.constant([], tf.string)}
    assert run_signature(out, empty)["output_0"].shape == (0, 3)


def test_tf_keras_tfrs_style_towers(ops, tmp_path):
    """tf_keras (what tensorflow-recommenders builds on): Sequential
    StringLookup + Embedding towers, as in the TFRS retrieval tutorial."""
    src = tmp_path / "legacy"
    export_or_fail("lookup", src)
    rng = np.random.default_rng(3)
    users = np.array([f"user_{k}".encode() for k in rng.integers(0, LOOKUP_USERS + 20, 33)])
    feeds = {"user": tf.constant(users), "age": tf.constant(rng.integers(-5, 120, 33), tf.int64)}
    out = str(tmp_path / "opt")
    after = _optimize(str(src), out, feeds)
    assert after.get(FUSED) == 1 and "ResourceGather" not in after and "ConcatV2" not in after, after
    want = run_signature(str(src), feeds)
    got = run_signature(out, feeds)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6)
