"""Unit benchmark: Recopt>DinAttention vs the stock subgraph it replaces
(the zoo's attention_pool: repeat q, concat [q, k, q-k, q*k], the
activation-unit MLP, where(mask), weighted sum) and vs the same subgraph with
its MLP as one Recopt>FusedMLP (what tf-recopt made of it before
fuse_attention). DIN's full size: d = 32, T = 50, MLP 80-40-1 (sigmoid),
batch 1, 64, 512, a random share of each sequence padded. Timed in graph
(bench.common.in_graph), so eager dispatch does not hide the op.

    python -m bench.attention --threads inline|default [--repeats N]
"""
import sys

import numpy as np

D, T, UNITS = 32, 50, (80, 40, 1)
BATCHES = (1, 64, 512)
ACTS = ["sigmoid", "sigmoid", "linear"]
PARTS = ["q", "k", "q-k", "q*k"]


def _inner(batch):
    return max(2, 2048 // batch)   # enough calls per timed loop that loop overhead stays small


def _subgraph(tf, q, keys, mask, mlp):
    q_rep = tf.repeat(tf.expand_dims(q, 1), T, axis=1)
    s = mlp(tf.concat([q_rep, keys, q_rep - keys, q_rep * keys], -1))
    w = tf.where(mask[..., None], s, tf.zeros_like(s))
    return tf.reduce_sum(w * keys, axis=1)


def main(argv=None):
    from bench import common
    args = common.unit_args(argv, default_repeats=30)
    import tensorflow as tf
    import tf_recopt
    from tf_recopt.ops import reference
    ops = tf_recopt.load_ops()
    rng = np.random.default_rng(0)
    dims = (4 * D,) + UNITS
    weights = [tf.constant(rng.standard_normal((a, b)) / np.sqrt(a), tf.float32) for a, b in zip(dims, dims[1:])]
    biases = [tf.constant(rng.standard_normal(b) * 0.1, tf.float32) for b in dims[1:]]
    alphas = [0.0] * len(UNITS)

    def stock_mlp(x):
        return reference.fused_mlp(x, weights, biases, ACTS, alphas)

    def fused_mlp(x):
        return ops.recopt_fused_mlp(x, weights, biases, activations=ACTS, alphas=alphas)

    rows = []
    for batch in BATCHES:
        q = tf.constant(rng.standard_normal((batch, D)), tf.float32)
        keys = tf.constant(rng.standard_normal((batch, T, D)), tf.float32)
        mask = tf.constant(np.arange(T)[None] < rng.integers(1, T + 1, (batch, 1)))
        fns = {
            "stock": lambda: _subgraph(tf, q, keys, mask, stock_mlp),
            "fused_mlp": lambda: _subgraph(tf, q, keys, mask, fused_mlp),
            "recopt": lambda: ops.recopt_din_attention(q, keys, mask, weights, biases, activations=ACTS,
                                                       alphas=alphas, parts=PARTS),
        }
        want = tf.function(fns["stock"])().numpy()
        for label in ("fused_mlp", "recopt"):
            np.testing.assert_allclose(tf.function(fns[label])().numpy(), want, rtol=1e-4, atol=1e-4)
        inner = _inner(batch)
        timings = common.time_calls({k: common.in_graph(f, inner) for k, f in fns.items()}, warmup=3,
                                    repeats=args.repeats)
        row = {"batch": batch, "inner": inner}
        for label, (median, p99) in timings.items():
            row[f"{label}_ms"], row[f"{label}_p99_ms"] = median / inner, p99 / inner
        row["vs_stock"] = row["stock_ms"] / row["recopt_ms"]
        row["vs_fused_mlp"] = row["fused_mlp_ms"] / row["recopt_ms"]
        rows.append(row)
        print(f"batch={batch:>4}: stock {row['stock_ms']:.4f} ms  fused_mlp {row['fused_mlp_ms']:.4f} ms  "
              f"recopt {row['recopt_ms']:.4f} ms  {row['vs_stock']:.2f}x stock, {row['vs_fused_mlp']:.2f}x fused_mlp",
              file=sys.stderr)
    common.write_result(f"attention_{args.threads}", {
        "bench": "attention", "threads": args.threads, "machine": common.machine(),
        "setup": f"d={D}, T={T}, MLP {'-'.join(map(str, UNITS))} over [q, k, q-k, q*k]",
        "command": f"python -m bench.attention --threads {args.threads} --repeats {args.repeats}", "rows": rows})


if __name__ == "__main__":
    main()
