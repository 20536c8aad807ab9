"""fuse_topk: each spelling of score + top-k becomes Recopt>ScoreTopK, long
TopKV2s become Recopt>TopK, and near-misses stay as they were.

Candidates and queries hold small integers, so every dot product is exact in
fp32 whatever the summation order, and ids can be compared exactly."""
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tf_recopt.errors import ParityError
from tests.conftest import saved_model_nodes
from tests.graph_util import frozen_graph, ops_of, optimize_graph, run_graph

RNG = np.random.default_rng(0)
N, D, K = 20_000, 16, 100
C = RNG.integers(-4, 5, (N, D)).astype(np.float32)
BIAS = RNG.integers(-8, 9, N).astype(np.float32)
Q = RNG.integers(-4, 5, (5, D)).astype(np.float32)
QSPEC = tf.TensorSpec([None, D], tf.float32)


def _check(fn, expect_op="Recopt>ScoreTopK", passes=("fuse_topk", "prune_dead_nodes")):
    graph_def, inputs, outputs = frozen_graph(fn, QSPEC)
    optimized, results = optimize_graph(graph_def, inputs, outputs, passes=list(passes))
    got_ops = ops_of(optimized)
    want = run_graph(graph_def, inputs, outputs, [Q])
    got = run_graph(optimized, inputs, outputs, [Q])
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)
    _check.last = optimized
    return got_ops, results


def _fused_nodes():
    return [n for n in _check.last.node if n.op == "Recopt>ScoreTopK"]


