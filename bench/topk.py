"""Unit benchmark: Recopt>TopK vs tf.math.top_k (TopKV2) on random fp32
rows, n = 1M and 10M, k = 500 and 1000, batch 1 and 8, plus shorter rows
to show where the sampled path starts to pay (fuse_topk's MIN_TOPK_COLS).

Each op is timed two ways: one tf.function call per op from Python (what a
Python caller sees, including about half a millisecond of eager dispatch on
this machine), and in graph: a tf.while_loop running the op `inner` times
per call (10 for short rows, fewer as rows grow, so a call stays near a
few tens of milliseconds), each iteration's result feeding a carried sum so
none is pruned or merged; per-op time = call time / inner, with the loop's
own overhead included for both.

    python -m bench.topk --threads inline|default [--repeats N]
"""
import sys

import numpy as np

CASES = [(n, k, b) for n in (1_000_000, 10_000_000) for k in (500, 1000) for b in (1, 8)]
CROSSOVER = [(n, 100, 1) for n in (1024, 4096, 16384, 65536)]


def _inner(n, batch):
    return int(np.clip(16_000_000 // (batch * n), 1, 10))


def main(argv=None):
    from bench import common
    args = common.unit_args(argv)
    import tensorflow as tf
    import tf_recopt
    ops = tf_recopt.load_ops()
    rng = np.random.default_rng(0)
    rows = []
    for n, k, batch in CROSSOVER + CASES:
        x = tf.constant(rng.standard_normal((batch, n)).astype(np.float32))
        stock = tf.function(lambda x=x, k=k: tf.math.top_k(x, k))
        fused = tf.function(lambda x=x, k=k: ops.recopt_top_k(x, k))
        np.testing.assert_array_equal(fused()[1].numpy(), stock()[1].numpy())
        repeats = args.repeats if n >= 1_000_000 else 10 * args.repeats
        inner = _inner(n, batch)
        timings = common.time_calls({"stock": lambda: stock()[1].numpy(), "recopt": lambda: fused()[1].numpy(),
                                     "stock_graph": common.in_graph(lambda x=x, k=k: tf.math.top_k(x, k), inner),
                                     "recopt_graph": common.in_graph(lambda x=x, k=k: ops.recopt_top_k(x, k), inner)},
                                    warmup=3, repeats=repeats)
        (sm, sp), (rm, rp) = timings["stock"], timings["recopt"]
        (gsm, gsp), (grm, grp) = [[t / inner for t in timings[v]] for v in ("stock_graph", "recopt_graph")]
        rows.append({"n": n, "k": k, "batch": batch, "inner": inner, "stock_ms": sm, "stock_p99_ms": sp, "recopt_ms": rm,
                     "recopt_p99_ms": rp, "speedup": sm / rm, "input_gbs": batch * n * 4 / (rm / 1e3) / 1e9,
                     "graph_stock_ms": gsm, "graph_stock_p99_ms": gsp, "graph_recopt_ms": grm,
                     "graph_recopt_p99_ms": grp, "graph_speedup": gsm / grm,
                     "graph_input_gbs": batch * n * 4 / (grm / 1e3) / 1e9})
        r = rows[-1]
        print(f"n={n:>9} k={k:>5} batch={batch}: per call stock {sm:8.3f} ms recopt {rm:8.3f} ms "
              f"{r['speedup']:.2f}x; in graph stock {gsm:8.3f} ms recopt {grm:8.3f} ms {r['graph_speedup']:.2f}x "
              f"{r['graph_input_gbs']:.1f} GB/s", file=sys.stderr)
    payload = {"bench": "topk", "threads": args.threads, "machine": common.machine(),
               "copy_bandwidth_gbs": common.copy_bandwidth_gbs(),
               "command": f"python -m bench.topk --threads {args.threads} --repeats {args.repeats}", "rows": rows}
    common.write_result(f"topk_{args.threads}", payload)


if __name__ == "__main__":
    main()
