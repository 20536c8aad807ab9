"""fuse_interaction: each spelling of DLRM's dot interaction becomes
Recopt>DotInteraction with the same answers; near-misses stay stock."""
import re

import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tests.conftest import saved_model_nodes
from tests.graph_util import frozen_graph, ops_of, optimize_graph, run_graph

RNG = np.random.default_rng(1)
F, D = 6, 16
X = RNG.standard_normal((9, F, D)).astype(np.float32)
XSPEC = tf.TensorSpec([None, F, D], tf.float32)
ROWS, COLS = np.tril_indices(F, -1)
LOWER = (ROWS * F + COLS).astype(np.int32)
LOWER_DIAG = np.flatnonzero(np.tril(np.ones((F, F)))).astype(np.int32)
PASSES = ["fuse_interaction", "prune_dead_nodes"]
STOCK = {"BatchMatMulV2", "Einsum", "GatherV2", "Transpose", "SelectV2", "MatrixBandPart", "Where"}


def _flat(gram):
    return tf.reshape(gram, [-1, F * F])


def _keras_take(flat, indices):
    """keras.ops.take's graph: negative indices wrapped by the axis length."""
    idx = tf.constant(indices)
    n = tf.shape(flat, out_type=tf.int32)[1]
    return tf.gather(flat, tf.where(idx < 0, idx + n, idx), axis=1)


def _tfrs_dot_interaction(x, self_interaction, skip_gather=False):
    """tensorflow_recommenders' DotInteraction.call body (v0.7), on [B, F, d]
    built the way it builds it: concat of the features, reshape to [B, -1, d]."""
    features = tf.unstack(x, axis=1)
    batch, dim = tf.shape(features[0])[0], tf.shape(features[0])[1]
    stacked = tf.reshape(tf.concat(features, axis=-1), [batch, -1, dim])
    xactions = tf.matmul(stacked, stacked, transpose_b=True)
    ones = tf.ones_like(xactions)
    if self_interaction:
        lower = tf.linalg.band_part(ones, -1, 0)
        upper = ones - lower
        out_dim = F * (F + 1) // 2
    else:
        upper = tf.linalg.band_part(ones, 0, -1)
        lower = ones - upper
        out_dim = F * (F - 1) // 2
    if skip_gather:
        return tf.reshape(tf.where(tf.cast(upper, tf.bool), tf.zeros_like(xactions), xactions), (batch, F * F))
    return tf.reshape(tf.boolean_mask(xactions, lower), (batch, out_dim))


def _zeroed(gram, mask_fn, zeros_first=True, zeros=tf.zeros_like):
    mask, z = mask_fn(gram), zeros(gram)
    return tf.reshape(tf.where(mask, z, gram) if zeros_first else tf.where(mask, gram, z), (-1, F * F))


def _masked(gram, mask_fn, out_dim):
    return tf.reshape(tf.boolean_mask(gram, mask_fn(gram)), (-1, out_dim))


