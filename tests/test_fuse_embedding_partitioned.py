"""fuse_embedding on tables split into shards: tf.nn.embedding_lookup and
its sparse/safe/ragged forms over a list of constants or variables (as a
PartitionedVariable or ShardedVariable hands them over), both partition
strategies, become one Recopt>FusedEmbeddingLookup with the same answers."""
import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tests import savedmodel_flavours as flavours
from tests.graph_util import check_rewrite, frozen_graph, ops_of, optimize_graph, run_graph

RNG = np.random.default_rng(9)
FUSED = "Recopt>FusedEmbeddingLookup"
STITCH = ("DynamicPartition", "ParallelDynamicStitch", "DynamicStitch", "GatherV2", "ResourceGather")


def _shards(*sizes, dim=4):
    return [tf.constant(RNG.standard_normal((n, dim)).astype(np.float32)) for n in sizes]


A = _shards(4, 3, 3)            # 10 rows as fixed_size_partitioner(3) splits them
B = _shards(20, 20, dim=6)
C = tf.constant(RNG.standard_normal((30, 5)).astype(np.float32))
I64 = tf.TensorSpec([None], tf.int64)


def _lookup(shards, ids, strategy):
    return tf.compat.v1.nn.embedding_lookup(shards, ids, partition_strategy=strategy)


def _check(fn, specs, feeds, gone=STITCH):
    return check_rewrite(fn, specs, feeds, FUSED, gone=gone)


@pytest.mark.parametrize("strategy", ["div", "mod"])
@pytest.mark.parametrize("dtype", [tf.int32, tf.int64])
def test_partitioned_gathers_join_one_concat(ops, strategy, dtype):
    def fn(a, b, c):
        return tf.concat([_lookup(A, a, strategy), _lookup(B, b, strategy), tf.gather(C, c)], 1)
    spec = tf.TensorSpec([None], dtype)
    new = _check(fn, [spec, spec, spec], [RNG.integers(0, n, 11).astype(dtype.as_numpy_dtype) for n in (10, 40, 30)])
    fused = next(n for n in new.node if n.op == FUSED)
    assert list(fused.attr["table_shards"].list.i) == [3, 2, 1]
    assert [s.decode() for s in fused.attr["table_partitioning"].list.s][:2] == [strategy] * 2


def test_tf2_embedding_lookup_is_div_and_pools(ops):
    spec = tf.TensorSpec([None, 5], tf.int64)

    def fn(a, b):
        return tf.concat([tf.reduce_sum(tf.nn.embedding_lookup(A, a), 1), tf.reduce_mean(tf.nn.embedding_lookup(B, b), 1)], 1)
    new = _check(fn, [spec, spec], [RNG.integers(0, 10, (7, 5)), RNG.integers(0, 40, (7, 5))], gone=STITCH + ("Sum", "Mean"))
    fused = next(n for n in new.node if n.op == FUSED)
    assert [s.decode() for s in fused.attr["table_partitioning"].list.s] == ["div", "div"]


def test_static_id_shapes(ops):
    def fn(a, b):
        return tf.concat([_lookup(A, a, "mod"), _lookup(B, b, "div")], 1)
    spec = tf.TensorSpec([6], tf.int64)
    _check(fn, [spec, spec], [RNG.integers(0, 10, 6), RNG.integers(0, 40, 6)])


@pytest.mark.parametrize("strategy", ["div", "mod"])
@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_embedding_lookup_sparse_over_shards(ops, strategy, combiner):
    def fn(indices, values, shape):
        sp = tf.SparseTensor(indices, values, shape)
        return tf.concat([tf.compat.v1.nn.embedding_lookup_sparse(A, sp, None, partition_strategy=strategy,
                                                                  combiner=combiner),
                          tf.compat.v1.nn.embedding_lookup_sparse(B, sp, None, partition_strategy=strategy,
                                                                  combiner=combiner)], 1)
    sp = tf.sparse.from_dense(np.array([[1, 2, 9], [0, 0, 0], [3, 0, 0], [4, 5, 6], [7, 7, 0]]))
    _check(fn, [tf.TensorSpec([None, 2], tf.int64), I64, tf.TensorSpec([2], tf.int64)],
           [sp.indices.numpy(), sp.values.numpy(), sp.dense_shape.numpy()],
           gone=STITCH + ("SparseSegmentSum", "SparseSegmentMean", "SparseSegmentSqrtN", "Unique"))


