"""fuse_embedding: each lookup form a model author writes becomes part of one
Recopt>FusedEmbeddingLookup with the same answers; near-misses stay."""

import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tests.graph_util import check_rewrite, frozen_graph, ops_of, optimize_graph, run_graph

RNG = np.random.default_rng(5)
FUSED = "Recopt>FusedEmbeddingLookup"
T = [tf.constant(RNG.standard_normal((rows, dim)).astype(np.float32)) for rows, dim in
     [(50, 4), (60, 8), (70, 4)]]


def _check(fn, specs, feeds, fused_ops=1, gone=("GatherV2", "ResourceGather"), rtol=1e-6):
    return ops_of(check_rewrite(fn, specs, feeds, FUSED, fused_ops, gone, rtol))


def _ids(rows, *shape):
    return RNG.integers(0, rows, shape).astype(np.int64)


I64 = tf.TensorSpec([None], tf.int64)


def test_concat_of_gathers_and_dense_becomes_one_run(ops):
    def fn(a, b, c, x):
        return tf.concat([tf.gather(T[0], a), tf.nn.embedding_lookup(T[1], b), x, tf.gather(T[2], c)], axis=1)
    ops_after = _check(fn, [I64, I64, I64, tf.TensorSpec([None, 3])],
                       [_ids(50, 9), _ids(60, 9), _ids(70, 9), RNG.random((9, 3), np.float32)], gone=())
    # The first two are adjacent: one concat-mode op; the lone third gather
    # stays as it is (an op for one plain gather gains nothing).
    assert ops_after.count("ConcatV2") == 1 and ops_after.count("GatherV2") == 1


def test_whole_concat_and_pooled_multi_hot(ops):
    spec = tf.TensorSpec([None, 5], tf.int64)

    def fn(a, b):
        return tf.concat([tf.reduce_sum(tf.gather(T[0], a), axis=1), tf.reduce_mean(tf.gather(T[1], b), 1)], -1)
    ops_after = _check(fn, [spec, spec], [_ids(50, 7, 5), _ids(60, 7, 5)], gone=("GatherV2", "Sum", "Mean", "ConcatV2"))
    assert len(ops_after) < 8


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_embedding_lookup_sparse(ops, combiner):
    def fn(indices, values, shape):
        sp = tf.SparseTensor(indices, values, shape)
        return tf.concat([tf.nn.embedding_lookup_sparse(T[1], sp, None, combiner=combiner),
                          tf.nn.embedding_lookup_sparse(T[2], sp, None, combiner=combiner)], 1)
    sp = tf.sparse.from_dense(np.array([[1, 2, 0], [0, 0, 0], [3, 0, 0], [4, 5, 6]]))
    _check(fn, [tf.TensorSpec([None, 2], tf.int64), I64, tf.TensorSpec([2], tf.int64)],
           [sp.indices.numpy(), sp.values.numpy(), sp.dense_shape.numpy()],
           gone=("SparseSegmentSum", "SparseSegmentMean", "SparseSegmentSqrtN"))


def test_hashing_and_modulo_are_fused(ops):
    def fn(s, n):
        return tf.concat([tf.gather(T[0], tf.strings.to_hash_bucket_fast(s, 50)),
                          tf.gather(T[1], tf.math.floormod(n, 60))], 1)
    _check(fn, [tf.TensorSpec([None], tf.string), I64],
           [np.array([b"a", b"bb", b"", b"user_9"]), np.array([-7, 0, 59, 10**12])],
           gone=("GatherV2", "StringToHashBucketFast", "FloorMod"))


def test_stack_for_interaction(ops):
    w = tf.constant(RNG.standard_normal((3, 4)).astype(np.float32))

    def fn(x, a, c):
        stacked = tf.stack([tf.matmul(x, w), tf.gather(T[0], a), tf.gather(T[2], c)], axis=1)
        return tf.matmul(stacked, stacked, transpose_b=True)
    ops_after = _check(fn, [tf.TensorSpec([None, 3]), I64, I64], [RNG.random((6, 3), np.float32), _ids(50, 6), _ids(70, 6)],
                       gone=("GatherV2", "Pack"))
    assert "Reshape" in ops_after


def test_separate_outputs_without_concat(ops):
    def fn(a, b):
        return tf.gather(T[0], a) * 2.0, tf.reduce_sum(tf.gather(T[1], b), axis=1)
    _check(fn, [I64, tf.TensorSpec([None, 3], tf.int64)], [_ids(50, 4), _ids(60, 4, 3)])


