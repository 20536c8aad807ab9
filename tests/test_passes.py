"""Each pass: outputs close, the rewrite present (and replaced ops gone),
and near-misses left alone (the remapper_test.py discipline)."""
import numpy as np
import pytest
import tensorflow as tf

from grappler_passes import pipeline
from grappler_passes.pass_base import GraphPass
from tests.graph_util import frozen_graph, ops_of, optimize_graph, run_graph

RNG = np.random.default_rng(3)
X = RNG.standard_normal((5, 8)).astype(np.float32)
SPEC = tf.TensorSpec([None, 8], tf.float32)


def _w(*shape):
    return tf.constant((RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))


W1, B1, W2, B2 = _w(8, 16), _w(16), _w(16, 4), _w(4)


def _check(fn, expect_fused, passes=None, custom_ops=True):
    graph_def, inputs, outputs = frozen_graph(fn, SPEC)
    want = run_graph(graph_def, inputs, outputs, [X])
    new_def, results = optimize_graph(graph_def, inputs, outputs, passes=passes, custom_ops=custom_ops)
    got = run_graph(new_def, inputs, outputs, [X])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    fused = ops_of(new_def).count("Recopt>FusedMLP")
    assert fused == expect_fused, (ops_of(new_def), [r.to_dict() for r in results])
    assert all(not r.error for r in results), [r.error for r in results]
    return new_def, results


@pytest.mark.parametrize("act", [tf.nn.relu, tf.nn.relu6, tf.nn.elu, tf.nn.selu, tf.sigmoid, tf.tanh,
                                 tf.nn.softplus, lambda h: tf.nn.leaky_relu(h, 0.3), lambda h: h])
def test_dense_forms_fuse(ops, act):
    new_def, _ = _check(lambda x: act(tf.nn.bias_add(tf.matmul(x, W1), B1)), 1)
    assert "MatMul" not in ops_of(new_def) and "BiasAdd" not in ops_of(new_def)


def test_add_bias_either_side_and_transposed_weight(ops):
    w1t = tf.transpose(W1)
    _check(lambda x: tf.nn.relu(B1 + tf.matmul(x, w1t, transpose_b=True)), 1)
    _check(lambda x: tf.nn.relu(tf.matmul(x, W1) + tf.reshape(B1, [1, 16])), 1)


def test_two_layer_chain_becomes_one_op(ops):
    new_def, _ = _check(lambda x: tf.sigmoid(tf.matmul(tf.nn.relu(tf.matmul(x, W1) + B1), W2) + B2), 1)
    node = next(n for n in new_def.node if n.op == "Recopt>FusedMLP")
    assert node.attr["num_layers"].i == 2
    assert [s.decode() for s in node.attr["activations"].list.s] == ["relu", "sigmoid"]


def test_bias_of_wrong_shape_is_not_folded_in(ops):
    full_bias = tf.constant(RNG.standard_normal((5, 16)).astype(np.float32))
    new_def, _ = _check(lambda x: tf.nn.relu(tf.matmul(x, W1) + full_bias), 1)
    # the MatMul alone fuses; the [5, 16] Add and the Relu stay as they were
    assert "AddV2" in ops_of(new_def) and "Relu" in ops_of(new_def)


def test_intermediate_consumed_twice_breaks_the_chain(ops):
    def fn(x):
        h = tf.nn.relu(tf.matmul(x, W1) + B1)
        return tf.matmul(h, W2) + B2, tf.reduce_sum(h, axis=1)
    new_def, _ = _check(fn, 2)
    assert all(n.attr["num_layers"].i == 1 for n in new_def.node if n.op == "Recopt>FusedMLP")


def test_intermediate_signature_output_is_kept(ops):
    def fn(x):
        h = tf.nn.relu(tf.matmul(x, W1) + B1)
        return tf.matmul(h, W2), h
    graph_def, inputs, outputs = frozen_graph(fn, SPEC)
    new_def, _ = optimize_graph(graph_def, inputs, outputs)
    names = {n.name for n in new_def.node}
    assert all(o.split(":")[0] in names for o in outputs)
    np.testing.assert_allclose(run_graph(new_def, inputs, outputs, [X])[1],
                               run_graph(graph_def, inputs, outputs, [X])[1], rtol=1e-6)


def test_variable_weight_is_not_fused(ops):
    # A weight that is not a constant cannot be pre-packed: near miss.
    def fn(x, w):
        return tf.nn.relu(tf.matmul(x, w) + B1)
    graph_def, inputs, outputs = frozen_graph(fn, SPEC, tf.TensorSpec([8, 16], tf.float32))
    new_def, _ = optimize_graph(graph_def, inputs, outputs)
    assert "Recopt>FusedMLP" not in ops_of(new_def)


def test_no_custom_ops_keeps_stock_ops(ops):
    new_def, results = _check(lambda x: tf.nn.relu(tf.matmul(x, W1) + B1), 0, custom_ops=False)
    assert all(not op.startswith("Recopt>") for op in ops_of(new_def))
    assert "fuse_dense" not in [r.name for r in results]


