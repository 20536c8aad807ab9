"""Unit benchmark: 26 embedding tables (100k x 64, fp32 variables), batch
512, one-hot, multi-hot (10 ids per row, sum) and ragged multi-hot (0-20
ids per row, 10 on average, sum), 30% of ids repeated within the batch;
and one-hot / multi-hot again with each table split into 4 variables
(tf.nn.embedding_lookup over the list, "div": a ShardedVariable's or a
PartitionedVariable's lookup).
Stock: the lookups as TensorFlow ops (ResourceGather per table, reduce_sum
for multi-hot, a RaggedTensor's reduce_sum for ragged, DynamicPartition /
gathers / ParallelDynamicStitch per sharded table, concat), as Keras and
tf.nn write them; recopt: one Recopt>FusedEmbeddingLookup writing the
concatenated output; recopt_bf16: the same over bfloat16 copies of the
tables (what optimize(precision="bf16") stores), float32 out;
recopt_int8: over 8-bit row-wise copies (uint8 codes + fp32 scale and
bias per row, what optimize(precision="int8") stores). For the
ragged case, recopt_first_ids runs the fused op on the same bags with every
repeat of an id within a table's batch dropped: the time no id
de-duplication could beat, since a dedup still adds each repeat's row.
Also measures the machine's copy bandwidth in the same run and reports the
fused op's effective bandwidth (bytes of table rows read / time).

    python -m bench.embedding --threads inline|default [--repeats N]
"""
import argparse
import os
import sys
import time

import numpy as np

TABLES, ROWS, DIM, BATCH, HOT, REPEATED, SHARDS = 26, 100_000, 64, 512, 10, 0.3, 4


def _ids(rng, shape):
    """Uniform ids where REPEATED of the entries repeat an id drawn before."""
    n = int(np.prod(shape))
    fresh = rng.integers(0, ROWS, n)
    repeat = rng.random(n) < REPEATED
    fresh[repeat] = rng.choice(fresh[~repeat], int(repeat.sum()))
    return fresh.reshape(shape)