def test_near_misses_are_left_alone(ops):
    bf16 = tf.cast(T[0], tf.bfloat16)

    def fn(a, b):
        first = tf.gather(T[0], a)
        chained = tf.gather(T[2], tf.cast(first[:, 0] > 0, tf.int64))  # ids from a lookup's output
        cols = tf.gather(T[1], tf.constant([0, 1]), axis=1)              # a column gather, not a lookup
        return tf.cast(tf.gather(bf16, b), tf.float32), chained, cols
    graph_def, inputs, outputs = frozen_graph(fn, I64, I64)
    new, results = optimize_graph(graph_def, inputs, outputs)
    ops_after = ops_of(new)
    # Only `first` is a candidate (column gather, bf16 gather and `chained`,
    # whose ids come from `first`, are not), and one plain gather alone is
    # not worth an op.
    assert ops_after.count(FUSED) == 0
    feeds = [_ids(50, 5), _ids(50, 5)]
    for g, w in zip(run_graph(new, inputs, outputs, feeds), run_graph(graph_def, inputs, outputs, feeds)):
        np.testing.assert_array_equal(g, w)
    skipped = [r for p in results if p.name == "fuse_embedding" for _, r in p.skipped]
    assert any("depend on another embedding lookup" in r for r in skipped)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("fast", [False, True], ids=["unique", "allow_fast_lookup"])
def test_weighted_embedding_lookup_sparse(ops, combiner, fast):
    def fn(indices, values, weights, shape):
        sp, sw = tf.SparseTensor(indices, values, shape), tf.SparseTensor(indices, weights, shape)
        return tf.concat([tf.nn.embedding_lookup_sparse(T[1], sp, sw, combiner=combiner, allow_fast_lookup=fast),
                          tf.nn.embedding_lookup_sparse(T[2], sp, sw, combiner=combiner, allow_fast_lookup=fast)], 1)
    dense = np.array([[1, 2, 0], [0, 0, 0], [3, 0, 0], [4, 5, 6], [7, 7, 7]])
    sp = tf.sparse.from_dense(dense)
    # Zero and negative weights included: div_no_nan gives a zero row where they cancel.
    weights = np.array([0.5, 2.0, 0.0, -1.0, 3.0, 1.5, 1.0, -1.0, 2.0], np.float32)[:len(sp.values)]
    ops_after = _check(fn, [tf.TensorSpec([None, 2], tf.int64), I64, tf.TensorSpec([None], tf.float32),
                            tf.TensorSpec([2], tf.int64)],
                       [sp.indices.numpy(), sp.values.numpy(), weights, sp.dense_shape.numpy()],
                       gone=("SegmentSum", "DivNoNan", "GatherV2", "Unique"), rtol=2e-6)
    assert "Mul" not in ops_after


_SAFE_GONE = ("SparseSegmentSum", "SparseSegmentMean", "SparseSegmentSqrtN", "SparseFillEmptyRows", "Tile",
              "ZerosLike", "Select", "SelectV2")


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_safe_embedding_lookup_sparse(ops, combiner):
    """tf.feature_column's form: negative ids dropped, empty rows (and rows of
    only negative ids) zeros, joined into one concat op with a plain lookup."""
    def fn(indices, values, shape, dense_ids):
        sp = tf.SparseTensor(indices, values, shape)
        return tf.concat([tf.nn.safe_embedding_lookup_sparse(T[1], sp, combiner=combiner),
                          tf.nn.safe_embedding_lookup_sparse(T[2], sp, combiner=combiner),
                          tf.gather(T[0], dense_ids)], 1)
    indices = np.array([[0, 0], [0, 1], [0, 2], [2, 0], [3, 0], [3, 1], [3, 2], [5, 1]], np.int64)
    values = np.array([1, -2, 3, -1, 4, 5, 4, 9], np.int64)   # row 2 only negative; rows 1 and 4 empty
    ops_after = _check(fn, [tf.TensorSpec([None, 2], tf.int64), I64, tf.TensorSpec([2], tf.int64), I64],
                       [indices, values, np.array([6, 3], np.int64), _ids(50, 6)], gone=_SAFE_GONE)
    assert "ConcatV2" not in ops_after


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_weighted_safe_embedding_lookup_sparse(ops, combiner):
    """sparse_weights given (weighted_categorical_column's form): negative ids
    dropped with their weights; for mean and sqrtn also ids whose weight is
    <= 0 or NaN, so a row of only such ids is zeros, not a cancelled sum."""
    def fn(indices, values, weights, shape):
        sp, sw = tf.SparseTensor(indices, values, shape), tf.SparseTensor(indices, weights, shape)
        return tf.concat([tf.nn.safe_embedding_lookup_sparse(T[1], sp, sw, combiner=combiner),
                          tf.nn.safe_embedding_lookup_sparse(T[2], sp, sw, combiner=combiner)], 1)
    indices = np.array([[0, 0], [0, 1], [0, 2], [2, 0], [3, 0], [3, 1], [3, 2], [5, 1], [6, 0], [6, 1], [7, 0]],
                       np.int64)
    values = np.array([1, -2, 3, -1, 4, 5, 4, 9, 7, 8, 2], np.int64)
    # row 2 only a negative id; rows 1 and 4 empty; row 6's weights cancel; row 7's is NaN
    weights = np.array([0.5, 9.0, 2.0, 1.0, 1.5, 0.0, -2.0, 3.0, 1.0, -1.0, np.nan], np.float32)
    specs = [tf.TensorSpec([None, 2], tf.int64), I64, tf.TensorSpec([None], tf.float32), tf.TensorSpec([2], tf.int64)]
    gone = _SAFE_GONE + ("SegmentSum", "DivNoNan", "Unique")
    _check(fn, specs, [indices, values, weights, np.array([8, 3], np.int64)], gone=gone, rtol=2e-6)


