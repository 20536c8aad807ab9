"""Recopt>FusedEmbeddingLookup against TensorFlow's own lookups: every id
layout and combiner, hashing bit for bit, ranges, empties, dtypes."""
import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference
from tf_recopt.ops.embedding import EmbeddingFeature as F
from tf_recopt.ops.embedding import fused_embedding_lookup

RNG = np.random.default_rng(11)


def _table(rows, dim):
    return tf.constant(RNG.standard_normal((rows, dim)).astype(np.float32))


def _both(ops, tables, features, ids, partitions=None, weights=None, concat=False):
    got = fused_embedding_lookup(ops, tables, features, ids, partitions, weights, concat)
    want = reference.fused_embedding_lookup(tables, features, ids, partitions, weights, concat)
    return got, want


def _assert_same(got, want, exact=True):
    got, want = (got, want) if isinstance(got, list) else ([got], [want])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        if exact:
            np.testing.assert_array_equal(g.numpy(), w.numpy())
        else:
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("batch", [0, 1, 7, 4099])
def test_one_hot_matches_gather_exactly(ops, id_dtype, batch):
    tables = [_table(50, 8), _table(1000, 3)]
    ids = [RNG.integers(0, 50, batch).astype(id_dtype), RNG.integers(0, 1000, batch).astype(id_dtype)]
    features = [F(0), F(1)]
    got = fused_embedding_lookup(ops, tables, features, ids)
    for g, t, i in zip(got, tables, ids):
        np.testing.assert_array_equal(g.numpy(), tf.gather(t, i).numpy())
    cat = fused_embedding_lookup(ops, tables, features, ids, concat=True)
    assert cat.shape == (batch, 11)
    np.testing.assert_array_equal(cat.numpy(), tf.concat([tf.gather(t, i) for t, i in zip(tables, ids)], 1))


