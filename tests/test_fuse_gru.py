"""fuse_gru: Keras 3, tf_keras and hand-written GRU loops become Recopt>GRU
with the same answers; loops that are not a GRU step stay stock."""
import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tests.conftest import run_signature, saved_model_nodes
from tests import legacy_keras_export
from tests.graph_util import frozen_graph, ops_of, optimize_graph, run_graph

RNG = np.random.default_rng(17)
B, T, D, U = 5, 10, 8, 6
X = RNG.standard_normal((B, T, D)).astype(np.float32)
SPEC = tf.TensorSpec([None, T, D], tf.float32)


def _fuse(fn, feeds=(X,), specs=(SPEC,)):
    tf_recopt.load_ops()
    graph_def, inputs, outputs = frozen_graph(fn, *specs, functional_loops=True)
    optimized, results = optimize_graph(graph_def, inputs, outputs)
    want = run_graph(graph_def, inputs, outputs, list(feeds))
    got = run_graph(optimized, inputs, outputs, list(feeds))
    for w, g in zip(want, got):
        assert w.shape == g.shape
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)
    return optimized, {r.name: r for r in results if r.name == "fuse_gru"}["fuse_gru"]


def _assert_fused(optimized):
    ops = ops_of(optimized)
    assert ops.count("Recopt>GRU") == 1
    assert not {"While", "StatelessWhile", "TensorListFromTensor", "TensorListStack"} & set(ops)


def _keras_layer(**kwargs):
    import keras
    keras.utils.set_random_seed(4)
    layer = keras.layers.GRU(U, bias_initializer="random_normal", **kwargs)
    layer.build((None, T, D))
    return layer


@pytest.mark.parametrize("kwargs", [
    dict(return_sequences=True),
    dict(return_sequences=True, reset_after=False),
    dict(),                                               # last output only: a one-slot list
    dict(return_sequences=True, go_backwards=True),
    dict(return_sequences=True, implementation=1),
    dict(return_sequences=True, use_bias=False),
], ids=["seq", "reset_before", "last", "backwards", "impl1", "no_bias"])
def test_keras3_gru_forms(kwargs):
    layer = _keras_layer(**kwargs)
    optimized, result = _fuse(lambda x: layer(x))
    _assert_fused(optimized)
    assert result.applied == 1


def test_keras3_return_state_and_initial_state():
    layer = _keras_layer(return_sequences=True, return_state=True)
    h0 = RNG.standard_normal((B, U)).astype(np.float32)
    optimized, _ = _fuse(lambda x, h: layer(x, initial_state=h), feeds=(X, h0),
                         specs=(SPEC, tf.TensorSpec([None, U], tf.float32)))
    _assert_fused(optimized)


def test_sequence_consumed_time_major():
    layer = _keras_layer(return_sequences=True)
    optimized, _ = _fuse(lambda x: tf.transpose(layer(x), [1, 0, 2]) * 2.0)
    _assert_fused(optimized)


def _hand_written_gru(x, side_effect=False):
    """A DIEN-style cell written out by hand: per-gate weights, a
    tf.while_loop over a TensorArray, and the mix spelled (1 - z) * c + z * h."""
    w = {k: tf.constant(RNG.standard_normal(s) * 0.3, tf.float32)
         for k, s in [("wz", (D, U)), ("wr", (D, U)), ("wh", (D, U)), ("uz", (U, U)), ("ur", (U, U)),
                      ("uh", (U, U)), ("bz", (U,)), ("br", (U,)), ("bh", (U,))]}
    xs = tf.TensorArray(tf.float32, size=T).unstack(tf.transpose(x, [1, 0, 2]))
    out = tf.TensorArray(tf.float32, size=T)

    def body(t, h, out):
        xt = xs.read(t)
        z = tf.sigmoid(tf.matmul(xt, w["wz"]) + w["bz"] + tf.matmul(h, w["uz"]))
        r = tf.sigmoid(tf.matmul(h, w["ur"]) + tf.matmul(xt, w["wr"]) + w["br"])
        c = tf.tanh(tf.matmul(xt, w["wh"]) + tf.matmul(r * h, w["uh"]) + w["bh"])
        h = (1.0 - z) * c + z * h
        if side_effect:
            tf.print("step", t)
        return t + 1, h, out.write(t, h)

    _, h, out = tf.while_loop(lambda t, h, out: t < T, body, (0, tf.zeros([tf.shape(x)[0], U]), out))
    return tf.transpose(out.stack(), [1, 0, 2]), h