@pytest.mark.parametrize("combiner", ["sum", "mean"])
def test_weighted_and_safe_sparse_over_shards(ops, combiner):
    """feature columns' form: safe_embedding_lookup_sparse over a
    PartitionedVariable (div), with and without weights."""
    def fn(indices, values, weights, shape):
        sp, sw = tf.SparseTensor(indices, values, shape), tf.SparseTensor(indices, weights, shape)
        return tf.concat([tf.compat.v1.nn.safe_embedding_lookup_sparse(A, sp, None, combiner=combiner),
                          tf.compat.v1.nn.embedding_lookup_sparse(B, sp, sw, combiner=combiner,
                                                                  partition_strategy="div")], 1)
    indices = np.array([[0, 0], [0, 1], [2, 0], [3, 0], [3, 1], [5, 1]], np.int64)
    values = np.array([1, 9, -1, 4, 5, 8], np.int64)   # row 2 only negative; rows 1 and 4 empty
    weights = np.array([0.5, 2.0, 1.0, -1.0, 3.0, 1.5], np.float32)
    # embedding_lookup_sparse drops -1 only in the safe form: the weighted
    # lookup reads row -1 and fails in both graphs, so feed it valid ids.
    feeds = [indices, np.where(values < 0, 3, values), weights, np.array([6, 2], np.int64)]
    _check(fn, [tf.TensorSpec([None, 2], tf.int64), I64, tf.TensorSpec([None], tf.float32),
                tf.TensorSpec([2], tf.int64)], feeds,
           gone=("DynamicPartition", "ParallelDynamicStitch", "SparseFillEmptyRows", "SegmentSum", "Unique"))


def test_ragged_ids_over_shards(ops):
    def fn(values, splits):
        ragged = tf.RaggedTensor.from_row_splits(values, splits)
        return tf.concat([tf.reduce_sum(tf.nn.embedding_lookup(A, ragged), 1),
                          tf.reduce_sum(tf.nn.embedding_lookup(B, ragged), 1)], 1)
    _check(fn, [I64, I64], [np.array([1, 2, 9, 3, 0], np.int64), np.array([0, 3, 3, 5], np.int64)])


def test_out_of_range_ids_still_fail(ops):
    def fn(a, b):
        return tf.concat([_lookup(A, a, "mod"), _lookup(B, b, "div")], 1)
    graph_def, inputs, outputs = frozen_graph(fn, I64, I64)
    new, _ = optimize_graph(graph_def, inputs, outputs)
    assert FUSED in ops_of(new)
    for bad in (10, -1):
        with pytest.raises(tf.errors.InvalidArgumentError):
            run_graph(graph_def, inputs, outputs, [np.array([0, bad]), np.array([0, 1])])
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"indices\[1\] = {bad} is not in the table's 3 shards"):
            run_graph(new, inputs, outputs, [np.array([0, bad]), np.array([0, 1])])


def _stitched(shards, ids, assignment, local):
    """A hand-written partitioned gather with the given (wrong) arithmetic."""
    k = len(shards)
    positions = tf.dynamic_partition(tf.range(tf.size(ids)), tf.cast(assignment, tf.int32), k)
    parts = tf.dynamic_partition(local, tf.cast(assignment, tf.int32), k)
    rows = tf.dynamic_stitch(positions, [tf.gather(s, p) for s, p in zip(shards, parts)])
    return tf.reshape(rows, tf.concat([tf.shape(ids), [4]], 0))


