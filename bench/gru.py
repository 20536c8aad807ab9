"""Unit benchmark: Recopt>GRU vs the stock Keras GRU layer it replaces (a
While loop over TensorLists, one cell's dozen ops per step). DIEN's full
size: input d = 32, 32 units, T = 50, return_sequences, batch 1, 64, 512,
reset_after True (the Keras default) and False; and DIEN's AUGRU (the zoo's
AUGRUCell, "keep" mode, in keras.layers.RNN over [x, score]) masked with
the final state only, as the zoo's DIEN runs it. Timed in graph
(bench.common.in_graph), so eager dispatch does not hide either side.

    python -m bench.gru --threads inline|default [--repeats N]
"""
import sys

import numpy as np

D, UNITS, T = 32, 32, 50
BATCHES = (1, 64, 512)


def _inner(batch):
    return max(2, 512 // batch)   # enough calls per timed loop that loop overhead stays small


def _layer(reset_after):
    import keras
    keras.utils.set_random_seed(0)
    layer = keras.layers.GRU(UNITS, return_sequences=True, reset_after=reset_after,
                             bias_initializer="random_normal")
    layer.build((None, T, D))
    weights = [w.numpy() for w in layer.weights]
    kernel, recurrent, bias = weights
    biases = (bias[0], bias[1]) if reset_after else (bias, np.zeros_like(bias))
    return layer, (kernel, recurrent) + biases


def _augru_layer():
    import keras
    from tf_recopt.zoo.layers import AUGRUCell
    keras.utils.set_random_seed(0)
    layer = keras.layers.RNN(AUGRUCell(UNITS, mode="keep"))
    layer.build((None, T, D + 1))
    kernel, recurrent, bias = (w.numpy() for w in layer.weights)
    return layer, (kernel, recurrent, bias[0], bias[1])


def _fns(tf, ops, cell, batch, rng):
    x = tf.constant(rng.standard_normal((batch, T, D)), tf.float32)
    h0 = tf.zeros([batch, UNITS])
    if cell == "AUGRU masked":
        layer, weights = _augru_layer()
        w = [tf.constant(a) for a in weights]
        scores = tf.constant(rng.random((batch, T)), tf.float32)
        mask = tf.constant(np.arange(T)[None] < rng.integers(0, T + 1, (batch, 1)))
        xa = tf.concat([x, scores[..., None]], -1)
        return {"stock": lambda: layer(xa, mask=mask),
                "recopt": lambda: ops.recopt_gru(x, h0, *w, [mask], [scores], reset_after=True,
                                                 attention_mode="keep")[1]}
    reset_after = cell == "GRU reset_after"
    layer, weights = _layer(reset_after)
    w = [tf.constant(a) for a in weights]
    return {"stock": lambda: layer(x),
            "recopt": lambda: ops.recopt_gru(x, h0, *w, [], [], reset_after=reset_after)[0]}


def _row(tf, ops, common, args, batch, cell, rng):
    row = common.stock_vs_recopt(_fns(tf, ops, cell, batch, rng), _inner(batch), args.repeats,
                                 {"batch": batch, "cell": cell})
    print(f"{cell:17} batch={batch:>4}: stock {row['stock_ms']:.4f} ms  "
          f"recopt {row['recopt_ms']:.4f} ms  {row['vs_stock']:.2f}x", file=sys.stderr)
    return row


def main(argv=None):
    from bench import common
    args = common.unit_args(argv, default_repeats=30)
    import tensorflow as tf
    import tf_recopt
    ops = tf_recopt.load_ops()
    rng = np.random.default_rng(0)
    rows = [_row(tf, ops, common, args, batch, cell, rng)
            for cell in ("GRU reset_after", "GRU reset_before", "AUGRU masked") for batch in BATCHES]
    common.write_result(f"gru_{args.threads}", {
        "bench": "gru", "threads": args.threads, "machine": common.machine(),
        "setup": f"keras.layers.GRU({UNITS}, return_sequences=True) and the zoo's masked AUGRU "
                 f"(final state), input d={D}, T={T}",
        "command": f"python -m bench.gru --threads {args.threads} --repeats {args.repeats}", "rows": rows})


if __name__ == "__main__":
    main()
