"""Unit benchmark: Recopt>DotInteraction vs the stock subgraph it replaces,
DLRM's full size: F = 27 features of d = 64, batch 1, 64, 512, two forms:
  gather:       BatchMatMulV2(x, transpose(x)) -> reshape -> gather of the
                strict lower triangle (the zoo DLRM, 351 columns);
  skip_gather:  tensorflow-recommenders' DotInteraction(skip_gather=True), the
                Model Garden DLRM's: tf.where(upper band of ones_like(x x^T),
                0, x x^T) -> reshape (729 columns, 378 of them zeros).

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
    rng = np.random.default_rng(0)
    rows = []
    for form, (stock_fn, indices) in _forms(tf).items():
        for batch in BATCHES:
            x = tf.constant(rng.standard_normal((batch, F, D)).astype(np.float32))
            stock, fused = _closures(tf, ops, x, stock_fn, indices)
            np.testing.assert_allclose(fused().numpy(), stock().numpy(), rtol=1e-4, atol=1e-4)
            timings = common.time_calls({"stock": lambda: stock().numpy(), "recopt": lambda: fused().numpy()},
                                        warmup=20, repeats=args.repeats)
            (sm, sp), (rm, rp) = timings["stock"], timings["recopt"]
            rows.append({"form": form, "batch": batch, "stock_ms": sm, "stock_p99_ms": sp, "recopt_ms": rm,
                         "recopt_p99_ms": rp, "speedup": sm / rm})
            print(f"{form:>11} batch={batch:>4}: stock {sm:.4f} ms (p99 {sp:.4f})  recopt {rm:.4f} ms "
                  f"(p99 {rp:.4f})  {sm / rm:.2f}x", file=sys.stderr)
    common.write_result(f"interaction_{args.threads}", {
        "bench": "interaction", "threads": args.threads, "machine": common.machine(),
        "setup": f"F={F}, d={D}; gather: the strict lower triangle, skip_gather: all F*F, upper zeroed",
        "command": f"python -m bench.interaction --threads {args.threads} --repeats {args.repeats}", "rows": rows})


def _closures(tf, ops, x, stock_fn, indices):
    """Both sides as argument-free tf.functions: a list passed as a default
    argument would be re-canonicalised, element by element, on every call."""
    stock = tf.function(lambda: stock_fn(x))
    fused = tf.function(lambda: ops.recopt_dot_interaction(x, [], num_features=F, indices=indices))
    return stock, fused


def _forms(tf):
    """form -> (stock function of x, the op's indices)."""
    rows, cols = np.tril_indices(F, -1)
    lower = (rows * F + cols).astype(np.int32)

    def gather(x):
        return tf.gather(tf.reshape(tf.matmul(x, tf.transpose(x, [0, 2, 1])), [-1, F * F]), lower, axis=1)

    def skip_gather(x):  # tfrs DotInteraction(skip_gather=True).call, self_interaction=False
        xactions = tf.matmul(x, x, transpose_b=True)
        upper = tf.cast(tf.linalg.band_part(tf.ones_like(xactions), 0, -1), tf.bool)
        return tf.reshape(tf.where(upper, tf.zeros_like(xactions), xactions), (tf.shape(x)[0], F * F))
    keep = np.tril(np.ones((F, F), bool), -1).ravel()
    zeroed = [i if k else -1 for i, k in enumerate(keep)]
    return {"gather": (gather, lower.tolist()), "skip_gather": (skip_gather, zeroed)}


if __name__ == "__main__":
    main()