def test_hand_written_while_loop():
    optimized, result = _fuse(_hand_written_gru)
    assert result.applied == 1
    _assert_fused(optimized)


@pytest.mark.parametrize("kwargs, reason", [
    (dict(return_sequences=True, activation="relu"), "Relu"),
    (dict(return_sequences=True, recurrent_activation="hard_sigmoid"), "not part of a GRU step"),
], ids=["relu_candidate", "hard_sigmoid_gates"])
def test_non_gru_cells_stay_stock(kwargs, reason):
    layer = _keras_layer(**kwargs)
    optimized, result = _fuse(lambda x: layer(x))
    assert "Recopt>GRU" not in ops_of(optimized)
    assert result.skipped and reason in result.skipped[0][1]


@pytest.mark.parametrize("reset_after", [True, False])
def test_keras3_masked_gru(reset_after):
    layer = _keras_layer(return_sequences=True, reset_after=reset_after)
    optimized, result = _fuse(lambda x, n: layer(x, mask=tf.sequence_mask(n, T)), feeds=(X, LENGTHS),
                              specs=(SPEC, LENGTHS_SPEC))
    _assert_fused(optimized)
    node = next(n for n in optimized.node if n.op == "Recopt>GRU")
    assert node.attr["num_masks"].i == 1


LENGTHS = np.array([0, 3, T, 1, 7], np.int32)   # a zero-length sequence included
LENGTHS_SPEC = tf.TensorSpec([None], tf.int32)


@pytest.mark.parametrize("reset_after", [True, False])
def test_masked_gru_keeping_last_output(reset_after):
    """The last output of a masked loop is the last unmasked step's state:
    zeros for the empty sequence even with a non-zero initial state."""
    layer = _keras_layer(reset_after=reset_after)
    h0 = RNG.standard_normal((B, U)).astype(np.float32)
    optimized, result = _fuse(lambda x, n, h: layer(x, mask=tf.sequence_mask(n, T), initial_state=h),
                              feeds=(X, LENGTHS, h0), specs=(SPEC, LENGTHS_SPEC, tf.TensorSpec([None, U])))
    _assert_fused(optimized)
    assert result.applied == 1


@pytest.mark.parametrize("return_sequences", [True, False])
def test_keras3_masked_gru_backwards(return_sequences):
    """go_backwards reverses the step input and the mask, so the op runs
    time-major on the reversed sequence with the reversed [T, B] mask."""
    layer = _keras_layer(return_sequences=return_sequences, go_backwards=True)
    optimized, _ = _fuse(lambda x, n: layer(x, mask=tf.sequence_mask(n, T)), feeds=(X, LENGTHS),
                         specs=(SPEC, LENGTHS_SPEC))
    _assert_fused(optimized)
    node = next(n for n in optimized.node if n.op == "Recopt>GRU")
    assert node.attr["num_masks"].i == 1 and node.attr["time_major"].b


@pytest.mark.parametrize("return_sequences", [True, False])
def test_keras3_masked_bidirectional(return_sequences):
    """Both directions of a masked Bidirectional GRU fuse (Bidirectional
    zeroes masked steps' outputs when it returns sequences)."""
    import keras
    keras.utils.set_random_seed(4)
    layer = keras.layers.Bidirectional(keras.layers.GRU(U, return_sequences=return_sequences,
                                                        bias_initializer="random_normal"))
    layer.build((None, T, D))
    optimized, result = _fuse(lambda x, n: layer(x, mask=tf.sequence_mask(n, T)), feeds=(X, LENGTHS),
                              specs=(SPEC, LENGTHS_SPEC))
    assert ops_of(optimized).count("Recopt>GRU") == 2 and result.applied == 2, result.skipped
    assert not {"While", "StatelessWhile"} & set(ops_of(optimized))
    zeroing = [n for n in optimized.node if n.op == "SelectV2" and n.name.endswith("/zero_masked")]
    assert len(zeroing) == (2 if return_sequences else 0)


