"""Unit benchmark: a whole MLP (1024-512-256-1 on a 512-wide input) as
stock TensorFlow (Grappler remapper + oneDNN), XLA (jit_compile=True) and
one Recopt>FusedMLP op, at batch 1, 64 and 512; the op's two backends
(gemm="packed": the hand kernels, gemm="onednn") side by side with the
default (gemm="auto"), each in fp32 and with weights_bf16.

    python -m bench.mlp --threads inline|default [--repeats N]
    python -m bench.mlp --dims 40,1 --acts linear --batch-sizes 25600 --name mlp_din_att_out
                        (any layer stack; results in bench/results/NAME_THREADS.json)
"""
import argparse
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--threads", choices=["default", "inline"], default="inline")
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--batch-sizes", default="1,64,512")
    p.add_argument("--dims", default="512,1024,512,256,1", help="layer widths, input first")
    p.add_argument("--acts", default="relu,relu,relu,sigmoid", help="one activation per layer")
    p.add_argument("--name", default="mlp", help="results file stem")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench import common
    common.set_threads(args.threads)
    import numpy as np
    import tensorflow as tf
    import tf_recopt
    ops = tf_recopt.load_ops()

    rng = np.random.default_rng(0)
    dims, acts = [int(d) for d in args.dims.split(",")], args.acts.split(",")
    stock_acts = {"relu": tf.nn.relu, "sigmoid": tf.sigmoid, "tanh": tf.tanh, "linear": tf.identity}
    if len(acts) != len(dims) - 1 or set(acts) - set(stock_acts):
        raise SystemExit(f"--acts: {len(dims) - 1} of {sorted(stock_acts)} for --dims {args.dims}, got {acts}")
    ws = [tf.constant((rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)) for a, b in zip(dims, dims[1:])]
    bs = [tf.constant(rng.standard_normal(b).astype(np.float32) * 0.1) for b in dims[1:]]
    alphas = [0.0] * len(acts)

    def stock_body(x):
        h = x
        for w, b, act in zip(ws, bs, acts):
            h = tf.nn.bias_add(tf.matmul(h, w), b)
            h = stock_acts[act](h)
        return h

    variants = {
        "stock": tf.function(stock_body),
        "xla": tf.function(stock_body, jit_compile=True),
    }
    # Both FusedMLP backends inside the same op (attr gemm), so the A/B
    # that picks gemm="auto"'s rule is part of every run.
    for gemm in ("auto", "packed", "onednn"):
        for bf16 in (False, True):
            label = "recopt" + ("_bf16" if bf16 else "") + ("" if gemm == "auto" else "_" + gemm)
            variants[label] = tf.function(
                lambda x, bf16=bf16, gemm=gemm: ops.recopt_fused_mlp(x, ws, bs, activations=acts, alphas=alphas,
                                                                     weights_bf16=bf16, gemm=gemm))
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        x = tf.constant(rng.standard_normal((batch, dims[0])).astype(np.float32))
        ref = variants["stock"](x).numpy()
        for label, fn in variants.items():
            tol = 2e-2 if "bf16" in label else 1e-4
            np.testing.assert_allclose(fn(x).numpy(), ref, rtol=tol, atol=tol, err_msg=label)
        timings = common.time_calls({k: (lambda f=f: f(x).numpy()) for k, f in variants.items()},
                                    repeats=args.repeats)
        for label, (med, p99) in timings.items():
            rows.append({"variant": label, "batch": batch, "median_ms": med, "p99_ms": p99,
                         "vs_stock": timings["stock"][0] / med})
    command = f"python -m bench.mlp --threads {args.threads} --repeats {args.repeats}"
    if args.name != "mlp":
        command += f" --dims {args.dims} --acts {args.acts} --batch-sizes {args.batch_sizes} --name {args.name}"
    payload = {"bench": "mlp", "threads": args.threads, "machine": common.machine(), "command": command,
               "dims": dims, "acts": acts, "rows": rows}
    common.write_result(f"{args.name}_{args.threads}", payload)
    for r in rows:
        print(f"{r['variant']:<20} batch {r['batch']:>4}: median {r['median_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
              f"{r['vs_stock']:.2f}x vs stock", file=sys.stderr)


if __name__ == "__main__":
    main()