def test_near_misses_stay_stock(ops):
    """A range partition that is not div's and a local row that is not mod's
    look like the stitch but compute something else: they stay (their shard
    gathers, plain gathers, may still fuse)."""
    def fn(a, b):
        shard = tf.cast(a >= 2, tf.int64) + tf.cast(a >= 5, tf.int64)      # a [2, 3, 5] split
        ranged = _stitched(A, a, shard, a - tf.gather(tf.constant([0, 2, 5], tf.int64), shard))
        odd = _stitched(A, b, b % 3, b // 2)                              # mod's shard, not mod's row
        return tf.concat([ranged, odd], 1)
    graph_def, inputs, outputs = frozen_graph(fn, I64, I64)
    new, _ = optimize_graph(graph_def, inputs, outputs)
    assert "DynamicStitch" in ops_of(new) or "ParallelDynamicStitch" in ops_of(new)
    feeds = [np.array([0, 4, 7]), np.array([0, 1, 2])]
    for g, w in zip(run_graph(new, inputs, outputs, feeds), run_graph(graph_def, inputs, outputs, feeds)):
        np.testing.assert_array_equal(g, w)


class _PartitionedTables(tf.Module):
    """Shards as variables, as a PartitionedVariable or a ParameterServer
    ShardedVariable hands them to embedding_lookup."""

    def __init__(self):
        super().__init__()
        self.a = [tf.Variable(RNG.standard_normal((n, 8)).astype(np.float32)) for n in (34, 33, 33)]
        self.b = [tf.Variable(RNG.standard_normal((n, 4)).astype(np.float32)) for n in (25, 25)]

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64), I64])
    def serve(self, hist, item):
        return {"out": tf.concat([tf.reduce_mean(tf.nn.embedding_lookup(self.a, hist), 1),
                                  tf.nn.embedding_lookup(self.b, item),
                                  _lookup(self.a, item, "mod")], 1)}


def test_variable_shards_in_a_saved_model(ops, tmp_path):
    src, out = str(tmp_path / "m"), str(tmp_path / "opt")
    m = _PartitionedTables()
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    feeds = dict(hist=tf.constant(RNG.integers(0, 100, (6, 3))), item=tf.constant(RNG.integers(0, 50, 6)))
    report = tf_recopt.optimize(src, out, sample_inputs=feeds)
    assert report.parity_ok
    ops_after = report.signatures["serving_default"].ops_after
    assert ops_after.get(FUSED) == 1, ops_after
    assert not set(ops_after) & set(STITCH), ops_after
    loaded = tf.saved_model.load(out).signatures["serving_default"]
    np.testing.assert_allclose(loaded(**feeds)["out"].numpy(), m.serve(**feeds)["out"].numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="= 50 is not in the table's 2 shards"):
        loaded(**dict(feeds, item=tf.constant([50, 0, 0, 0, 0, 0], tf.int64)))
    # The shards stay variables read by the fused op: optimizing the
    # optimized model again must not freeze them under it.
    again = tf_recopt.optimize(out, str(tmp_path / "again"), sample_inputs=feeds)
    assert again.parity_ok and again.signatures["serving_default"].ops_after.get(FUSED) == 1


def test_tf1_feature_columns_over_partitioned_variables(ops, tmp_path):
    src = flavours.export_tf1_feature_columns(str(tmp_path / "fc"))
    feeds = dict(user=tf.constant([["u1"], ["u2"], [""], ["u1"]]),
                 tags=tf.constant([["a", "b", ""], ["", "", ""], ["c", "c", "d"], ["a", "", "e"]]),
                 item=tf.constant([[3], [299], [0], [-1]], tf.int64),
                 clicks=tf.constant([[5, 7], [-1, -1], [199, -1], [0, 5]], tf.int64),
                 clicks_weight=tf.constant([[0.5, 2.0], [0.0, 0.0], [3.0, 0.0], [1.0, -1.0]]))
    report = tf_recopt.optimize(src, str(tmp_path / "opt"), sample_inputs=feeds)
    assert report.parity_ok
    ops_after = report.signatures["serving_default"].ops_after
    assert ops_after.get(FUSED) == 1, ops_after
    gone = ("DynamicPartition", "ParallelDynamicStitch", "ResourceGather", "SparseSegmentSum", "SparseSegmentMean",
            "SparseSegmentSqrtN", "SparseFillEmptyRows", "Unique", "SegmentSum", "DivNoNan")
    assert not set(ops_after) & set(gone), ops_after
    want = tf.saved_model.load(src).signatures["serving_default"](**feeds)["logit"].numpy()
    got = tf.saved_model.load(str(tmp_path / "opt")).signatures["serving_default"](**feeds)["logit"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lookups_inside_a_nested_function_call(ops, tmp_path):
    """A signature calling another tf.function: inlining leaves the table
    handles behind Identities that wait on the call's inputs
    (input_control_node); prune_identity drops those inert edges."""
    src = str(tmp_path / "m")
    m = _PartitionedTables()
    outer = tf.function(lambda hist, item: m.serve(hist, item), input_signature=m.serve.input_signature)
    tf.saved_model.save(m, src, signatures={"serving_default": outer})
    feeds = dict(hist=tf.constant(RNG.integers(0, 100, (6, 3))), item=tf.constant(RNG.integers(0, 50, 6)))
    report = tf_recopt.optimize(src, str(tmp_path / "opt"), sample_inputs=feeds)
    assert report.parity_ok and report.signatures["serving_default"].ops_after.get(FUSED) == 1


class _MixedTables(_PartitionedTables):
    def __init__(self):
        super().__init__()
        self.c = tf.Variable(RNG.standard_normal((70, 5)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64), I64])
    def serve(self, hist, item):
        return {"out": tf.concat([tf.reduce_mean(tf.nn.embedding_lookup(self.a, hist), 1),
                                  tf.nn.embedding_lookup(self.b, item), tf.gather(self.c, item)], 1)}


