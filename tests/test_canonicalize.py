"""canonicalize: variants rewritten into BiasAdd/Relu form, weights folded;
with custom_ops=False stock TensorFlow's remapper then fuses what it missed."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from tests.graph_util import frozen_graph, ops_of, optimize_graph, run_graph

RNG = np.random.default_rng(9)


def _c(*shape):
    return tf.constant((RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))


W, B, B2 = _c(8, 16), _c(16), _c(16)
SPEC = tf.TensorSpec([None, 8], tf.float32)
X = RNG.standard_normal((4, 8)).astype(np.float32)


def _optimized(fn, custom_ops, spec=SPEC, x=X):
    graph_def, inputs, outputs = frozen_graph(fn, spec)
    new_def, results = optimize_graph(graph_def, inputs, outputs, custom_ops=custom_ops)
    assert all(not r.error for r in results), [r.error for r in results]
    for got, want in zip(run_graph(new_def, inputs, outputs, [x]), run_graph(graph_def, inputs, outputs, [x])):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return new_def, inputs, outputs


def _runtime_ops(graph_def, inputs, outputs):
    """Ops TensorFlow actually runs after its own Grappler (remapper) pass."""
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        meta = config_pb2.RunMetadata()
        sess.run(outputs, {inputs[0]: X}, options=config_pb2.RunOptions(output_partition_graphs=True),
                 run_metadata=meta)
    return {n.op for g in meta.partition_graphs for n in g.node}


@pytest.mark.parametrize("fn", [
    lambda x: tf.nn.relu(B + tf.matmul(x, W)),
    lambda x: tf.nn.relu(tf.matmul(x, W) + tf.reshape(B, [1, 16])),
    lambda x: tf.maximum(tf.matmul(x, W) + B, 0.0),
])
def test_stock_remapper_fuses_after_canonicalize(fn):
    """After canonicalize TensorFlow's own remapper runs each form as one
    fused MatMul. Without it, the plain remapper (AVX2) misses all three
    forms and oneDNN's (AVX-512) the Maximum one, so stock never does better."""
    graph_def, inputs, outputs = frozen_graph(fn, SPEC)
    stock = _runtime_ops(graph_def, inputs, outputs)
    new_def, inputs, outputs = _optimized(fn, custom_ops=False)
    assert not any(op.startswith("Recopt>") for op in ops_of(new_def))
    ours = _runtime_ops(new_def, inputs, outputs)
    assert {op for op in ours if op.endswith("FusedMatMul")} and not ours & _UNFUSED, ours
    assert len(stock & _UNFUSED) >= len(ours & _UNFUSED)


# What a fused MatMul leaves behind when the remapper misses the pattern.
_UNFUSED = {"MatMul", "BiasAdd", "Add", "AddV2", "Relu", "Maximum"}


def test_bias_chain_and_scale_fold_into_one_layer(ops):
    new_def, _, _ = _optimized(lambda x: tf.nn.relu((tf.matmul(x, W) + B + B2) * 0.5), custom_ops=True)
    assert ops_of(new_def).count("Recopt>FusedMLP") == 1
    assert not {"Mul", "AddV2", "BiasAdd", "MatMul"} & set(ops_of(new_def))


def test_keras_batchnorm_folds_into_the_dense(ops):
    dense, bn = keras.layers.Dense(16), keras.layers.BatchNormalization()
    bn.build((None, 16))
    bn.moving_mean.assign(RNG.standard_normal(16).astype(np.float32))
    bn.moving_variance.assign(RNG.uniform(0.5, 2.0, 16).astype(np.float32))
    bn.gamma.assign(RNG.uniform(0.5, 1.5, 16).astype(np.float32))
    new_def, _, _ = _optimized(lambda x: tf.nn.relu(bn(dense(x), training=False)), custom_ops=True)
    assert ops_of(new_def).count("Recopt>FusedMLP") == 1, ops_of(new_def)
    assert not {"Mul", "Sub", "AddV2", "Rsqrt"} & set(ops_of(new_def)), ops_of(new_def)


def test_per_column_scale_on_transposed_weight(ops):
    s = tf.constant(RNG.uniform(0.5, 2.0, 16).astype(np.float32))
    new_def, _, _ = _optimized(lambda x: tf.matmul(x, tf.transpose(W), transpose_b=True) * s, custom_ops=True)
    assert "Mul" not in ops_of(new_def)


def test_near_misses_stay(ops):
    wide_bias = tf.constant(RNG.standard_normal((4, 16)).astype(np.float32))
    new_def, _, _ = _optimized(lambda x: tf.matmul(x, W) + wide_bias, custom_ops=False)
    assert "AddV2" in ops_of(new_def) and "BiasAdd" not in ops_of(new_def)
    row_scale = tf.constant(RNG.standard_normal((4, 1)).astype(np.float32))
    new_def, _, _ = _optimized(lambda x: tf.matmul(x, W) * row_scale, custom_ops=False)
    assert "Mul" in ops_of(new_def)
    new_def, _, _ = _optimized(lambda x: tf.maximum(tf.matmul(x, W), 0.1), custom_ops=False)
    assert "Maximum" in ops_of(new_def) and "Relu" not in ops_of(new_def)


@pytest.mark.parametrize("adj", [False, True])
def test_stock_mode_turns_3d_batchmatmul_into_matmul(adj):
    spec = tf.TensorSpec([None, 5, 8], tf.float32)
    x = RNG.standard_normal((3, 5, 8)).astype(np.float32)
    w = tf.transpose(W) if adj else W
    new_def, _, _ = _optimized(lambda v: tf.nn.relu(tf.linalg.matmul(v, w, adjoint_b=adj) + B), custom_ops=False,
                               spec=spec, x=x)
    assert "BatchMatMulV2" not in ops_of(new_def) and "MatMul" in ops_of(new_def)


def test_custom_ops_mode_turns_tensordot_into_one_fused_op(ops):
    spec = tf.TensorSpec([None, 5, 8], tf.float32)
    x = RNG.standard_normal((3, 5, 8)).astype(np.float32)
    new_def, _, _ = _optimized(lambda v: tf.nn.relu(tf.tensordot(v, W, axes=1) + B), custom_ops=True, spec=spec, x=x)
    assert ops_of(new_def).count("Recopt>FusedMLP") == 1
    assert not {"Reshape", "Transpose", "MatMul", "BatchMatMulV2"} & set(ops_of(new_def))
