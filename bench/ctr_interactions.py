"""Unit benchmark: the classic CTR interaction layers, each as DeepCTR
0.9.4 writes it (stock TensorFlow) against the op its pass emits, at
DeepCTR's default sizes (26 fields of d = 8):

  afm:          AFMLayer (325 pairs, attention 8)       -> Recopt>AfmPooling
  bilinear:     BilinearInteraction("interaction")       -> Recopt>BilinearInteraction
  inner_26:     InnerProductLayer (PNN, 325 pairs)       -> Recopt>DotInteraction
  inner_104:    InnerProductLayer (FGCNN-sized, 104 fields, 5356 pairs)
  autoint:      InteractingLayer (E = 16, 2 heads of 8)  -> Recopt>MultiHeadAttention
  kmax_pooling: KMaxPooling(k=13, axis=1) on [B, 26, 8, 4] -> Recopt>TopK
  fm:           FM (DeepFM's second-order term)         -> Recopt>FactorizationMachine
  dcn_cross:    CrossNet, 2 vector layers on dim 221    -> Recopt>CrossNetwork
  cin:          xDeepFM's CIN, layers (256, 128), split_half -> Recopt>CinProducts + Recopt>FusedMLP per layer

Per-op times in graph (bench.common.stock_vs_recopt: each call runs the
layer `inner` times in a tf.while_loop), interleaved, median and p99.

    python -m bench.ctr_interactions --threads inline|default [--repeats N]
"""
import itertools
import sys

import numpy as np

F, D = 26, 8
BATCHES = (1, 64, 512)


