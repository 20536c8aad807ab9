"""column_vectors: layers written on [B, d, 1] columns with the weight on
the left (DeepCTR's DCNMix and DCN "matrix" cross layers) become MatMuls on
rows with the same answers, so fuse_dense can take them; near misses stay."""
import numpy as np
import pytest
import tensorflow as tf

from tests.graph_util import optimize_with_parity

RNG = np.random.default_rng(71)
DIM, RANK, EXPERTS = 19, 5, 3
XSPEC = tf.TensorSpec([None, DIM], tf.float32)


def _w(*shape):
    return tf.constant((RNG.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32))


U = [_w(EXPERTS, DIM, RANK) for _ in range(2)]
V = [_w(EXPERTS, DIM, RANK) for _ in range(2)]
C = [_w(EXPERTS, RANK, RANK) for _ in range(2)]
GATES = [_w(DIM, 1) for _ in range(EXPERTS)]
BIAS = [_w(DIM, 1) for _ in range(2)]
KERNELS = [_w(DIM, DIM) for _ in range(3)]


def cross_net_mix(inputs, layers=2):
    """DeepCTR 0.9.4 CrossNetMix.call (gating Dense layers as matmuls)."""
    x_0 = tf.expand_dims(inputs, axis=2)
    x_l = x_0
    for i in range(layers):
        experts, gates = [], []
        for e in range(EXPERTS):
            gates.append(tf.matmul(tf.squeeze(x_l, axis=2), GATES[e]))
            v_x = tf.nn.tanh(tf.einsum("ij,bjk->bik", tf.transpose(V[i][e]), x_l))
            v_x = tf.nn.tanh(tf.einsum("ij,bjk->bik", C[i][e], v_x))
            uv_x = tf.einsum("ij,bjk->bik", U[i][e], v_x)
            experts.append(tf.squeeze(x_0 * (uv_x + BIAS[i]), axis=2))
        stacked = tf.stack(experts, 2)
        weights = tf.nn.softmax(tf.stack(gates, 1), 1)
        x_l = tf.matmul(stacked, weights) + x_l
    return tf.squeeze(x_l, axis=2)


def cross_net_matrix(inputs, layers=3, equation="ij,bjk->bik"):
    """DeepCTR 0.9.4 CrossNet.call, parameterization='matrix'."""
    x_0 = tf.expand_dims(inputs, axis=2)
    x_l = x_0
    for i in range(layers):
        kernel = KERNELS[i] if equation.startswith("ij") else tf.transpose(KERNELS[i])
        x_l = x_0 * (tf.einsum(equation, kernel, x_l) + BIAS[i % 2]) + x_l
    return tf.squeeze(x_l, axis=2)


def _optimize(fn, batch=11, width=DIM):
    x = RNG.standard_normal((batch, width)).astype(np.float32)
    return optimize_with_parity(fn, [tf.TensorSpec([None, width], tf.float32)], [x], "column_vectors",
                                rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch", [0, 1, 11, 300])
def test_cross_net_mix_becomes_row_major_dense_layers(batch):
    ops, skips = _optimize(cross_net_mix, batch)
    assert not skips, skips
    # Every projection is a GEMM now, each expert's V-tanh-C-tanh-U one MLP,
    # and the experts' stack on the inner axis is gone.
    left = {"Einsum", "BatchMatMulV2", "ExpandDims"} & set(ops)
    assert not left, sorted(set(ops))
    assert ops.count("Squeeze") == 2, ops  # the gate weights' [B, E, 1], a view
    assert ops.count("Recopt>FusedMLP") >= 2 * EXPERTS, ops
    assert ops.count("Pack") == 2, ops  # the gates' [B, E, 1], not the experts'


@pytest.mark.parametrize("equation", ["ij,bjk->bik", "ji,bjk->bik"])
def test_matrix_cross_net_becomes_row_major(equation):
    ops, skips = _optimize(lambda x: cross_net_matrix(x, equation=equation))
    assert not skips, skips
    assert {"Einsum", "ExpandDims", "Squeeze"}.isdisjoint(ops), ops
    assert ops.count("Recopt>FusedMLP") == 3, ops


def test_columns_wider_than_one_are_left_alone():
    def fn(x):
        cols = tf.reshape(x, [-1, DIM, 2])
        return tf.reshape(tf.einsum("ij,bjk->bik", KERNELS[0], cols), [-1, 2 * DIM])
    ops, skips = _optimize(fn, width=2 * DIM)
    assert "Einsum" in ops, ops
    assert any("is not a [B, d, 1] column" in why for why in skips), skips


def test_weight_computed_from_the_input_is_left_alone():
    def fn(x):
        w = tf.reshape(tf.reduce_sum(x) * tf.ones([DIM * DIM]), [DIM, DIM])
        return tf.squeeze(tf.einsum("ij,bjk->bik", w, tf.expand_dims(x, 2)), 2)
    ops, skips = _optimize(fn)
    assert "Einsum" in ops, ops
    assert any("no constant weight" in why for why in skips), skips


def _projected(column):
    """A rewritable einsum beside the form under test: without one the pass
    stops before its mixture and sinking rules run."""
    return tf.squeeze(tf.einsum("ij,bjk->bik", KERNELS[0], column), 2)


def test_expand_dims_it_did_not_make_are_not_moved():
    def fn(x):
        column = tf.expand_dims(x, 2)
        return _projected(column) + tf.squeeze(tf.tanh(column * 2.0), 2)
    ops, skips = _optimize(fn)
    assert not skips and "Einsum" not in ops, (skips, ops)
    # Moving the model's own ExpandDims down would have cancelled its Squeeze.
    assert "Squeeze" in ops and "ExpandDims" in ops, ops


def test_expert_stack_used_elsewhere_keeps_its_answers():
    def fn(x):
        stacked = tf.stack([x, 2.0 * x, x * x], 2)
        q = tf.nn.softmax(tf.expand_dims(x[:, :3], 2), 1)
        mixed = tf.squeeze(tf.matmul(stacked, q), 2)
        return mixed + tf.reduce_sum(stacked, 2) + _projected(tf.expand_dims(x, 2))
    ops, _ = _optimize(fn)
    assert "BatchMatMulV2" not in ops, ops   # the mixture became a weighted sum
    assert "Pack" in ops, ops                # the stack stays for reduce_sum
