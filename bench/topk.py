"""Unit benchmark: Recopt>TopK vs tf.math.top_k (TopKV2) on random fp32
rows, n = 1M and 10M, k = 500 and 1000, batch 1 and 8, plus shorter rows
to show where the sampled path starts to pay (fuse_topk's MIN_TOPK_COLS).

    python -m bench.topk --threads inline|default [--repeats N]
"""
import sys

import numpy as np

CASES = [(n, k, b) for n in (1_000_000, 10_000_000) for k in (500, 1000) for b in (1, 8)]
CROSSOVER = [(n, 100, 1) for n in (1024, 4096, 16384, 65536)]


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
        timings = common.time_calls({"stock": lambda: stock()[1].numpy(), "recopt": lambda: fused()[1].numpy()},
                                    warmup=3, repeats=repeats)
        (sm, sp), (rm, rp) = timings["stock"], timings["recopt"]
        rows.append({"n": n, "k": k, "batch": batch, "stock_ms": sm, "stock_p99_ms": sp, "recopt_ms": rm,
                     "recopt_p99_ms": rp, "speedup": sm / rm, "input_gbs": batch * n * 4 / (rm / 1e3) / 1e9})
        r = rows[-1]
        print(f"n={n:>9} k={k:>5} batch={batch}: stock {sm:8.3f} ms (p99 {sp:.3f})  recopt {rm:8.3f} ms "
              f"(p99 {rp:.3f})  {r['speedup']:.2f}x  {r['input_gbs']:.1f} GB/s", file=sys.stderr)
    payload = {"bench": "topk", "threads": args.threads, "machine": common.machine(),
               "copy_bandwidth_gbs": common.copy_bandwidth_gbs(),
               "command": f"python -m bench.topk --threads {args.threads} --repeats {args.repeats}", "rows": rows}
    common.write_result(f"topk_{args.threads}", payload)


if __name__ == "__main__":
    main()