def test_weighted_safe_lookup_reads_weights_on_the_ids_indices(ops):
    """safe_embedding_lookup_sparse puts the weights' values on the ids'
    indices before anything else: weights given on other indices fuse, and
    give TensorFlow's answer."""
    def fn(indices, values, w_indices, weights, shape):
        sp, sw = tf.SparseTensor(indices, values, shape), tf.SparseTensor(w_indices, weights, shape)
        return tf.concat([tf.nn.safe_embedding_lookup_sparse(T[1], sp, sw, combiner="mean"),
                          tf.nn.safe_embedding_lookup_sparse(T[2], sp, sw, combiner="mean")], 1)
    indices = np.array([[0, 0], [0, 1], [2, 0], [3, 1]], np.int64)
    specs = [tf.TensorSpec([None, 2], tf.int64), I64, tf.TensorSpec([None, 2], tf.int64),
             tf.TensorSpec([None], tf.float32), tf.TensorSpec([2], tf.int64)]
    feeds = [indices, np.array([1, 2, -3, 4], np.int64), np.zeros_like(indices),
             np.array([1.0, 2.0, 3.0, 0.5], np.float32), np.array([4, 2], np.int64)]
    _check(fn, specs, feeds, gone=_SAFE_GONE + ("SegmentSum", "DivNoNan"), rtol=2e-6)


def test_safe_embedding_lookup_sparse_of_rank3_ids(ops):
    """[B, 2, L] ids: the lookup is [B*2, d], reshaped back to [B, 2, d] by the model."""
    def fn(indices, values, shape):
        sp = tf.SparseTensor(indices, values, shape)
        return [tf.nn.safe_embedding_lookup_sparse(T[1], sp), tf.nn.safe_embedding_lookup_sparse(T[2], sp)]
    sp = tf.sparse.from_dense(np.array([[[1, 2], [0, 0]], [[3, 0], [4, 5]], [[0, 0], [0, 0]]]))
    _check(fn, [tf.TensorSpec([None, 3], tf.int64), I64, tf.TensorSpec([3], tf.int64)],
           [sp.indices.numpy(), sp.values.numpy(), sp.dense_shape.numpy()], gone=_SAFE_GONE)


def test_safe_lookup_out_of_range_id_errors_like_tensorflow(ops):
    def fn(indices, values, shape):
        sp = tf.SparseTensor(indices, values, shape)
        return tf.concat([tf.nn.safe_embedding_lookup_sparse(T[1], sp), tf.nn.safe_embedding_lookup_sparse(T[2], sp)], 1)
    graph_def, inputs, outputs = frozen_graph(fn, tf.TensorSpec([None, 2], tf.int64), I64, tf.TensorSpec([2], tf.int64))
    new, _ = optimize_graph(graph_def, inputs, outputs)
    assert FUSED in ops_of(new)
    feeds = [np.array([[0, 0], [1, 0]], np.int64), np.array([3, 65], np.int64), np.array([2, 1], np.int64)]
    with pytest.raises(tf.errors.InvalidArgumentError, match="65"):
        run_graph(new, inputs, outputs, feeds)