def test_fold_constants_folds_weight_transposes(ops):
    new_def, results = _check(lambda x: tf.matmul(x, tf.transpose(tf.transpose(W1) * 2.0)), 0,
                              passes=["fold_constants", "prune_dead_nodes"])
    assert "Transpose" not in ops_of(new_def) and "Mul" not in ops_of(new_def)
    assert results[0].applied >= 1


def test_prune_identity_keeps_control_dependencies():
    def fn(x):
        with tf.control_dependencies([tf.debugging.assert_all_finite(x, "finite")]):
            y = tf.identity(x)
        return tf.identity(tf.identity(y * 2.0))
    graph_def, inputs, outputs = frozen_graph(fn, SPEC)
    new_def, _ = optimize_graph(graph_def, inputs, outputs, passes=["prune_identity", "prune_dead_nodes"])
    assert "CheckNumerics" in ops_of(new_def)  # the assertion still runs
    np.testing.assert_allclose(run_graph(new_def, inputs, outputs, [X])[0], X * 2)


def test_prune_identity_bypasses_chains_and_ports():
    """Chains of Identities over a multi-output op's second output: every
    use lands on the real producer's port, the chains go."""
    def fn(x):
        _, idx = tf.unique(tf.reshape(tf.cast(x > 0, tf.int32), [-1]))
        a = tf.identity(tf.identity(tf.identity(idx)))
        return tf.cast(a, tf.float32) + tf.cast(tf.identity(idx), tf.float32)
    graph_def, inputs, outputs = frozen_graph(fn, SPEC)
    new_def, results = optimize_graph(graph_def, inputs, outputs, passes=["prune_identity", "prune_dead_nodes"])
    identities = [n for n in new_def.node if n.op == "Identity"]
    assert len(identities) <= 1 and results[0].applied >= 4   # the signature's output Identity may stay
    to_float = [n for n in new_def.node if n.op == "Cast" and n.attr["DstT"].type == tf.float32.as_datatype_enum]
    assert len(to_float) == 2 and all(list(n.input) == [to_float[0].input[0]] for n in to_float)
    assert to_float[0].input[0].endswith(":1")
    np.testing.assert_array_equal(run_graph(new_def, inputs, outputs, [X])[0], run_graph(graph_def, inputs, outputs,
                                                                                         [X])[0])


def test_probe_runs_each_subgraph_structure_once(monkeypatch):
    """Two lookups' identical arithmetic under other names is evaluated
    once; a different constant is a different subgraph."""
    from grappler_passes import probe
    from grappler_passes.graph_view import GraphView

    def fn(a, b):
        return (a // 7) * 2, (b // 7) * 2, (b // 8) * 2
    graph_def, _, outputs = frozen_graph(fn, tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.int64))
    view = GraphView(graph_def)
    runs = []
    real_run = probe._run
    monkeypatch.setattr(probe, "_run", lambda *args: runs.append(1) or real_run(*args))
    monkeypatch.setattr(probe, "_CACHE", {})
    feed = [[np.arange(20, dtype=np.int64)]]
    first, second, third = (probe.evaluate(view, [out], [src], feed) for out, src in zip(outputs, "abb"))
    assert len(runs) == 2
    np.testing.assert_array_equal(first[0][0], np.arange(20) // 7 * 2)
    np.testing.assert_array_equal(second[0][0], first[0][0])
    np.testing.assert_array_equal(third[0][0], np.arange(20) // 8 * 2)
    first[0][0][:] = -1   # callers get copies, not the cached arrays
    np.testing.assert_array_equal(probe.evaluate(view, [outputs[0]], ["a"], feed)[0][0], np.arange(20) // 7 * 2)


class _Exploding(GraphPass):
    name = "exploding"

    def run(self, ctx, result):
        ctx.view.remove_nodes([n.name for n in ctx.view.nodes()][:3])
        raise RuntimeError("boom")


class _Corrupting(GraphPass):
    name = "corrupting"

    def run(self, ctx, result):
        ctx.view.remove_nodes([n.name for n in ctx.view.nodes() if n.op == "MatMul"])


@pytest.mark.parametrize("bad", [_Exploding, _Corrupting])
def test_failing_pass_is_reported_and_graph_restored(monkeypatch, bad):
    monkeypatch.setitem(pipeline._PASSES, bad.name, bad)
    graph_def, inputs, outputs = frozen_graph(lambda x: tf.matmul(x, W1), SPEC)
    new_def, results = optimize_graph(graph_def, inputs, outputs, passes=[bad.name])
    assert results[0].error
    assert ops_of(new_def) == ops_of(graph_def)


def test_unknown_pass_name_is_rejected():
    with pytest.raises(pipeline.UnknownPassError, match="nope"):
        pipeline.resolve_passes(["nope"])
