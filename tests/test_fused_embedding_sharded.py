"""Recopt>FusedEmbeddingLookup over tables split into shards, against
tf.nn.embedding_lookup / embedding_lookup_sparse over the same list of
shards: both partition strategies, even and uneven shards, the ids
TensorFlow rejects, and shards that are variables or bfloat16."""
import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops.embedding import EmbeddingFeature as F
from tf_recopt.ops.embedding import ShardedTable, fused_embedding_lookup

RNG = np.random.default_rng(5)


def _shards(sizes, dim, dtype=tf.float32):
    return [tf.constant(RNG.standard_normal((n, dim)).astype(np.float32), dtype) for n in sizes]


def _tf_lookup(shards, ids, strategy):
    return tf.compat.v1.nn.embedding_lookup(shards, ids, partition_strategy=strategy)


# fixed_size_partitioner's split (the first shards take the remainder), one
# shard, and a split of more shards than a prime row count divides evenly.
SPLITS = [(4, 3, 3), (5,), (7, 7, 6, 6, 6), (2, 1, 1, 1)]


@pytest.mark.parametrize("strategy", ["div", "mod"])
@pytest.mark.parametrize("sizes", SPLITS)
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_gather_matches_embedding_lookup_over_the_list(ops, strategy, sizes, id_dtype):
    shards = _shards(sizes, 6)
    total = sum(sizes)
    for shape in [(0,), (1,), (9,), (37, 3)]:
        ids = RNG.integers(0, total, shape).astype(id_dtype)
        got = fused_embedding_lookup(ops, [ShardedTable(tuple(shards), strategy)], [F(0)], [ids])[0]
        np.testing.assert_array_equal(got.numpy(), _tf_lookup(shards, ids, strategy).numpy())


@pytest.mark.parametrize("strategy", ["div", "mod"])
def test_every_row_of_every_shard(ops, strategy):
    shards = _shards((4, 3, 3), 2)
    ids = np.arange(10)
    got = fused_embedding_lookup(ops, [ShardedTable(tuple(shards), strategy)], [F(0)], [ids])[0]
    np.testing.assert_array_equal(got.numpy(), _tf_lookup(shards, ids, strategy).numpy())
    assert len({tuple(r) for r in got.numpy()}) == 10


@pytest.mark.parametrize("strategy", ["div", "mod"])
@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("weighted", [False, True])
def test_sparse_matches_embedding_lookup_sparse_over_the_list(ops, strategy, combiner, weighted):
    shards = _shards((34, 33, 33), 8)
    dense = RNG.integers(0, 100, (9, 5))
    mask = RNG.random((9, 5)) < 0.6
    mask[2] = False
    idx = np.argwhere(mask)
    sp_ids = tf.SparseTensor(idx, dense[mask], (9, 5))
    w = RNG.random(len(idx)).astype(np.float32)
    sp_w = tf.SparseTensor(idx, w, (9, 5)) if weighted else None
    want = tf.compat.v1.nn.embedding_lookup_sparse(shards, sp_ids, sp_w, partition_strategy=strategy,
                                                   combiner=combiner)
    feature = F(0, layout="segments", combiner=combiner, weighted=weighted)
    got = fused_embedding_lookup(ops, [ShardedTable(tuple(shards), strategy)], [feature], [dense[mask]],
                                 [[idx[:, 0]]], [w] if weighted else None)[0]
    # TF returns rows up to the last non-empty one; row 8 may be empty here.
    np.testing.assert_allclose(got.numpy()[:want.shape[0]], want.numpy(), rtol=1e-6, atol=1e-6)


def test_pooled_rows_shared_sharded_table_and_plain_table_in_one_concat(ops):
    shards = _shards((50, 50), 4)
    plain = _shards((20,), 3)[0]
    multi = RNG.integers(0, 100, (16, 7))
    one = RNG.integers(0, 100, 16)
    small = RNG.integers(0, 20, 16)
    table = ShardedTable(tuple(shards))
    got = fused_embedding_lookup(ops, [table, plain], [F(0, combiner="sum"), F(0), F(1)], [multi, one, small],
                                 concat=True)
    want = tf.concat([tf.reduce_sum(tf.nn.embedding_lookup(shards, multi), 1), tf.nn.embedding_lookup(shards, one),
                      tf.gather(plain, small)], 1)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-6)