class _VariableTables(tf.Module):
    """Tables as variables (as every real model keeps them): ResourceGather,
    and embedding_lookup_sparse on a variable."""

    def __init__(self):
        super().__init__()
        self.a = tf.Variable(RNG.standard_normal((40, 4)).astype(np.float32))
        self.b = tf.Variable(RNG.standard_normal((30, 6)).astype(np.float32))

    @tf.function(input_signature=[I64, tf.TensorSpec([None, 2], tf.int64), I64, tf.TensorSpec([2], tf.int64)])
    def serve(self, ids, indices, values, shape):
        sp = tf.SparseTensor(indices, values, shape)
        return {"out": tf.concat([tf.nn.embedding_lookup(self.a, ids),
                                  tf.nn.embedding_lookup_sparse(self.b, sp, None, combiner="mean")], 1)}


def test_variable_tables_in_a_saved_model(ops, tmp_path):
    src, out = str(tmp_path / "m"), str(tmp_path / "opt")
    m = _VariableTables()
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    sp = tf.sparse.from_dense(np.array([[1, 2], [0, 0], [29, 0]]))
    feeds = dict(ids=tf.constant([0, 39, 5], tf.int64), indices=sp.indices, values=sp.values, shape=sp.dense_shape)
    # Random sparse components are not valid SparseTensors: parity runs on given inputs.
    report = tf_recopt.optimize(src, out, sample_inputs=feeds)
    assert report.parity_ok
    ops_after = report.signatures["serving_default"].ops_after
    assert ops_after.get(FUSED) == 1 and "ResourceGather" not in ops_after and "SparseSegmentMean" not in ops_after
    got = tf.saved_model.load(out).signatures["serving_default"](**feeds)["out"].numpy()
    np.testing.assert_allclose(got, m.serve(**feeds)["out"].numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"indices\[0\] = 40 is not in \[0, 40\)"):
        tf.saved_model.load(out).signatures["serving_default"](**dict(feeds, ids=tf.constant([40, 0, 0], tf.int64)))


def _errors(fn, specs):
    graph_def, inputs, outputs = frozen_graph(fn, *specs)
    _, results = optimize_graph(graph_def, inputs, outputs)
    return {r.name: r.error for r in results if r.error}


def test_wide_part_stacked_and_summed_fuses_without_a_one_input_concat(ops):
    """#32's Keras 3 Wide&Deep: ops.sum(ops.stack([wide_emb_j(hash_j(x[:, j]))
    for j], axis=1), axis=1). The whole stack is one run, so the stack
    becomes the fused block itself; it used to become a ConcatV2 with N=1,
    which broke every later pass and optimize()."""
    wide = [tf.constant(RNG.standard_normal((13, 1)).astype(np.float32)) for _ in range(4)]

    def fn(x):
        hashed = [tf.strings.to_hash_bucket_fast(x[:, j], 13) for j in range(4)]
        return tf.reduce_sum(tf.stack([tf.gather(w, h) for w, h in zip(wide, hashed)], axis=1), axis=1)
    specs = [tf.TensorSpec([None, 4], tf.string)]
    x = np.array([[b"a", b"b", b"c", b"d"], [b"e", b"f", b"g", b"h"], [b"", b"x", b"y", b"z"]])
    ops_after = _check(fn, specs, [x], gone=("GatherV2", "Pack", "StringToHashBucketFast"))
    assert "ConcatV2" not in ops_after
    assert _errors(fn, specs) == {}


def test_concat_of_lookups_that_is_a_signature_output(ops):
    """A protected concat (a signature's output node) whose inputs are all
    one run keeps its name with one fused input: an Identity, not a
    one-input ConcatV2."""
    from grappler_passes import run_pipeline

    def fn(a, b):
        return tf.concat([tf.gather(T[0], a), tf.gather(T[2], b)], axis=1)
    graph_def, inputs, outputs = frozen_graph(fn, I64, I64)
    concat = next(n.name for n in graph_def.node if n.op == "ConcatV2")
    new, results = run_pipeline(graph_def, {n.split(":")[0] for n in inputs + outputs} | {concat})
    assert {r.name: r.error for r in results if r.error} == {}
    assert ops_of(new).count(FUSED) == 1 and "ConcatV2" not in ops_of(new)
    assert next(n.op for n in new.node if n.name == concat) == "Identity"
    feeds = [_ids(50, 5), _ids(70, 5)]
    np.testing.assert_array_equal(run_graph(new, inputs, outputs, feeds)[0], run_graph(graph_def, inputs, outputs, feeds)[0])