def test_bf16_precision_stores_tables_as_bfloat16_variables(ops, tmp_path):
    """precision="bf16": the op reads bfloat16 copies of the tables (sharded
    or not), the saved model carries those instead of the fp32 ones, and an
    optimized model optimized again keeps them. The tables are kept
    variables (freeze_table_max_bytes=0), as tables too large to freeze are."""
    src, out = str(tmp_path / "m"), str(tmp_path / "opt")
    m = _MixedTables()
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    feeds = dict(hist=tf.constant(RNG.integers(0, 100, (6, 3))), item=tf.constant(RNG.integers(0, 50, 6)))
    report = tf_recopt.optimize(src, out, sample_inputs=feeds, precision="bf16", freeze_table_max_bytes=0)
    assert report.parity_ok and report.signatures["serving_default"].ops_after.get(FUSED) == 1
    stored = _checkpoint_variables(out)
    assert sorted({dtype for dtype, _ in stored}) == ["bfloat16"]
    assert sum(int(np.prod(shape)) for _, shape in stored) == 100 * 8 + 50 * 4 + 70 * 5
    loaded = tf.saved_model.load(out)
    want = m.serve(**feeds)["out"].numpy()
    got = loaded.signatures["serving_default"](**feeds)["out"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)
    assert not np.array_equal(got, want)   # the rows were rounded: bf16 was used
    again = tf_recopt.optimize(out, str(tmp_path / "again"), sample_inputs=feeds, precision="bf16",
                               freeze_table_max_bytes=0)
    assert again.parity_ok
    assert sorted({dtype for dtype, _ in _checkpoint_variables(str(tmp_path / "again"))}) == ["bfloat16"]


def _checkpoint_variables(saved_model_dir):
    """(dtype name, shape) of every variable a SavedModel's checkpoint holds."""
    reader = tf.train.load_checkpoint(f"{saved_model_dir}/variables/variables")
    dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
    return [(dtypes[k].name, shapes[k]) for k in dtypes if k.endswith("VARIABLE_VALUE")]


def test_bf16_tables_replace_keras_ones_in_the_zoo_dlrm(ops, zoo_dir, tmp_path):
    """Keras 3 orders a model's outputs after every variable read: those
    control edges move to the fused op, so no fp32 table stays in the model
    (its small tables kept variables, as large ones are)."""
    out = str(tmp_path / "dlrm_bf16")
    report = tf_recopt.optimize(zoo_dir("dlrm"), out, precision="bf16", freeze_table_max_bytes=0)
    assert report.parity_ok
    for sig in report.signatures.values():
        assert "ReadVariableOp" not in sig.ops_after, sig.ops_after
    stored = _checkpoint_variables(out)
    assert stored and {dtype for dtype, _ in stored} == {"bfloat16"}, stored