def test_variable_and_bfloat16_shards(ops):
    values = [RNG.standard_normal((n, 8)).astype(np.float32) for n in (6, 5)]
    variables = [tf.Variable(v) for v in values]
    ids = RNG.integers(0, 11, (4, 3))
    got = fused_embedding_lookup(ops, [ShardedTable(tuple(variables))], [F(0, combiner="sum")], [ids])[0]
    np.testing.assert_allclose(got.numpy(), tf.reduce_sum(tf.nn.embedding_lookup(variables, ids), 1).numpy(),
                               rtol=1e-6, atol=1e-6)
    bf16 = [tf.constant(v, tf.bfloat16) for v in values]
    got = fused_embedding_lookup(ops, [ShardedTable(tuple(bf16), "mod")], [F(0)], [ids.reshape(-1)])[0]
    want = tf.cast(_tf_lookup(bf16, ids.reshape(-1), "mod"), tf.float32)
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_string_ids_hashed_into_a_sharded_table(ops):
    shards = _shards((26, 25), 3)
    words = tf.constant(["a", "bb", "ccc", "", "dddd"])
    got = fused_embedding_lookup(ops, [ShardedTable(tuple(shards))], [F(0, hash_buckets=51)], [words])[0]
    want = tf.nn.embedding_lookup(shards, tf.strings.to_hash_bucket_fast(words, 51))
    np.testing.assert_array_equal(got.numpy(), want.numpy())


@pytest.mark.parametrize("strategy", ["div", "mod"])
@pytest.mark.parametrize("bad", [-1, 10, 1000])
def test_ids_tensorflow_rejects_are_rejected(ops, strategy, bad):
    shards = _shards((4, 3, 3), 2)
    ids = np.array([0, bad, 1], np.int64)
    with pytest.raises(tf.errors.InvalidArgumentError):
        _tf_lookup(shards, ids, strategy)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=rf"feature 0 \(table 0\): indices\[1\] = {bad} is not in the table's 3 shards "
                             rf"\(10 rows, {strategy} partitioning\)"):
        fused_embedding_lookup(ops, [ShardedTable(tuple(shards), strategy)], [F(0)], [ids])


def test_mod_shards_larger_than_the_strategy_needs_match_tensorflow(ops):
    # Row 4 of shard 0 is reachable by mod (id 12) though 12 >= 11 rows in
    # all: TensorFlow reads it, so must the op.
    shards = _shards((5, 3, 3), 2)
    ids = np.array([12, 0, 9], np.int64)
    got = fused_embedding_lookup(ops, [ShardedTable(tuple(shards), "mod")], [F(0)], [ids])[0]
    np.testing.assert_array_equal(got.numpy(), _tf_lookup(shards, ids, "mod").numpy())


def test_mismatched_shards_and_attrs_name_the_fault(ops):
    with pytest.raises(tf.errors.InvalidArgumentError, match="table 0 has 5 values per row but the graph was built for 4"):
        fused_embedding_lookup(ops, [ShardedTable((_shards((3,), 4)[0], _shards((3,), 5)[0]))], [F(0)],
                               [np.array([0])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"table 0 shard 1 is bfloat16 \[3,4\], unlike shard 0"):
        fused_embedding_lookup(ops, [ShardedTable((_shards((3,), 4)[0], _shards((3,), 4, tf.bfloat16)[0]))],
                               [F(0)], [np.array([0])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="cannot be split over 3 shards"):
        fused_embedding_lookup(ops, [ShardedTable(tuple(_shards((1, 0, 0), 2)))], [F(0)], [np.array([0])])
    with pytest.raises(tf.errors.InvalidArgumentError, match="table_shards add up to 3 tables but 2"):
        ops.recopt_fused_embedding_lookup(
            tables=_shards((3, 3), 2), ids=[np.array([0])], partitions=[], weights=[], table_ids=[0],
            table_dims=[2], layouts=["dense"], combiners=["none"], hash_buckets=[0], negative_ids=["error"],
            weighted=[False], concat=False, num_outputs=1, table_shards=[3], table_partitioning=["div"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="negative_ids=wrap needs an unsharded table"):
        fused_embedding_lookup(ops, [ShardedTable(tuple(_shards((3, 3), 2)))], [F(0, negative_ids="wrap")],
                               [np.array([0])])
    with pytest.raises(ValueError, match="partitioning must be"):
        ShardedTable((1,), "range")


@pytest.mark.parametrize("strategy", ["div", "mod"])
@pytest.mark.parametrize("sizes", [(4, 3, 3), (5, 3, 3), (3, 3, 4), (1, 1), (6, 2), (2, 2, 2, 2)])
def test_each_id_succeeds_or_fails_as_tensorflow(ops, strategy, sizes):
    """Every id near the table, one by one, on layouts partitioners write and
    on ones they do not (the op's fast path holds only for the former)."""
    shards = _shards(sizes, 2)
    table = ShardedTable(tuple(shards), strategy)
    for i in list(range(-3, sum(sizes) + 4)) + [2**52 - 1, 2**52 + 7, 2**62]:
        ids = np.array([i], np.int64)
        try:
            want = _tf_lookup(shards, ids, strategy).numpy()
        except tf.errors.InvalidArgumentError:
            with pytest.raises(tf.errors.InvalidArgumentError, match=f"indices\\[0\\] = {i} is not in"):
                fused_embedding_lookup(ops, [table], [F(0)], [ids])
            continue
        np.testing.assert_array_equal(fused_embedding_lookup(ops, [table], [F(0)], [ids])[0].numpy(), want)
