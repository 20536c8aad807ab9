"""Unit benchmark: Recopt>DotInteraction vs the stock subgraph it replaces
(BatchMatMulV2(x, transpose(x)) -> reshape -> gather of the strict lower
triangle), DLRM's full size: F = 27 features of d = 64, batch 1, 64, 512.

    python -m bench.interaction --threads inline|default [--repeats N]
"""
import sys

import numpy as np

F, D = 27, 64
BATCHES = (1, 64, 512)


def main(argv=None):
    from bench import common
    args = common.unit_args(argv, default_repeats=200)
    import tensorflow as tf
    import tf_recopt
    ops = tf_recopt.load_ops()
    rows_, cols_ = np.tril_indices(F, -1)
    lower = (rows_ * F + cols_).astype(np.int32)
    rng = np.random.default_rng(0)
    rows = []
    for batch in BATCHES:
        x = tf.constant(rng.standard_normal((batch, F, D)).astype(np.float32))
        stock = tf.function(lambda x=x: tf.gather(
            tf.reshape(tf.matmul(x, tf.transpose(x, [0, 2, 1])), [-1, F * F]), lower, axis=1))
        fused = tf.function(lambda x=x: ops.recopt_dot_interaction(x, [], num_features=F, indices=lower.tolist()))
        np.testing.assert_allclose(fused().numpy(), stock().numpy(), rtol=1e-4, atol=1e-4)
        timings = common.time_calls({"stock": lambda: stock().numpy(), "recopt": lambda: fused().numpy()},
                                    warmup=20, repeats=args.repeats)
        (sm, sp), (rm, rp) = timings["stock"], timings["recopt"]
        rows.append({"batch": batch, "stock_ms": sm, "stock_p99_ms": sp, "recopt_ms": rm, "recopt_p99_ms": rp,
                     "speedup": sm / rm})
        print(f"batch={batch:>4}: stock {sm:.4f} ms (p99 {sp:.4f})  recopt {rm:.4f} ms (p99 {rp:.4f})  "
              f"{sm / rm:.2f}x", file=sys.stderr)
    common.write_result(f"interaction_{args.threads}", {
        "bench": "interaction", "threads": args.threads, "machine": common.machine(),
        "setup": f"F={F}, d={D}, {len(lower)} pairs (strict lower triangle)",
        "command": f"python -m bench.interaction --threads {args.threads} --repeats {args.repeats}", "rows": rows})


if __name__ == "__main__":
    main()