def _first_occurrences(values, splits):
    """The ragged bags with each id's repeats (after its first use in the batch) dropped."""
    _, first = np.unique(values, return_index=True)
    keep = np.zeros(len(values), bool)
    keep[first] = True
    rows = np.repeat(np.arange(len(splits) - 1), np.diff(splits))[keep]
    return values[keep], np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(splits) - 1))])


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--threads", choices=["default", "inline"], default="inline")
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench import common
    common.set_threads(args.threads)
    import tensorflow as tf
    import tf_recopt
    from tf_recopt.ops.embedding import (EmbeddingFeature, ShardedTable, encode_rowwise_uint8,
                                         fused_embedding_lookup)
    ops = tf_recopt.load_ops()

    rng = np.random.default_rng(0)
    tables = [tf.Variable(rng.standard_normal((ROWS, DIM)).astype(np.float32)) for _ in range(TABLES)]
    sharded = [[tf.Variable(rng.standard_normal((ROWS // SHARDS, DIM)).astype(np.float32)) for _ in range(SHARDS)]
               for _ in range(TABLES)]
    cases = {"one-hot": (BATCH,), "multi-hot x10 sum": (BATCH, HOT), "ragged 0-20 sum": "ragged",
             f"one-hot, {SHARDS} shards": (BATCH,), f"multi-hot x10 sum, {SHARDS} shards": (BATCH, HOT)}
    halves = {id(t): tf.Variable(tf.cast(t, tf.bfloat16)) for t in tables + [s for g in sharded for s in g]}
    bytes8 = {id(t): tf.Variable(encode_rowwise_uint8(t.numpy())) for t in tables + [s for g in sharded for s in g]}
    rows, bandwidth = [], common.copy_bandwidth_gbs()
    for case, shape in cases.items():
        ragged, split = shape == "ragged", "shards" in case
        stock_tables = sharded if split else tables
        op_tables = [ShardedTable(tuple(t)) for t in sharded] if split else tables
        bf16_tables = [ShardedTable(tuple(halves[id(s)] for s in t)) for t in sharded] if split else \
            [halves[id(t)] for t in tables]
        int8_tables = [ShardedTable(tuple(bytes8[id(s)] for s in t)) for t in sharded] if split else \
            [bytes8[id(t)] for t in tables]
        if ragged:
            splits = [np.concatenate([[0], np.cumsum(rng.integers(0, 2 * HOT + 1, BATCH))]) for _ in range(TABLES)]
            ids = [tf.RaggedTensor.from_row_splits(_ids(rng, (int(s[-1]),)), s) for s in splits]
            shape = (int(sum(s[-1] for s in splits) / TABLES),)   # for the bytes read
        else:
            ids = [tf.constant(_ids(rng, shape)) for _ in range(TABLES)]
        pooled = ragged or len(shape) == 2
        features = [EmbeddingFeature(t, layout="ragged" if ragged else "dense", combiner="sum" if pooled else "none")
                    for t in range(TABLES)]
        flat = [i.values if ragged else i for i in ids]
        parts = [[i.row_splits] for i in ids] if ragged else None

        @tf.function
        def stock():
            looked = [tf.nn.embedding_lookup(t, i) for t, i in zip(stock_tables, ids)]
            return tf.concat([tf.reduce_sum(x, 1) if pooled else x for x in looked], axis=1)

        @tf.function
        def fused():
            return fused_embedding_lookup(ops, op_tables, features, flat, parts, concat=True)

        @tf.function
        def fused_bf16():
            return fused_embedding_lookup(ops, bf16_tables, features, flat, parts, concat=True)

        @tf.function
        def fused_int8():
            return fused_embedding_lookup(ops, int8_tables, features, flat, parts, concat=True)

        variants = {"stock": lambda: stock().numpy(), "recopt": lambda: fused().numpy(),
                    "recopt_bf16": lambda: fused_bf16().numpy(), "recopt_int8": lambda: fused_int8().numpy()}
        if ragged:
            firsts = [_first_occurrences(i.values.numpy(), i.row_splits.numpy()) for i in ids]

            @tf.function
            def fused_first_ids():
                return fused_embedding_lookup(ops, op_tables, features, [tf.constant(v) for v, _ in firsts],
                                              [[tf.constant(s)] for _, s in firsts], concat=True)
            variants["recopt_first_ids"] = lambda: fused_first_ids().numpy()

        np.testing.assert_allclose(fused().numpy(), stock().numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(fused_bf16().numpy(), stock().numpy(), rtol=2e-2, atol=3e-2)
        # 8-bit rows: each value within range / 510 (~0.02 for N(0, 1) rows of 64), summed over the bag.
        np.testing.assert_allclose(fused_int8().numpy(), stock().numpy(), rtol=0, atol=0.03 * (2 * HOT + 1))
        time.sleep(3)  # the op's first call queues its tables for huge pages; let that finish
        timings = common.time_calls(variants, repeats=args.repeats)
        for label, (med, p99) in timings.items():
            ids_read = sum(len(v) for v, _ in firsts) if label == "recopt_first_ids" else TABLES * int(np.prod(shape))
            row_bytes = ids_read * ({"recopt_bf16": 2 * DIM, "recopt_int8": DIM + 8}.get(label, 4 * DIM))
            rows.append({"case": case, "variant": label, "batch": BATCH, "median_ms": med, "p99_ms": p99,
                         "vs_stock": timings["stock"][0] / med,
                         "rows_gbs": row_bytes / (med / 1e3) / 1e9})
    payload = {"bench": "embedding", "threads": args.threads, "machine": common.machine(),
               "copy_bandwidth_gbs": bandwidth,
               "setup": f"{TABLES} tables {ROWS}x{DIM} fp32 variables, batch {BATCH}, {int(REPEATED * 100)}% "
                        f"repeated ids; multi-hot {HOT} ids per row; ragged 0-{2 * HOT} ids per row; "
                        f"sharded: each table as {SHARDS} variables of {ROWS // SHARDS} rows (div); "
                        "recopt_bf16 / recopt_int8: bfloat16 / 8-bit row-wise copies of the tables (int8 rows are "
                        f"{DIM} + 8 bytes); recopt_first_ids: the ragged bags without repeated ids, the bound for "
                        "id dedup",
               "command": f"python -m bench.embedding --threads {args.threads} --repeats {args.repeats}",
               "rows": rows}
    common.write_result(f"embedding_{args.threads}", payload)
    print(f"copy bandwidth {bandwidth:.1f} GB/s", file=sys.stderr)
    for r in rows:
        print(f"{r['case']:<18} {r['variant']:<7} median {r['median_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
              f"{r['vs_stock']:.2f}x  rows {r['rows_gbs']:.1f} GB/s", file=sys.stderr)


if __name__ == "__main__":
    main()