def test_multi_id_rows_without_combiner_keep_their_shape(ops):
    tables = [_table(30, 4)]
    ids = [RNG.integers(0, 30, (5, 3, 2))]
    got, want = _both(ops, tables, [F(0)], ids)
    assert got[0].shape == (5, 3, 2, 4)
    _assert_same(got, want)
    cat = fused_embedding_lookup(ops, tables, [F(0), F(0)], ids * 2, concat=True)
    np.testing.assert_array_equal(cat.numpy()[:, :24], tf.reshape(want[0], (5, 24)).numpy())


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("weighted", [False, True])
def test_dense_multi_hot_pooling(ops, combiner, weighted):
    tables = [_table(100, 16)]
    ids = [RNG.integers(0, 100, (33, 10))]
    weights = [RNG.random((33, 10)).astype(np.float32)] if weighted else None
    got, want = _both(ops, tables, [F(0, combiner=combiner, weighted=weighted)], ids, weights=weights)
    _assert_same(got, want, exact=False)
    tf_layer = {"sum": tf.reduce_sum, "mean": tf.reduce_mean}.get(combiner)
    if tf_layer and not weighted:  # the Keras-style gather + reduce the pass replaces
        np.testing.assert_allclose(got[0].numpy(), tf_layer(tf.gather(tables[0], ids[0]), 1).numpy(),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_matches_embedding_lookup_sparse(ops, combiner, weighted):
    table = _table(200, 8)
    dense = RNG.integers(0, 200, (9, 6))
    mask = RNG.random((9, 6)) < 0.5
    mask[3] = False  # an empty row in the middle, and trailing empties
    mask[7:] = False
    sp = tf.sparse.from_dense(tf.where(mask, dense, -1))
    sp = tf.sparse.retain(sp, sp.values >= 0)
    sp_w = tf.SparseTensor(sp.indices, RNG.random(sp.values.shape[0]).astype(np.float32), sp.dense_shape)
    want = tf.nn.embedding_lookup_sparse(table, sp, sp_w if weighted else None, combiner=combiner)
    got = fused_embedding_lookup(ops, [table], [F(0, layout="segments", combiner=combiner, weighted=weighted)],
                                 [sp.values], [[sp.indices[:, 0]]], [sp_w.values] if weighted else None)
    assert got[0].shape == want.shape == (7, 8)  # rows up to the last non-empty one, as TF
    np.testing.assert_allclose(got[0].numpy(), want.numpy(), rtol=1e-6, atol=1e-6)
    with_n = fused_embedding_lookup(ops, [table], [F(0, layout="segments_n", combiner=combiner, weighted=weighted)],
                                    [sp.values], [[sp.indices[:, 0], tf.constant(9)]],
                                    [sp_w.values] if weighted else None)
    assert with_n[0].shape == (9, 8)
    np.testing.assert_array_equal(with_n[0].numpy()[:7], got[0].numpy())
    assert not with_n[0].numpy()[7:].any()


@pytest.mark.parametrize("split_dtype", [tf.int32, tf.int64])
def test_ragged_rows_including_empty(ops, split_dtype):
    table = _table(64, 5)
    rt = tf.ragged.constant([[1, 2, 3], [], [63], [], [0, 0, 0, 0]], dtype=tf.int64,
                            row_splits_dtype=split_dtype)
    got, want = _both(ops, [table], [F(0, layout="ragged", combiner="mean")], [rt.values], [[rt.row_splits]])
    _assert_same(got, want, exact=False)
    # Empty rows: NaN, as tf.reduce_mean over a RaggedTensor (0/0); sums stay zeros.
    assert np.isnan(got[0].numpy()[[1, 3]]).all() and not np.isnan(got[0].numpy()[[0, 2, 4]]).any()
    np.testing.assert_array_equal(got[0].numpy(), tf.reduce_mean(tf.gather(table, rt), axis=1).numpy())
    summed = fused_embedding_lookup(ops, [table], [F(0, layout="ragged", combiner="sum")], [rt.values],
                                    [[rt.row_splits]])
    np.testing.assert_allclose(summed[0].numpy(), tf.reduce_sum(tf.gather(table, rt), axis=1).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_string_hashing_is_bit_exact(ops):
    buckets = 1 << 20
    strings = ["", "a", "user_123", "ünïcödé", "x" * 1000, "\x00nul"] + [f"s{i}" for i in range(500)]
    ids = tf.constant(strings)
    # A table whose row r holds r makes the output the bucket itself.
    table = tf.constant(np.arange(buckets, dtype=np.float32)[:, None])
    got = fused_embedding_lookup(ops, [table], [F(0, hash_buckets=buckets)], [ids])[0]
    want = tf.strings.to_hash_bucket_fast(ids, buckets)
    np.testing.assert_array_equal(got.numpy()[:, 0].astype(np.int64), want.numpy())


def test_integer_modulo_bucketing_and_negative_ids(ops):
    table = _table(10, 4)
    ids = np.array([-23, -1, 0, 9, 10, 12345678901], np.int64)
    got, want = _both(ops, [table], [F(0, hash_buckets=10)], [ids])
    _assert_same(got, want)
    np.testing.assert_array_equal(got[0].numpy(), tf.gather(table, tf.math.floormod(ids, 10)).numpy())


def test_keras_wrap_of_negative_ids(ops):
    table = _table(10, 4)
    ids = np.array([-10, -1, 0, 9], np.int32)
    got = fused_embedding_lookup(ops, [table], [F(0, negative_ids="wrap")], [ids])[0]
    import keras
    np.testing.assert_array_equal(got.numpy(), keras.ops.take(table, ids, axis=0).numpy())


@pytest.mark.parametrize("bad,mode", [(10, "error"), (-1, "error"), (-11, "wrap"), (10, "wrap")])
def test_out_of_range_ids_raise_like_gather(ops, bad, mode):
    tables = [_table(4, 2), _table(10, 3)]
    ids = [np.array([0, 1], np.int64), np.array([3, bad, 2], np.int64)]
    # What the replaced gather sees (after Keras' wrap), as its error says.
    seen = bad + 10 if mode == "wrap" and bad < 0 else bad
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"feature 1 \(table 1\): indices\[1\] = {seen} is not in \[0, 10\)"):
        fused_embedding_lookup(ops, tables, [F(0), F(1, negative_ids=mode)], ids)
    wrapped = tf.where(ids[1] < 0, ids[1] + 10, ids[1]) if mode == "wrap" else ids[1]
    with pytest.raises(tf.errors.InvalidArgumentError, match=rf"indices\[1\] = {seen} is not in \[0, 10\)"):
        tf.gather(tables[1], wrapped)


def test_hashed_strings_beyond_table_rows_raise(ops):
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature 0"):
        fused_embedding_lookup(ops, [_table(3, 2)], [F(0, hash_buckets=1000)], [tf.constant(["a", "b", "c", "d"])])


def test_shared_table_bf16_storage_and_nan(ops):
    t32 = RNG.standard_normal((40, 8)).astype(np.float32)
    t32[5, 3] = np.nan
    bf16 = tf.constant(t32, tf.bfloat16)
    ids = [RNG.integers(0, 40, 20), np.full(20, 5), RNG.integers(0, 40, (20, 4))]
    features = [F(0), F(0), F(0, combiner="sum")]
    got, want = _both(ops, [bf16], features, ids)
    _assert_same(got, want, exact=False)
    assert np.isnan(got[1].numpy()[:, 3]).all()


def test_variable_tables_are_read_live_without_copy(ops):
    var = tf.Variable(RNG.standard_normal((100, 4)).astype(np.float32))
    ids = [np.array([1, 2, 99])]

    @tf.function
    def lookup():
        return fused_embedding_lookup(ops, [var], [F(0)], ids)[0]

    np.testing.assert_array_equal(lookup().numpy(), tf.gather(var, ids[0]).numpy())
    var.assign(tf.zeros((100, 4)))  # weights refreshed in place
    assert not lookup().numpy().any()


def test_concat_needs_one_batch_size(ops):
    with pytest.raises(tf.errors.InvalidArgumentError, match="one batch size"):
        fused_embedding_lookup(ops, [_table(5, 2)], [F(0), F(0)], [np.array([1, 2]), np.array([1])], concat=True)


def test_bad_structure_names_the_feature(ops):
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature 0: row_splits end at 2"):
        fused_embedding_lookup(ops, [_table(5, 2)], [F(0, layout="ragged", combiner="sum")],
                               [np.array([1, 2, 3])], [[np.array([0, 2], np.int64)]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="segment ids must be sorted"):
        fused_embedding_lookup(ops, [_table(5, 2)], [F(0, layout="segments", combiner="sum")],
                               [np.array([1, 2])], [[np.array([1, 0], np.int64)]])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"feature 0: dense ids must be \[batch, ids_per_row\]"):
        fused_embedding_lookup(ops, [_table(5, 2)], [F(0, combiner="sum")], [np.array([1, 2])])
    with pytest.raises(ValueError, match="combiner other than 'none'"):
        F(0, layout="ragged")


def test_many_tables_large_batch_uses_every_block(ops):
    tables = [_table(1000, d) for d in (1, 8, 64, 33)]
    ids = [RNG.integers(0, 1000, 2000) for _ in tables] + [RNG.integers(0, 1000, (2000, 7))]
    features = [F(i) for i in range(4)] + [F(2, combiner="mean")]
    got, want = _both(ops, tables, features, ids, concat=True)
    assert got.shape == (2000, 1 + 8 + 64 + 33 + 64)
    _assert_same(got, want, exact=False)