def main(argv=None):
    from bench import common
    args = common.unit_args(argv, default_repeats=30)
    import tensorflow as tf
    import tf_recopt
    ops = tf_recopt.load_ops()
    rng = np.random.default_rng(0)
    rows = []
    for family, make in _families(tf, ops, rng).items():
        for batch in BATCHES:
            fns, inner = make(batch)
            row = common.stock_vs_recopt(fns, inner=max(1, inner // batch), repeats=args.repeats,
                                         row={"family": family, "batch": batch})
            rows.append(row)
            print(f"{family:>12} batch={batch:>4}: stock {row['stock_ms']:.4f} ms  recopt {row['recopt_ms']:.4f} ms"
                  f"  {row['vs_stock']:.2f}x", file=sys.stderr)
    common.write_result(f"ctr_interactions_{args.threads}", {
        "bench": "ctr_interactions", "threads": args.threads, "machine": common.machine(),
        "setup": f"DeepCTR 0.9.4's layers, F={F} fields of d={D} unless named",
        "command": f"python -m bench.ctr_interactions --threads {args.threads} --repeats {args.repeats}",
        "rows": rows})


def _pairs(f):
    rows, cols = zip(*itertools.combinations(range(f), 2))
    return list(rows), list(cols)


def _families(tf, ops, rng):
    """family -> make(batch) -> ({"stock": fn, "recopt": fn}, inner-loop budget in examples)."""
    def normal(*shape, scale=1.0):
        return tf.constant((rng.standard_normal(shape) * scale).astype(np.float32))

    rows, cols = _pairs(F)
    att_w, att_b, att_h = normal(D, 8, scale=0.3), normal(8), normal(8, 1)
    bil_w = normal(len(rows), D, D, scale=0.3)
    zeros_pd = tf.zeros([len(rows), D])

    def afm(batch):
        x = normal(batch, F, D)

        def stock():
            fields = tf.split(x, F, axis=1)
            e = tf.concat([fields[r] for r in rows], 1) * tf.concat([fields[c] for c in cols], 1)
            hidden = tf.nn.relu(tf.nn.bias_add(tf.tensordot(e, att_w, axes=(-1, 0)), att_b))
            return tf.reduce_sum(tf.nn.softmax(tf.tensordot(hidden, att_h, axes=(-1, 0)), axis=1) * e, axis=1)
        return {"stock": stock, "recopt": lambda: ops.recopt_afm_pooling(x, att_w, att_b, att_h, rows=rows,
                                                                           cols=cols)}, 4096

    def bilinear(batch):
        x = normal(batch, F, D)

        def stock():
            fields = tf.split(x, F, axis=1)
            return tf.concat([tf.tensordot(fields[r], bil_w[t], axes=(-1, 0)) * fields[c]
                              for t, (r, c) in enumerate(zip(rows, cols))], axis=1)
        return {"stock": stock, "recopt": lambda: ops.recopt_bilinear_interaction(
            x, bil_w, zeros_pd, rows=rows, cols=cols, weight_index=list(range(len(rows))))}, 2048

    def inner(f):
        r, c = _pairs(f)
        flat = [i * f + j for i, j in zip(r, c)]

        def make(batch):
            x = normal(batch, f, D)

            def stock():
                fields = tf.split(x, f, axis=1)
                return tf.reduce_sum(tf.concat([fields[i] for i in r], 1) * tf.concat([fields[j] for j in c], 1),
                                     axis=2)
            return {"stock": stock, "recopt": lambda: ops.recopt_dot_interaction(x, [], num_features=f,
                                                                                   indices=flat)}, 4096
        return make

    heads, head_dim, width = 2, 8, 16
    wq, wk, wv = (normal(width, heads * head_dim, scale=0.25) for _ in range(3))
    zero, eye = tf.zeros([heads * head_dim]), tf.eye(heads * head_dim)

    def autoint(batch):
        x = normal(batch, F, width)

        def stock():
            q, k, v = (tf.stack(tf.split(tf.tensordot(x, w, axes=(-1, 0)), heads, axis=2)) for w in (wq, wk, wv))
            r = tf.matmul(tf.nn.softmax(tf.matmul(q, k, transpose_b=True)), v)
            return tf.squeeze(tf.concat(tf.split(r, heads), axis=-1), axis=0)
        return {"stock": stock, "recopt": lambda: ops.recopt_multi_head_attention(
            x, x, x, wq, zero, wk, zero, wv, zero, eye, zero, [], num_heads=heads, key_dim=head_dim,
            value_dim=head_dim, scale=1.0)}, 4096

    def kmax(batch):
        x = tf.transpose(normal(batch, F, D, 4), [0, 3, 2, 1])   # the rows KMaxPooling ranks

        def stock():
            return tf.math.top_k(x, 13)[0]

        def recopt():
            return ops.recopt_top_k(x, 13)[0]
        return {"stock": stock, "recopt": recopt}, 4096

    def fm(batch):
        x = normal(batch, F, D)

        def stock():
            square_of_sum = tf.square(tf.reduce_sum(x, axis=1, keepdims=True))
            sum_of_square = tf.reduce_sum(x * x, axis=1, keepdims=True)
            return 0.5 * tf.reduce_sum(square_of_sum - sum_of_square, axis=2)

        def recopt():
            return ops.recopt_factorization_machine(x, reduce=True, scale=0.5)
        return {"stock": stock, "recopt": recopt}, 4096

    dim, layers = F * D + 13, 2
    cross_w = [normal(dim, 1, scale=1 / np.sqrt(dim)) for _ in range(layers)]
    cross_b = [normal(dim, 1) for _ in range(layers)]
    cross_kernels = tf.concat([tf.transpose(w) for w in cross_w], 0)
    cross_biases = tf.concat([tf.transpose(b) for b in cross_b], 0)

    def dcn_cross(batch):
        x = normal(batch, dim)

        def stock():
            x0 = tf.expand_dims(x, 2)
            xl = x0
            for w, b in zip(cross_w, cross_b):
                xl = tf.matmul(x0, tf.tensordot(xl, w, axes=(1, 0))) + b + xl
            return tf.squeeze(xl, 2)

        def recopt():
            return ops.recopt_cross_network(x, cross_kernels, tf.zeros([layers]), cross_biases)
        return {"stock": stock, "recopt": recopt}, 4096

    cin_sizes = (256, 128)   # DeepCTR's xDeepFM default, split_half
    cin_fields = [F] + [h // 2 for h in cin_sizes[:-1]]
    cin_w = [normal(1, F * f, h, scale=1 / np.sqrt(F * f)) for f, h in zip(cin_fields, cin_sizes)]
    cin_b = [normal(h, scale=0.1) for h in cin_sizes]

    def cin(batch):
        x = normal(batch, F, D)

        def layers(layer):
            hidden, direct = x, []
            for i, size in enumerate(cin_sizes):
                out = layer(i, hidden)   # [B, size, D]
                if i + 1 < len(cin_sizes):
                    hidden, keep = tf.split(out, 2 * [size // 2], 1)
                    direct.append(keep)
                else:
                    direct.append(out)
            return tf.reduce_sum(tf.concat(direct, 1), -1)

        def stock_layer(i, h):   # DeepCTR's CIN.call
            m = tf.matmul(tf.split(x, D * [1], 2), tf.split(h, D * [1], 2), transpose_b=True)
            o = tf.transpose(tf.reshape(m, [D, -1, F * cin_fields[i]]), [1, 0, 2])
            c = tf.nn.relu(tf.nn.bias_add(tf.nn.conv1d(o, cin_w[i], 1, "VALID"), cin_b[i]))
            return tf.transpose(c, [0, 2, 1])

        def recopt_layer(i, h):  # what fuse_cin writes
            f = cin_fields[i]
            z = ops.recopt_cin_products(x, h)
            y = ops.recopt_fused_mlp(z, [tf.reshape(cin_w[i], [F * f, -1])], [cin_b[i]], activations=["relu"],
                                     alphas=[0.0])
            return tf.transpose(tf.reshape(y, [-1, D, cin_sizes[i]]), [0, 2, 1])
        return {"stock": lambda: layers(stock_layer), "recopt": lambda: layers(recopt_layer)}, 512

    return {"afm": afm, "bilinear": bilinear, "inner_26": inner(26), "inner_104": inner(104), "autoint": autoint,
            "kmax_pooling": kmax, "fm": fm, "dcn_cross": dcn_cross, "cin": cin}


if __name__ == "__main__":
    main()
