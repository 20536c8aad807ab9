"""Unit benchmark: Recopt>MultiHeadAttention vs the stock Keras 3
MultiHeadAttention layer it replaces (projections, [B, N, T, S] scores,
mask, softmax, context and output projection as a dozen ops). Two recsys
shapes, d = 64, 4 heads of 16, sequences of 50, batch 1, 64, 512:
  self:   a Behaviour Sequence Transformer block's self-attention over the
          history, with a padding mask [B, 50, 50];
  target: the candidate item (T = 1) attending over the history (S = 50);
  causal: SASRec's self-attention, use_causal_mask=True and no padding
          mask: the op takes Keras' [1, 50, 50] mask as one constant.
Timed in graph (bench.common.in_graph), so eager dispatch hides neither side.

    python -m bench.mha --threads inline|default [--repeats N]
"""
import sys

import numpy as np

D, HEADS, KEY_DIM, STEPS = 64, 4, 16, 50
BATCHES = (1, 64, 512)
SHAPES = {"self": STEPS, "target": 1, "causal": STEPS}


def _inner(batch):
    return max(2, 512 // batch)   # enough calls per timed loop that loop overhead stays small


def _layer():
    import keras
    keras.utils.set_random_seed(0)
    layer = keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=KEY_DIM, bias_initializer="random_normal")
    layer(np.zeros((1, 1, D), np.float32), np.zeros((1, STEPS, D), np.float32))
    qk, qb, kk, kb, vk, vb, ok, ob = [w.numpy() for w in layer.weights]
    flat = [qk.reshape(D, -1), qb.ravel(), kk.reshape(D, -1), kb.ravel(), vk.reshape(D, -1), vb.ravel(),
            ok.reshape(-1, ok.shape[-1]), ob]
    return layer, flat


def _inputs(tf, shape, batch, rng):
    seq = tf.constant(rng.standard_normal((batch, STEPS, D)), tf.float32)
    lengths = rng.integers(1, STEPS + 1, batch)
    keep = np.arange(STEPS)[None, :] < lengths[:, None]
    q = tf.constant(rng.standard_normal((batch, 1, D)), tf.float32) if shape == "target" else seq
    mask = np.repeat(keep[:, None, :], SHAPES[shape], axis=1)
    if shape == "causal":
        mask = np.tril(np.ones((1, STEPS, STEPS), bool))
    return q, seq, tf.constant(mask)


def _row(tf, ops, common, args, shape, batch, rng):
    layer, weights = _layer()
    q, seq, mask = _inputs(tf, shape, batch, rng)
    w = [tf.constant(a) for a in weights]
    stock = (lambda: layer(q, seq, use_causal_mask=True)) if shape == "causal" else \
        (lambda: layer(q, seq, attention_mask=mask))
    fns = {"stock": stock,
           "recopt": lambda: ops.recopt_multi_head_attention(
               q, seq, seq, *w, [mask], num_heads=HEADS, key_dim=KEY_DIM, value_dim=KEY_DIM,
               scale=1 / np.sqrt(KEY_DIM), mask_value=-2.3726709583555947e+38)}
    row = common.stock_vs_recopt(fns, _inner(batch), args.repeats, {"shape": shape, "batch": batch})
    print(f"{shape:6} batch={batch:>4}: stock {row['stock_ms']:.4f} ms  recopt {row['recopt_ms']:.4f} ms  "
          f"{row['vs_stock']:.2f}x", file=sys.stderr)
    return row


def main(argv=None):
    from bench import common
    args = common.unit_args(argv, default_repeats=30)
    import tensorflow as tf
    import tf_recopt
    ops = tf_recopt.load_ops()
    rng = np.random.default_rng(0)
    rows = [_row(tf, ops, common, args, shape, batch, rng) for shape in SHAPES for batch in BATCHES]
    common.write_result(f"mha_{args.threads}", {
        "bench": "mha", "threads": args.threads, "machine": common.machine(),
        "setup": f"keras.layers.MultiHeadAttention({HEADS} heads, key_dim {KEY_DIM}), d={D}, sequence {STEPS}, "
                 "padding mask (history lengths uniform in 1..50); self: T = S = 50, target: T = 1; causal: T = S = 50, use_causal_mask alone",
        "command": f"python -m bench.mha --threads {args.threads} --repeats {args.repeats}", "rows": rows})


if __name__ == "__main__":
    main()