# ---- DIEN's AUGRU --------------------------------------------------------------

SCORES = RNG.random((B, T)).astype(np.float32)
SCORES_SPEC = tf.TensorSpec([None, T], tf.float32)


def _augru_layer(mode, **kwargs):
    import keras
    from tf_recopt.zoo.layers import AUGRUCell
    keras.utils.set_random_seed(5)
    layer = keras.layers.RNN(AUGRUCell(U, mode=mode), **kwargs)
    layer.build((None, T, D + 1))
    return layer


def _gru_node(optimized):
    return next(n for n in optimized.node if n.op == "Recopt>GRU")


@pytest.mark.parametrize("mode", ["keep", "update"])
@pytest.mark.parametrize("kwargs", [dict(return_sequences=True), dict()], ids=["seq", "last"])
def test_keras3_augru(mode, kwargs):
    """The zoo's AUGRUCell: the score is the step input's last column."""
    layer = _augru_layer(mode, **kwargs)
    optimized, result = _fuse(lambda x, a: layer(tf.concat([x, a[..., None]], -1)), feeds=(X, SCORES),
                              specs=(SPEC, SCORES_SPEC))
    _assert_fused(optimized)
    node = _gru_node(optimized)
    assert node.attr["num_attention"].i == 1 and node.attr["attention_mode"].s.decode() == mode


@pytest.mark.parametrize("mode", ["keep", "update"])
def test_keras3_masked_augru_last_output(mode):
    """DIEN's interest evolution: masked, only the final interest kept."""
    layer = _augru_layer(mode)
    optimized, _ = _fuse(lambda x, a, n: layer(tf.concat([x, a[..., None]], -1), mask=tf.sequence_mask(n, T)),
                         feeds=(X, SCORES, LENGTHS), specs=(SPEC, SCORES_SPEC, LENGTHS_SPEC))
    _assert_fused(optimized)
    assert _gru_node(optimized).attr["num_masks"].i == 1


def _hand_written_augru(x, a, score=lambda a: a):
    """DIEN's released VecAttGRUCell, hand-written: per-gate weights, the
    scores in their own TensorArray, u = (1 - a) * u; h = u * h + (1 - u) * c."""
    w = {k: tf.constant(RNG.standard_normal(s) * 0.3, tf.float32)
         for k, s in [("wu", (D + U, U)), ("wr", (D + U, U)), ("wc", (D, U)), ("uc", (U, U)), ("bu", (U,)),
                      ("br", (U,)), ("bc", (U,))]}
    xs = tf.TensorArray(tf.float32, size=T).unstack(tf.transpose(x, [1, 0, 2]))
    scores = tf.TensorArray(tf.float32, size=T).unstack(tf.transpose(a[..., None], [1, 0, 2]))

    def body(t, h, out):
        xt, at = xs.read(t), score(scores.read(t))
        xh = tf.concat([xt, h], 1)
        u = tf.sigmoid(tf.matmul(xh, w["wu"]) + w["bu"])
        r = tf.sigmoid(tf.matmul(xh, w["wr"]) + w["br"])
        c = tf.tanh(tf.matmul(xt, w["wc"]) + tf.matmul(r * h, w["uc"]) + w["bc"])
        u = (1.0 - at) * u
        h = u * h + (1 - u) * c
        return t + 1, h, out.write(t, h)

    out = tf.TensorArray(tf.float32, size=T)
    _, h, out = tf.while_loop(lambda t, h, out: t < T, body, (0, tf.zeros([tf.shape(x)[0], U]), out))
    return tf.transpose(out.stack(), [1, 0, 2]), h


def test_hand_written_augru_with_a_score_list():
    optimized, result = _fuse(_hand_written_augru, feeds=(X, SCORES), specs=(SPEC, SCORES_SPEC))
    _assert_fused(optimized)
    node = _gru_node(optimized)
    assert node.attr["attention_mode"].s == b"keep" and node.attr["reset_after"].b is False


