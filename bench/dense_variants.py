"""Each spelling of a dense layer the FC fusion recognises: stock TensorFlow
(Grappler remapper + oneDNN) vs tf-recopt with stock ops only (canonicalize),
with the FusedMLP op, with bf16 weights, and under precision="int8" (int8
products on VNNI / AMX, per-row activation scales). Two 512-wide layers on a
256-wide input (sequence variants: [B, 8, 256]).

    python -m bench.dense_variants [--threads inline|default] [--repeats N]
"""
import argparse
import os
import sys


def _variants(tf, keras, np):
    rng = np.random.default_rng(0)
    c = lambda *s: tf.constant((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32))  # noqa: E731
    w1, b1, w2, b2 = c(256, 512), c(512), c(512, 512), c(512)
    g = (rng.uniform(0.5, 1.5, 512).astype(np.float32), rng.standard_normal(512).astype(np.float32))
    experts = [(c(256, 64), c(64)) for _ in range(8)]

    def two(act, mm=tf.matmul, bias=lambda h, b: tf.nn.bias_add(h, b)):
        return lambda x: act(bias(mm(act(bias(mm(x, w1), b1)), w2), b2))

    add = lambda h, b: h + b  # noqa: E731
    left = lambda h, b: b + h  # noqa: E731
    seq = (8, 256)
    return {
        "biasadd+relu (remapper fuses)": (two(tf.nn.relu), (256,)),
        "add+relu (Keras 3 export)": (two(tf.nn.relu, bias=add), (256,)),
        "bias on left + relu": (two(tf.nn.relu, bias=left), (256,)),
        "maximum(x, 0)": (two(lambda h: tf.maximum(h, 0.0), bias=add), (256,)),
        "minimum(maximum(x, 0), 6)": (two(lambda h: tf.minimum(tf.maximum(h, 0.0), 6.0), bias=add), (256,)),
        "leaky_relu": (two(lambda h: tf.nn.leaky_relu(h, 0.2)), (256,)),
        "elu": (two(tf.nn.elu), (256,)),
        "sigmoid": (two(tf.sigmoid), (256,)),
        "tanh": (two(tf.tanh), (256,)),
        "swish x*sigmoid(x)": (two(tf.nn.silu), (256,)),
        "gelu exact (erfc)": (two(lambda h: tf.nn.gelu(h, approximate=False)), (256,)),
        "gelu tanh (pow)": (two(lambda h: tf.nn.gelu(h, approximate=True)), (256,)),
        "batch norm mul/add": (lambda x: tf.nn.relu(tf.nn.batch_normalization(
            tf.matmul(tf.nn.relu(tf.matmul(x, w1) + b1), w2) + b2, tf.zeros(512), tf.ones(512), g[1], g[0], 1e-3)),
            (256,)),
        "BatchMatMulV2 [B,8,256]": (two(tf.nn.relu, mm=tf.linalg.matmul, bias=add), seq),
        "einsum [B,8,256]": (two(tf.nn.relu, mm=lambda h, w: tf.einsum("abc,cd->abd", h, w), bias=add), seq),
        "tensordot [B,8,256]": (two(tf.nn.relu, mm=lambda h, w: tf.tensordot(h, w, axes=1), bias=add), seq),
        "8 parallel experts": (lambda x: tf.concat([tf.nn.relu(tf.matmul(x, w) + b) for w, b in experts], 1),
                               (256,)),
    }


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--threads", choices=["default", "inline"], default="inline")
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--batch-sizes", default="1,64,512")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench import common
    common.set_threads(args.threads)
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.eager import wrap_function
    from tensorflow.python.framework import convert_to_constants
    import tf_recopt
    from grappler_passes import run_pipeline
    from tf_recopt.options import OptimizeOptions
    tf_recopt.load_ops()

    def as_function(graph_def, inputs, outputs):
        return wrap_function.function_from_graph_def(graph_def, inputs, outputs)

    rows = []
    for name, (fn, shape) in _variants(tf, keras, np).items():
        concrete = tf.function(fn).get_concrete_function(tf.TensorSpec((None,) + shape, tf.float32))
        frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
        gd = frozen.graph.as_graph_def()
        inputs, outputs = [t.name for t in frozen.inputs], [t.name for t in frozen.outputs]
        protected = {n.split(":")[0] for n in inputs + outputs}
        fns = {"stock": as_function(gd, inputs, outputs)}
        for label, custom, precision in (("recopt stock ops", False, "fp32"), ("recopt", True, "fp32"),
                                         ("recopt bf16", True, "bf16"), ("recopt int8", True, "int8")):
            new, _ = run_pipeline(gd, protected, custom_ops=custom, options=OptimizeOptions(precision=precision))
            fns[label] = as_function(new, inputs, outputs)
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            x = tf.constant(np.random.default_rng(1).standard_normal((batch,) + shape).astype(np.float32))
            ref = fns["stock"](x)[0].numpy()
            max_abs = {}
            for label, f in fns.items():
                got = f(x)[0].numpy()
                max_abs[label] = float(np.abs(got - ref).max())
                if "bf16" not in label and "int8" not in label:   # reduced precision: recorded, not asserted
                    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4, err_msg=f"{name} {label}")
            t = common.time_calls({k: (lambda f=f: f(x)[0].numpy()) for k, f in fns.items()},
                                  warmup=10, repeats=args.repeats)
            for label, (med, p99) in t.items():
                rows.append({"variant": name, "mode": label, "batch": batch, "median_ms": med, "p99_ms": p99,
                             "vs_stock": t["stock"][0] / med, "max_abs": max_abs[label]})
            print(f"{name:<32} batch {batch:>3}: " + "  ".join(
                f"{k} {t['stock'][0] / v[0]:.2f}x" for k, v in t.items() if k != "stock"), file=sys.stderr,
                flush=True)
    common.write_result(f"dense_variants_{args.threads}", {
        "bench": "dense_variants", "threads": args.threads, "machine": common.machine(), "rows": rows,
        "command": f"python -m bench.dense_variants --threads {args.threads} --repeats {args.repeats}"})


if __name__ == "__main__":
    main()
