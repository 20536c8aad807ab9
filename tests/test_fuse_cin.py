"""fuse_cin: DeepCTR's CIN (xDeepFM) becomes outer products + one
Recopt>FusedMLP per layer with the same answers; near misses stay stock
and say why."""
import re

import numpy as np
import pytest
import tensorflow as tf

from grappler_passes import run_pipeline
from tests.graph_util import frozen_graph, ops_of, optimize_graph, optimize_with_parity, run_graph

RNG = np.random.default_rng(59)
F, D = 7, 4
X = RNG.standard_normal((9, F, D)).astype(np.float32)
XSPEC = tf.TensorSpec([None, F, D], tf.float32)
STOCK_CIN = {"Conv2D", "BatchMatMulV2", "Pack", "ExpandDims", "Squeeze"}


def _weights(sizes, split_half):
    fields, ws, bs = [F], [], []
    for i, size in enumerate(sizes):
        ws.append(tf.constant((RNG.standard_normal((1, F * fields[-1], size)) / np.sqrt(F * fields[-1]))
                              .astype(np.float32)))
        bs.append(tf.constant(RNG.standard_normal(size).astype(np.float32)))
        fields.append(size // 2 if split_half and i + 1 < len(sizes) else size)
    return fields, ws, bs


def cin(x, sizes=(6, 4), split_half=True, activation=tf.nn.relu, conv=None, product=None, leak=False,
        bias_add=tf.nn.bias_add):
    """DeepCTR 0.9.4 CIN.call (activation_layer(activation) as a plain op)."""
    fields, ws, bs = _weights(sizes, split_half)
    dim = int(x.shape[-1])
    hidden, final, leaked = [x], [], []
    split0 = tf.split(hidden[0], dim * [1], 2)
    for idx, size in enumerate(sizes):
        split = tf.split(hidden[-1], dim * [1], 2)
        m = (product or (lambda a, b: tf.matmul(a, b, transpose_b=True)))(split0, split)
        leaked.append(m)
        o = tf.transpose(tf.reshape(m, [dim, -1, fields[0] * fields[idx]]), perm=[1, 0, 2])
        c = (conv or (lambda t, w: tf.nn.conv1d(t, filters=w, stride=1, padding="VALID")))(o, ws[idx])
        c = bias_add(c, bs[idx])
        c = activation(c) if activation is not None else c
        c = tf.transpose(c, perm=[0, 2, 1])
        if split_half and idx != len(sizes) - 1:
            nxt, direct = tf.split(c, 2 * [size // 2], 1)
        else:
            nxt = direct = c
        final.append(direct)
        hidden.append(nxt)
    out = tf.reduce_sum(tf.concat(final, axis=1), -1)
    return (out, tf.reduce_sum(leaked[0])) if leak else out


def _optimize(fn):
    return optimize_with_parity(fn, [XSPEC], [X], "fuse_cin", rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sizes, split_half", [((6, 4), True), ((5,), False), ((4, 6, 2), True), ((3, 3), False)])
@pytest.mark.parametrize("activation", [tf.nn.relu, None, tf.nn.sigmoid], ids=["relu", "linear", "sigmoid"])
def test_cin_layers_fuse_with_parity(ops, sizes, split_half, activation):
    got, skips = _optimize(lambda x: cin(x, sizes, split_half, activation))
    assert got.count("Recopt>FusedMLP") == len(sizes), (got, skips)
    assert not STOCK_CIN & set(got), got


def test_empty_batch(ops):
    """DeepCTR's CIN cannot run an empty batch (its Reshape to [D, -1, K]
    of zero elements leaves the split sizes wrong); the rewrite answers it."""
    graph_def, inputs, outputs = frozen_graph(lambda x: cin(x), XSPEC)
    new, _ = optimize_graph(graph_def, inputs, outputs)
    x = np.zeros((0, F, D), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError):
        run_graph(graph_def, inputs, outputs, [x])
    (got,) = run_graph(new, inputs, outputs, [x])
    assert got.shape == (0, 6 // 2 + 4)


@pytest.mark.parametrize("batch", [1, 300])
def test_batch_sizes_and_nan(ops, batch):
    graph_def, inputs, outputs = frozen_graph(lambda x: cin(x), XSPEC)
    new, _ = optimize_graph(graph_def, inputs, outputs)
    assert "Recopt>FusedMLP" in ops_of(new)
    x = RNG.standard_normal((batch, F, D)).astype(np.float32)
    if batch:
        x[batch // 2, 3, 1] = np.nan
    (want,), (got,) = run_graph(graph_def, inputs, outputs, [x]), run_graph(new, inputs, outputs, [x])
    assert got.shape == want.shape == (batch, 6 // 2 + 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)   # NaN where stock has NaN, only there
    if batch:
        assert np.isnan(got[batch // 2]).all() and np.isfinite(np.delete(got, batch // 2, 0)).all()


def test_int8_precision_quantizes_wide_layers(ops):
    """Under precision="int8" the CIN's GEMM is FusedMLP's int8 layer where
    both sides are wide enough (fuse_dense's rule), fp32 otherwise."""
    from tf_recopt.options import OptimizeOptions
    opts = OptimizeOptions(precision="int8")
    opts.validate_fields()
    graph_def, inputs, outputs = frozen_graph(lambda x: cin(x, sizes=(32, 8)), XSPEC)
    optimize_graph(graph_def, inputs, outputs, passes=[])   # loads the ops
    new, _ = run_pipeline(graph_def, {n.split(":")[0] for n in inputs + outputs}, None, True, opts)
    int8 = [list(n.attr["int8_layers"].list.i) for n in new.node if n.op == "Recopt>FusedMLP"]
    assert sorted(int8) == [[], [0]], int8   # 49 -> 32 is int8; 7*16 -> 8 is too narrow


NEAR_MISSES = {
    "strided_conv": (dict(sizes=(6,), conv=lambda t, w: tf.nn.conv1d(t, filters=w, stride=2, padding="VALID")),
                     r"is not a stride-1, VALID, NHWC conv1d"),
    "same_padding": (dict(conv=lambda t, w: tf.nn.conv1d(t, filters=w, stride=1, padding="SAME")),
                     r"is not a stride-1, VALID, NHWC conv1d"),
    "no_transpose_b": (dict(product=lambda a, b: tf.matmul(a, tf.transpose(b, [0, 1, 3, 2]))),
                       r"is not a float32 a @ b\^T"),
    "products_used_elsewhere": (dict(leak=True), r"also used (by|outside)"),
    # H = D = 4, so only the layout tells the bias axis apart.
    "nchw_bias": (dict(sizes=(D,), bias_add=lambda c, b: tf.nn.bias_add(c, b, data_format="NCHW")),
                  r"adds its bias along axis 1 \(NCHW\)"),
}


@pytest.mark.parametrize("form", sorted(NEAR_MISSES))
def test_near_misses_stay_stock_and_say_why(ops, form):
    kwargs, reason = NEAR_MISSES[form]
    got, skips = _optimize(lambda x: cin(x, **kwargs))
    assert "Conv2D" in got, got
    assert any(re.search(reason, why) for why in skips), skips


def test_runtime_filter_is_left_alone(ops):
    def fn(x, w):
        o = tf.transpose(tf.reshape(tf.matmul(tf.split(x, D * [1], 2), tf.split(x, D * [1], 2), transpose_b=True),
                                    [D, -1, F * F]), [1, 0, 2])
        return tf.nn.relu(tf.nn.bias_add(tf.nn.conv1d(o, w, 1, "VALID"), tf.ones([3])))
    graph_def, inputs, outputs = frozen_graph(fn, XSPEC, tf.TensorSpec([1, F * F, 3], tf.float32))
    new, results = optimize_graph(graph_def, inputs, outputs)
    assert "Conv2D" in ops_of(new)
    skips = [why for r in results if r.name == "fuse_cin" for _, why in r.skipped]
    assert any("not Const (the pattern's w)" in why for why in skips), skips