FORMS = {
    "transpose_op": lambda x: tf.gather(_flat(tf.matmul(x, tf.transpose(x, [0, 2, 1]))), LOWER, axis=1),
    "transpose_b": lambda x: tf.gather(_flat(tf.matmul(x, x, transpose_b=True)), LOWER, axis=1),
    "einsum": lambda x: tf.gather(_flat(tf.einsum("bfd,bgd->bfg", x, x)), LOWER, axis=1),
    "with_diagonal": lambda x: tf.gather(_flat(tf.matmul(x, x, transpose_b=True)), LOWER_DIAG, axis=1),
    "keras_take": lambda x: _keras_take(_flat(tf.matmul(x, tf.transpose(x, [0, 2, 1]))), LOWER),
    "negative_indices": lambda x: _keras_take(_flat(tf.matmul(x, x, transpose_b=True)), LOWER - F * F),
    "tfrs_boolean_mask": lambda x: _tfrs_dot_interaction(x, self_interaction=False),
    "tfrs_self_interaction": lambda x: _tfrs_dot_interaction(x, self_interaction=True),
    "tfrs_skip_gather": lambda x: _tfrs_dot_interaction(x, self_interaction=False, skip_gather=True),
    "tfrs_skip_gather_self": lambda x: _tfrs_dot_interaction(x, self_interaction=True, skip_gather=True),
    "where_zeros_last": lambda x: _zeroed(tf.matmul(x, x, transpose_b=True), lambda g: tf.cast(
        tf.linalg.band_part(tf.ones_like(g), -1, 0), tf.bool), zeros_first=False),
    "bool_mask_cast": lambda x: _masked(tf.matmul(x, x, transpose_b=True), lambda g: tf.cast(
        tf.linalg.band_part(tf.ones_like(g), -1, 0), tf.bool), F * (F + 1) // 2),
}


def _run(fn, passes=PASSES):
    graph_def, inputs, outputs = frozen_graph(fn, XSPEC)
    optimized, results = optimize_graph(graph_def, inputs, outputs, passes=passes)
    want = run_graph(graph_def, inputs, outputs, [X])
    got = run_graph(optimized, inputs, outputs, [X])
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    return ops_of(optimized), results


@pytest.mark.parametrize("form", sorted(FORMS))
def test_interaction_forms_fuse(ops, form):
    got_ops, _ = _run(FORMS[form])
    assert got_ops.count("Recopt>DotInteraction") == 1, got_ops
    assert not STOCK & set(got_ops), got_ops


DENSE = RNG.standard_normal((9, 5)).astype(np.float32)


def _run_with_dense(fn):
    graph_def, inputs, outputs = frozen_graph(fn, XSPEC, tf.TensorSpec([None, 5], tf.float32))
    optimized, _ = optimize_graph(graph_def, inputs, outputs, passes=PASSES)
    want = run_graph(graph_def, inputs, outputs, [X, DENSE])
    got = run_graph(optimized, inputs, outputs, [X, DENSE])
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    return [n for n in optimized.node if n.op == "Recopt>DotInteraction"], ops_of(optimized)


@pytest.mark.parametrize("form", ["transpose_b", "tfrs_boolean_mask", "tfrs_skip_gather"])
@pytest.mark.parametrize("dense_first", [True, False])
def test_dense_concat_is_absorbed(ops, form, dense_first):
    """DLRM's concat([dense, interactions], 1): the op writes it directly."""
    def fn(x, dense):
        parts = [dense, FORMS[form](x)]
        return tf.concat(parts if dense_first else parts[::-1], axis=1)
    fused, _ = _run_with_dense(fn)
    assert len(fused) == 1 and fused[0].attr["num_dense"].i == 1 and fused[0].attr["dense_first"].b == dense_first


def _top_layer(w):
    def fn(x, dense):
        return tf.matmul(tf.concat([dense, FORMS["tfrs_skip_gather"](x)], axis=1), w)
    return fn


def test_zero_columns_leave_with_the_top_kernels_rows(ops):
    """skip_gather feeding a constant kernel: the op writes only the kept
    pairs and the kernel loses the zero columns' rows."""
    w = RNG.standard_normal((5 + F * F, 7)).astype(np.float32)
    fused, got_ops = _run_with_dense(_top_layer(w))
    assert len(fused) == 1 and list(fused[0].attr["indices"].list.i) == LOWER.tolist()
    assert "SelectV2" not in got_ops


def test_zero_columns_stay_when_the_kernel_has_inf_there(ops):
    w = RNG.standard_normal((5 + F * F, 7)).astype(np.float32)
    w[5 + F - 1, 3] = np.inf   # row of pair (0, F-1), in the zeroed upper triangle
    fused, _ = _run_with_dense(_top_layer(w))
    assert len(fused) == 1 and list(fused[0].attr["indices"].list.i).count(-1) == F * (F + 1) // 2


def test_wider_concat_keeps_its_concat(ops):
    fused, got_ops = _run_with_dense(lambda x, dense: tf.concat([dense, FORMS["transpose_b"](x), dense], axis=1))
    assert len(fused) == 1 and fused[0].attr["num_dense"].i == 0 and "ConcatV2" in got_ops, got_ops


def _gram_twice(x):
    gram = tf.matmul(x, x, transpose_b=True)
    return tf.gather(_flat(gram), LOWER, axis=1), tf.reduce_sum(gram, axis=[1, 2])


NEAR_MISSES = {
    "other_operand": lambda x: tf.gather(_flat(tf.matmul(x, 2.0 * x, transpose_b=True)), LOWER, axis=1),
    "gram_used_elsewhere": lambda x: _gram_twice(x),
    "wrong_transpose": lambda x: tf.gather(_flat(tf.matmul(tf.transpose(x, [0, 2, 1]), x)), LOWER, axis=1),
    "gather_rows": lambda x: tf.gather(_flat(tf.matmul(x, x, transpose_b=True)), [0, 1], axis=0),
    "where_data_mask": lambda x: _zeroed(tf.matmul(x, x, transpose_b=True), lambda g: g > 0.5),
    "where_ones_fill": lambda x: _zeroed(tf.matmul(x, x, transpose_b=True), lambda g: tf.cast(
        tf.linalg.band_part(tf.ones_like(g), 0, -1), tf.bool), zeros=tf.ones_like),
    "where_other_gram": lambda x: _zeroed(tf.matmul(x, x, transpose_b=True), lambda g: tf.cast(
        tf.linalg.band_part(tf.ones_like(tf.matmul(x, 2.0 * x, transpose_b=True)), 0, -1), tf.bool)),
    # A data-dependent mask keeps a different count per example: never a constant selection.
    "mask_not_from_ones": lambda x: _masked(tf.matmul(x, x, transpose_b=True),
                                            lambda g: tf.linalg.band_part(g, -1, 0) > 100.0, 0),
}


# What the report says about each near miss: the patterns name the node at fault.
NEAR_MISS_REASONS = {
    "other_operand": r"'mul.*' is not the same tensor as x",
    "gram_used_elsewhere": r"is used elsewhere",
    "wrong_transpose": r"is Placeholder, not Transpose",
    "gather_rows": r"the masked gather is not reshaped to \[B, m\] alone",
    "where_data_mask": r"is Greater, not",
    "where_ones_fill": r"is OnesLike, not ZerosLike",
    "where_other_gram": r"is not the same tensor as product",
    "mask_not_from_ones": r"'Greater' is Greater, not Cast or MatrixBandPart or Sub",
}


@pytest.mark.parametrize("form", sorted(NEAR_MISSES))
def test_near_misses_stay_stock(ops, form):
    got_ops, results = _run(NEAR_MISSES[form])
    assert "Recopt>DotInteraction" not in got_ops, got_ops
    reasons = [r for res in results for _, r in res.skipped]
    assert any(re.search(NEAR_MISS_REASONS[form], r) for r in reasons), reasons


def test_adjoint_x_is_reported(ops):
    _, results = _run(lambda x: tf.gather(_flat(tf.matmul(x, x, adjoint_a=True)), LOWER[:3], axis=1))
    assert any(re.search(r"adj_x is set on", r) for res in results for _, r in res.skipped)


def test_runtime_indices_stay_stock(ops):
    def fn(x, idx):
        return tf.gather(_flat(tf.matmul(x, x, transpose_b=True)), idx, axis=1)
    graph_def, inputs, outputs = frozen_graph(fn, XSPEC, tf.TensorSpec([None], tf.int32))
    optimized, results = optimize_graph(graph_def, inputs, outputs, passes=PASSES)
    assert "Recopt>DotInteraction" not in ops_of(optimized)


@pytest.mark.parametrize("model", ["tfrs_dlrm", "tfrs_dlrm_garden"])
def test_tfrs_dlrm_interaction_fuses_end_to_end(ops, zoo_dir, tmp_path, model):
    """tf_keras DLRMs with tfrs' DotInteraction, exported and optimized: the
    boolean_mask triangle (tfrs_dlrm) or skip_gather's zeroed upper triangle
    (tfrs_dlrm_garden) becomes one Recopt>DotInteraction, with parity. The
    garden model's 21 zero columns (F = 6) leave with their top-kernel rows."""
    out = tmp_path / model
    report = tf_recopt.optimize(zoo_dir(model), str(out))
    assert report.written and report.parity_ok
    fused = saved_model_nodes(str(out), "Recopt>DotInteraction")
    assert len(fused) == 1 and fused[0].attr["num_dense"].i == 1   # with its Concatenate([bottom, .])
    assert list(fused[0].attr["indices"].list.i) == LOWER.tolist()
    assert not saved_model_nodes(str(out), "Where") and not saved_model_nodes(str(out), "SelectV2")