FORMS = {
    "matmul_transpose_b": lambda q: tf.math.top_k(tf.matmul(q, C, transpose_b=True), K),
    "matmul_transpose_op": lambda q: tf.math.top_k(tf.matmul(q, tf.transpose(tf.constant(C))), K),
    "matmul_d_by_n": lambda q: tf.math.top_k(tf.matmul(q, C.T.copy()), K),
    "einsum": lambda q: tf.math.top_k(tf.einsum("bd,nd->bn", q, C), K),
    "einsum_d_by_n": lambda q: tf.math.top_k(tf.einsum("ij,jk->ik", q, C.T.copy()), K),
    "batch_matmul_adj_y": lambda q: tf.math.top_k(tf.raw_ops.BatchMatMulV2(x=q, y=C, adj_y=True), K),
    "scale_and_bias": lambda q: tf.math.top_k(0.5 * tf.matmul(q, C, transpose_b=True) + BIAS, K),
    "bias_first": lambda q: tf.math.top_k(tf.nn.bias_add(tf.matmul(q, C, transpose_b=True), BIAS), K),
    "gather_ids": lambda q: tf.gather(tf.constant([f"id{i}".encode() for i in range(N)]),
                                      tf.math.top_k(tf.matmul(q, C, transpose_b=True), K).indices),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_score_topk_forms(ops, form):
    got_ops, _ = _check(FORMS[form])
    assert "Recopt>ScoreTopK" in got_ops, form
    assert not {"TopKV2", "MatMul", "Einsum"} & set(got_ops), got_ops
    (node,) = _fused_nodes()
    assert node.attr["layout"].s == b"blocks16" and node.attr["num_candidates"].i == N


def test_candidates_read_elsewhere_stay_rows_in_place(ops):
    """A retrieval model that also gathers the winners' vectors keeps its
    one [n, d] matrix: blocks16 would store it twice."""
    def f(q):
        c = tf.constant(C)
        v, i = tf.math.top_k(tf.matmul(q, c, transpose_b=True), K)
        return v, i, tf.gather(c, i)
    got_ops, _ = _check(f)
    (node,) = _fused_nodes()
    assert node.attr["layout"].s == b"rows"
    consts = [n for n in _check.last.node if n.op == "Const" and n.attr["value"].tensor.tensor_shape.dim
              and n.attr["value"].tensor.tensor_shape.dim[0].size in (N, N // 16)]
    assert len(consts) == 1, [n.name for n in consts]


def test_scores_used_elsewhere_keep_the_matmul(ops):
    def f(q):
        s = tf.matmul(q, C, transpose_b=True)
        v, i = tf.math.top_k(s, K)
        return v, i, tf.reduce_max(s, axis=1)
    got_ops, results = _check(f)
    assert "Recopt>ScoreTopK" not in got_ops and "MatMul" in got_ops
    assert "Recopt>TopK" in got_ops  # n = 20000: long enough for the sampled top-k


def test_short_topk_is_left_alone(ops):
    def f(q):
        return tf.math.top_k(tf.nn.relu(tf.tile(q, [1, 100])), 5)
    got_ops, results = _check(f)
    assert "TopKV2" in got_ops
    assert any("last axis under" in r for res in results for _, r in res.skipped)


def test_non_candidate_bias_is_not_fused(ops):
    def f(q):  # a per-query (column) bias cannot be folded into per-candidate scores
        return tf.math.top_k(tf.matmul(q, C, transpose_b=True) + q[:, :1], K)
    got_ops, _ = _check(f)
    assert "Recopt>ScoreTopK" not in got_ops and "Recopt>TopK" in got_ops


SMALL = C[:100]
# Near misses over 100 candidates (too short for Recopt>TopK, so the skip is
# recorded) and the reason each reports, naming the node at fault.
CHAIN_NEAR_MISSES = {
    "scores_used_elsewhere": (lambda q: (lambda s: (tf.math.top_k(s, 5), tf.reduce_max(s, axis=1)))(
        tf.matmul(q, SMALL, transpose_b=True)), r"'MatMul' is also used by 'Max'"),
    "query_transposed": (lambda q: tf.math.top_k(tf.matmul(tf.transpose(q), SMALL[:, :16].T.copy(),
                                                           transpose_a=True), 5), r"transposes its queries"),
    "per_query_bias": (lambda q: tf.math.top_k(tf.matmul(q, SMALL, transpose_b=True) + q[:, :1], 5),
                       r"is StridedSlice, not Const \(the pattern's b\)"),
    "vector_scale": (lambda q: tf.math.top_k(tf.matmul(q, SMALL, transpose_b=True) * SMALL[:, 0], 5),
                     r"scales by 100 values, not a scalar"),
    "float64": (lambda q: tf.math.top_k(tf.matmul(tf.cast(q, tf.float64), SMALL.astype(np.float64),
                                                  transpose_b=True), 5), r"is not float32"),
}


@pytest.mark.parametrize("form", sorted(CHAIN_NEAR_MISSES))
def test_score_chain_near_misses_say_why(ops, form):
    fn, reason = CHAIN_NEAR_MISSES[form]
    got_ops, results = _check(fn)
    assert "Recopt>ScoreTopK" not in got_ops
    reasons = [r for res in results for _, r in res.skipped]
    assert any(re.search(reason, r) for r in reasons), reasons


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8", "bf16_approx", "int8_approx"])
def test_tfrs_brute_force_index_optimizes(ops, zoo_dir, tmp_path, precision):
    """tensorflow-recommenders BruteForce, with its candidates kept as a
    variable (freeze_max_bytes=0), in every storage. Exact int8/bf16 keep
    the original [n, d] variable for rescoring and read it in place."""
    src = zoo_dir("tfrs_retrieval")
    exact = precision in ("bf16", "int8")
    op = "Recopt>ExactScoreTopK" if exact else "Recopt>ScoreTopK"
    out = str(tmp_path / precision)
    report = tf_recopt.optimize(src, out, precision=precision, freeze_max_bytes=0)
    assert report.rewrites()["fuse_topk"] == 1
    assert len(saved_model_nodes(out, op)) == 1
    assert not saved_model_nodes(out, "TopKV2")
    ids = {p.output: p for p in report.signatures["serving_default"].parity}["item_ids"]
    assert ids.recall is not None and ids.recall >= 0.99 and ids.ok
    if precision == "fp32" or exact:
        assert ids.recall == 1.0
    (node,) = saved_model_nodes(out, op)
    if not exact:
        assert node.attr["layout"].s == b"blocks16"
    # The re-encoded candidates come from a derived variable, not a
    # GraphDef constant.
    assert not [n for n in saved_model_nodes(out, "Const") if n.attr["value"].tensor.tensor_shape.dim
                and len(n.attr["value"].tensor.tensor_shape.dim) == 3]
    n = node.attr["num_candidates"].i
    shapes = [shape for _, shape in tf.train.list_variables(os.path.join(out, "variables", "variables"))]
    blocked = [shape for shape in shapes if len(shape) == 3 and shape[0] == -(-n // 16) and shape[2] == 16]
    assert len(blocked) == 1, shapes
    # The original variable left the model, or stays once for the rescoring.
    assert shapes.count([n, blocked[0][1]]) == (1 if exact else 0), shapes


def test_int8_dense_layers_fall_back_when_they_cost_recall(ops, zoo_dir, tmp_path):
    """The zoo two-tower's query tower in int8 moves recall@50 to 0.98 on
    this model: optimize() reruns with its dense layers in fp32, writes a
    model inside recall_floor, and the report says what it gave up. Where
    oneDNN has no int8 kernels the layers already run fp32: nothing to give up.
    The user table stays a variable (freeze_table_max_bytes=0), as a
    production-sized one would: frozen, this small model's int8 form keeps
    recall@50 at 0.9975 and nothing falls back."""
    from tests.test_fused_mlp_int8 import INT8
    report = tf_recopt.optimize(zoo_dir("two_tower"), str(tmp_path / "int8"), precision="int8",
                                freeze_table_max_bytes=0)
    assert report.parity_ok and report.written
    if INT8:
        (fallback,) = report.precision_fallbacks
        assert fallback.startswith("int8 dense layers run in fp32") and "recall@50 0.98" in fallback
        assert "precision fallback: int8 dense layers" in str(report)
        assert report.precision == {"dense": "fp32", "embedding": "int8", "retrieval": "int8"}
    fused = saved_model_nodes(str(tmp_path / "int8"), "Recopt>FusedMLP")
    if INT8:
        assert fused and not any(n.attr["int8_layers"].list.i for n in fused)


def test_recall_floor_refuses_to_write(ops, zoo_dir, tmp_path):
    out = tmp_path / "int8"
    with pytest.raises(ParityError, match="recall@50 .* < recall_floor 1.0"):
        tf_recopt.optimize(zoo_dir("two_tower"), str(out), precision="int8_approx", recall_floor=1.0)
    assert not out.exists()


def _kmax_pooling(x, k, sorted=True):
    """DeepCTR's KMaxPooling(axis=1) on [B, F, D, C]: top_k over the field axis."""
    perm = [0, 3, 2, 1]
    return tf.transpose(tf.math.top_k(tf.transpose(x, perm), k=k, sorted=sorted)[0], perm)


@pytest.mark.parametrize("k, fused", [(3, True), (26, True), (1, False)])
def test_short_sorted_rows_become_recopt_topk(ops, k, fused):
    """k >= 2 over a static last axis <= 64 (CCPM's KMaxPooling); k = 1 stays
    TopKV2 (its max reduction measured faster)."""
    spec = tf.TensorSpec([None, 26, 8, 4], tf.float32)
    graph_def, inputs, outputs = frozen_graph(lambda x: _kmax_pooling(x, k), spec)
    new, _ = optimize_graph(graph_def, inputs, outputs)
    assert ("Recopt>TopK" in ops_of(new)) == fused and ("TopKV2" in ops_of(new)) != fused, ops_of(new)
    x = np.random.default_rng(9).integers(-3, 4, (5, 26, 8, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_graph(new, inputs, outputs, [x])[0], run_graph(graph_def, inputs, outputs, [x])[0])


def test_short_unsorted_rows_are_left_alone(ops):
    spec = tf.TensorSpec([None, 26, 8, 4], tf.float32)
    graph_def, inputs, outputs = frozen_graph(lambda x: _kmax_pooling(x, 3, sorted=False), spec)
    new, _ = optimize_graph(graph_def, inputs, outputs)
    assert "TopKV2" in ops_of(new) and "Recopt>TopK" not in ops_of(new)