def test_augru_with_a_transformed_score_stays_stock():
    """(1 - a/2) * u is no AUGRU gate the op knows: the loop stays."""
    optimized, result = _fuse(lambda x, a: _hand_written_augru(x, a, score=lambda s: s * 0.5),
                              feeds=(X, SCORES), specs=(SPEC, SCORES_SPEC))
    assert "Recopt>GRU" not in ops_of(optimized)
    assert "not sigmoid of a projection" in result.skipped[0][1]


def test_loop_with_a_side_effect_stays_stock():
    def fn(x):
        out, h = _hand_written_gru(x, side_effect=True)
        return out, h
    optimized, result = _fuse(fn)
    assert "Recopt>GRU" not in ops_of(optimized)
    assert "PrintV2" in result.skipped[0][1]


def test_lstm_stays_stock():
    import keras
    layer = keras.layers.LSTM(U, return_sequences=True)
    layer.build((None, T, D))
    optimized, result = _fuse(lambda x: layer(x))
    assert "Recopt>GRU" not in ops_of(optimized)
    assert "not one of each" in result.skipped[0][1]


@pytest.fixture(scope="module")
def legacy_models(tmp_path_factory):
    return legacy_keras_export.export_or_fail("gru", tmp_path_factory.mktemp("legacy_gru"))


@pytest.mark.parametrize("variant", ["standard", "reset_before", "backwards", "last"])
def test_tf_keras_saved_models(legacy_models, tmp_path, variant):
    src, dst = str(legacy_models / variant), str(tmp_path / "opt")
    tf_recopt.optimize(src, dst)
    assert saved_model_nodes(dst, "Recopt>GRU")
    assert not saved_model_nodes(dst, "StatelessWhile") and not saved_model_nodes(dst, "While")
    want = run_signature(src, {"x": X})
    got = run_signature(dst, {"x": X})
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=2e-6)


@pytest.fixture(scope="module")
def legacy_masked_models(tmp_path_factory):
    return legacy_keras_export.export_or_fail("masked_gru", tmp_path_factory.mktemp("legacy_masked_gru"))


@pytest.mark.parametrize("variant, fused", [(v, 2 if v.startswith("bidirectional") else 1)
                                            for v in legacy_keras_export.MASKED_GRU_VARIANTS])
def test_tf_keras_masked_saved_models(legacy_masked_models, tmp_path, variant, fused):
    """tf_keras' zero_output_for_mask (Bidirectional forces it when returning
    sequences) and go_backwards' reversed time-major mask, on exports."""
    src, dst = str(legacy_masked_models / variant), str(tmp_path / "opt")
    tf_recopt.optimize(src, dst)
    assert len(saved_model_nodes(dst, "Recopt>GRU")) == fused
    assert not saved_model_nodes(dst, "StatelessWhile") and not saved_model_nodes(dst, "While")
    feeds = {"x": X, "m": np.arange(T)[None] < LENGTHS[:, None]}
    want, got = run_signature(src, feeds), run_signature(dst, feeds)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=2e-6)


def test_tf_keras_augru_saved_model(tmp_path):
    """A tf_keras RNN over a nested (x, score) input, TF1 GRUCell-style
    concat([x, h]) gates, masked, last state only."""
    src, dst = tmp_path / "augru", str(tmp_path / "opt")
    legacy_keras_export.export_or_fail("augru", src)
    tf_recopt.optimize(str(src), dst)
    nodes = saved_model_nodes(dst, "Recopt>GRU")
    assert nodes and all(n.attr["num_attention"].i == 1 and n.attr["num_masks"].i == 1 for n in nodes)
    assert not saved_model_nodes(dst, "StatelessWhile") and not saved_model_nodes(dst, "While")
    mask = np.arange(T)[None] < LENGTHS[:, None]
    feeds = {"x": X, "a": SCORES[..., None], "m": mask}
    want, got = run_signature(str(src), feeds), run_signature(dst, feeds)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=2e-5, atol=2e-6)
