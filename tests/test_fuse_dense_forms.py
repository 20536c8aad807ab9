"""fuse_dense on the many spellings of a dense layer (issue: pattern-agnostic
FC fusion): each must fuse into one Recopt>FusedMLP with the right activation,
keep the answers, and leave near-misses alone."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from grappler_passes import pipeline
from tests.graph_util import frozen_graph, ops_of, optimize_graph, run_graph

RNG = np.random.default_rng(5)


def _c(*shape):
    return tf.constant((RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))


W, B, W2 = _c(8, 16), _c(16), _c(16, 4)
SPEC2 = tf.TensorSpec([None, 8], tf.float32)
SPEC3 = tf.TensorSpec([None, 5, 8], tf.float32)


def _fused(fn, spec=SPEC2, passes=None):
    graph_def, inputs, outputs = frozen_graph(fn, spec)
    x = RNG.standard_normal([3] + spec.shape.as_list()[1:]).astype(np.float32) * 2
    new_def, results = optimize_graph(graph_def, inputs, outputs, passes=passes)
    assert all(not r.error for r in results), [r.error for r in results]
    for got, want in zip(run_graph(new_def, inputs, outputs, [x]), run_graph(graph_def, inputs, outputs, [x])):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    return [n for n in new_def.node if n.op == "Recopt>FusedMLP"], ops_of(new_def)


def _acts(node):
    return [s.decode() for s in node.attr["activations"].list.s]


@pytest.mark.parametrize("name,act,want", [
    ("tf swish", tf.nn.silu, "swish"),
    ("keras swish", keras.activations.silu, "swish"),
    ("gelu erfc", lambda h: tf.nn.gelu(h, approximate=False), "gelu"),
    ("gelu erf", lambda h: 0.5 * h * (1.0 + tf.math.erf(h / np.sqrt(2.0).astype(np.float32))), "gelu"),
    ("gelu tanh pow", lambda h: tf.nn.gelu(h, approximate=True), "gelu_tanh"),
    ("gelu tanh cube", lambda h: 0.5 * h * (1.0 + tf.tanh(0.7978845608 * (h + 0.044715 * h * h * h))), "gelu_tanh"),
    ("maximum", lambda h: tf.maximum(h, 0.0), "relu"),
    ("maximum left", lambda h: tf.maximum(0.0, h), "relu"),
    ("clip relu6", lambda h: tf.minimum(tf.maximum(h, 0.0), 6.0), "relu6"),
    ("leaky by maximum", lambda h: tf.maximum(h, 0.3 * h), "leaky_relu"),
    ("sigmoid by exp", lambda h: 1.0 / (1.0 + tf.exp(-h)), "sigmoid"),
    ("identity", lambda h: h, "linear"),
])
def test_activation_spellings(ops, name, act, want):
    fused, op_list = _fused(lambda x: act(tf.nn.bias_add(tf.matmul(x, W), B)))
    assert len(fused) == 1 and _acts(fused[0]) == [want], (name, op_list)
    assert not {"Erf", "Erfc", "Tanh", "Sigmoid", "Maximum", "Minimum", "Exp"} & set(op_list), op_list


def test_leaky_alpha_is_recovered(ops):
    fused, _ = _fused(lambda x: tf.maximum(tf.matmul(x, W), 0.3 * tf.matmul(x, W)))
    # two distinct MatMuls: not a single-input activation, nothing fused across them
    assert all(_acts(f) == ["linear"] for f in fused)
    fused, _ = _fused(lambda x: (lambda h: tf.maximum(h, 0.25 * h))(tf.matmul(x, W)))
    assert fused[0].attr["alphas"].list.f[0] == pytest.approx(0.25)


@pytest.mark.parametrize("name,layer,spec", [
    ("batchmatmul 3d", lambda x: tf.nn.relu(tf.linalg.matmul(x, W) + B), SPEC3),
    ("batchmatmul adj_y", lambda x: tf.nn.relu(tf.linalg.matmul(x, tf.transpose(W), adjoint_b=True) + B), SPEC3),
    ("einsum 2d", lambda x: tf.nn.relu(tf.einsum("ab,bc->ac", x, W) + B), SPEC2),
    ("einsum 3d", lambda x: tf.nn.relu(tf.einsum("abc,cd->abd", x, W) + B), SPEC3),
    ("einsum ellipsis", lambda x: tf.nn.relu(tf.einsum("...c,cd->...d", x, W) + B), SPEC3),
    ("einsum transposed", lambda x: tf.nn.relu(tf.einsum("abc,dc->abd", x, tf.transpose(W)) + B), SPEC3),
    ("tensordot", lambda x: tf.nn.relu(tf.tensordot(x, W, axes=1) + B), SPEC3),
    ("matmul transpose_a", lambda x: tf.nn.relu(tf.matmul(tf.transpose(x), W, transpose_a=True) + B), SPEC2),
])
def test_matmul_spellings(ops, name, layer, spec):
    fused, op_list = _fused(layer, spec)
    assert len(fused) == 1 and _acts(fused[0]) == ["relu"], (name, op_list)
    assert not {"MatMul", "BatchMatMulV2", "Einsum"} & set(op_list), op_list


def test_keras3_dense_stack_on_sequences(ops):
    layers = [keras.layers.Dense(16, activation="gelu"), keras.layers.Dense(4, activation="swish")]
    fused, op_list = _fused(lambda x: layers[1](layers[0](x)), SPEC3)
    assert len(fused) == 1 and _acts(fused[0]) == ["gelu", "swish"], op_list


@pytest.mark.parametrize("name,fn,act", [
    ("scaled relu", lambda h: 2.0 * tf.nn.relu(h), "relu"),          # the Mul stays outside
    ("shifted maximum", lambda h: tf.maximum(h, 0.5), "linear"),     # not an activation we know
    ("vector constant", lambda h: tf.maximum(h, tf.zeros([16])), "linear"),
])
def test_near_miss_activations_stay_outside(ops, name, fn, act):
    fused, op_list = _fused(lambda x: fn(tf.nn.bias_add(tf.matmul(x, W), B)))
    assert len(fused) == 1 and _acts(fused[0]) == [act], (name, op_list)


def test_activation_used_twice_is_not_absorbed_past_the_split(ops):
    def fn(x):
        h = tf.nn.bias_add(tf.matmul(x, W), B)
        return tf.nn.silu(h), h * 3.0
    fused, op_list = _fused(fn)
    assert len(fused) == 1 and _acts(fused[0]) == ["linear"], op_list


def test_parallel_towers_share_one_wider_layer(ops):
    experts = [(_c(8, 12), _c(12), _c(12, 3)) for _ in range(4)]

    def fn(x):
        outs = [tf.matmul(tf.nn.relu(tf.matmul(x, w) + b), w2) for w, b, w2 in experts]
        gate = tf.nn.softmax(tf.matmul(x, _GATE))          # linear first layer: its own group
        return tf.add_n(outs) * gate[:, :1], tf.nn.relu(tf.matmul(x, W) + B)
    fused, op_list = _fused(fn, passes=list(pipeline.DEFAULT_ORDER[:-1]) + ["combine_parallel_dense",
                                                                             "prune_dead_nodes"])
    combined = [n for n in fused if n.name.endswith("/recopt_combined")]
    assert len(combined) == 1 and _acts(combined[0]) == ["relu"], op_list
    assert op_list.count("SplitV") == 1
    # 4 experts (relu) + the relu tower share one layer; each expert keeps its second layer
    assert sum(1 for n in fused if n.attr["num_layers"].i == 1 and n not in combined) == 5


def test_parallel_layers_with_different_activations_stay_apart(ops):
    fused, op_list = _fused(lambda x: (tf.nn.relu(tf.matmul(x, W) + B), tf.sigmoid(tf.matmul(x, W) + B)),
                            passes=["canonicalize", "fuse_dense", "combine_parallel_dense"])
    assert len(fused) == 2 and "SplitV" not in op_list


_GATE = _c(8, 4)


def test_int8_layers_follow_their_layers_through_combine_parallel(ops):
    """precision="int8" marks the layers at least 16 wide both ways; when
    parallel towers share their first layer, the combined layer keeps its
    int8 flag and each tower's remaining indices shift down by one."""
    from tests.graph_util import frozen_graph
    from tf_recopt.options import OptimizeOptions
    towers = [(_c(32, 24), _c(24), _c(24, 20), _c(20), _c(20, 1)) for _ in range(3)]

    def fn(x):
        return [tf.matmul(tf.nn.relu(tf.matmul(tf.nn.relu(tf.matmul(x, w) + b), w2) + b2), w3)
                for w, b, w2, b2, w3 in towers]
    graph_def, inputs, outputs = frozen_graph(fn, tf.TensorSpec([None, 32], tf.float32))
    protected = {n.split(":")[0] for n in inputs + outputs}
    new_def, results = pipeline.run_pipeline(
        graph_def, protected, options=OptimizeOptions(precision="int8"),
        passes=list(pipeline.DEFAULT_ORDER[:-1]) + ["combine_parallel_dense", "prune_dead_nodes"])
    assert all(not r.error for r in results), [r.error for r in results]
    fused = [n for n in new_def.node if n.op == "Recopt>FusedMLP"]
    combined = [n for n in fused if n.name.endswith("/recopt_combined")]
    assert len(combined) == 1 and list(combined[0].attr["int8_layers"].list.i) == [0]
    rest = [n for n in fused if n not in combined]
    assert len(rest) == 3 and all(list(n.attr["int8_layers"].list.i) == [0] and n.attr["num_layers"].i == 2
                                  for n in rest)
    x = RNG.standard_normal([5, 32]).astype(np.float32)
    for got, want in zip(run_graph(new_def, inputs, outputs, [x]), run_graph(graph_def, inputs, outputs, [x])):
        np.testing.assert_allclose(got, want, rtol=5e-2, atol=5e-2)
