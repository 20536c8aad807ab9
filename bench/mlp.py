"""Unit benchmark: a whole MLP (1024-512-256-1 on a 512-wide input) as
stock TensorFlow (Grappler remapper + oneDNN), XLA (jit_compile=True) and
one Recopt>FusedMLP op, at batch 1, 64 and 512; the op's two backends
(gemm="packed": the hand kernels, gemm="onednn") side by side with the
default (gemm="auto"), each in fp32 and with weights_bf16, and int8 layers
(what precision="int8" writes: int8_layers on every layer >= 16 wide);
every variant both as an eager call and as a Session callable (TF
Serving's path; XLA eager only), with its max abs deviation from stock.

    python -m bench.mlp --threads inline|default [--repeats N]
    python -m bench.mlp --paths in-graph --batch-sizes 1,2,4,8,16,32,64 --name mlp_rows
                        (per-op time, 20 calls in one tf.function: the A/B behind gemm="auto")
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
    p.add_argument("--paths", default="eager,session",
                   help="eager (a tf.function call from Python), session (TF Serving's Session callable), "
                        "in-graph (per-op time without either call's overhead)")
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
    # numpy, not eager tensors: each function embeds them as constants when
    # traced, in the eager functions and in the Session's graph alike.
    ws = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32) for a, b in zip(dims, dims[1:])]
    bs = [rng.standard_normal(b).astype(np.float32) * 0.1 for b in dims[1:]]
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
    # precision="int8"'s choice of layers (fuse_dense), gemm="auto".
    from grappler_passes.fuse_dense import int8_worthy
    int8_layers = [i for i, kn in enumerate(zip(dims, dims[1:])) if int8_worthy(*kn)]
    if int8_layers:
        variants["recopt_int8"] = tf.function(
            lambda x: ops.recopt_fused_mlp(x, ws, bs, activations=acts, alphas=alphas, int8_layers=int8_layers))
    paths = args.paths.split(",")
    if set(paths) - {"eager", "session", "in-graph"}:
        raise SystemExit(f"--paths: eager, session and/or in-graph, got {args.paths}")
    session = _session_callables(tf, variants, dims[0], args.threads) if "session" in paths else {}
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        x_np = rng.standard_normal((batch, dims[0])).astype(np.float32)
        x = tf.constant(x_np)
        ref = variants["stock"](x).numpy()
        max_abs = {}
        for label, fn in list(variants.items()):
            try:
                fn(x)
            except tf.errors.OpError as exc:
                if "gemm=onednn but" not in exc.message:   # oneDNN has no fast kernel here
                    raise
                print(f"{label}: not run: {exc.message.splitlines()[0]}", file=sys.stderr)
                del variants[label]
                session.pop(label, None)
                continue
            # options.DEFAULT_TOLERANCE of each precision
            tol = 5e-2 if "int8" in label else 2e-2 if "bf16" in label else 1e-4
            got = fn(x).numpy()
            max_abs[label] = float(np.abs(got - ref).max()) if got.size else 0.0
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, err_msg=label)
            if label in session:
                np.testing.assert_allclose(session[label](x_np), ref, rtol=tol, atol=tol, err_msg=f"{label} (session)")
        # One interleaved run over both paths: the eager call from Python and
        # TF Serving's, the graph as a Session callable.
        fns = {("eager", k): (lambda f=f: f(x).numpy()) for k, f in variants.items()} if "eager" in paths else {}
        fns.update({("session", k): (lambda f=f: f(x_np)) for k, f in session.items()})
        if "in-graph" in paths:
            fns.update({("in-graph", k): common.in_graph(lambda f=f: f.python_function(x), _INNER)
                        for k, f in variants.items() if k != "xla"})
        timings = common.time_calls(fns, warmup=3 if "in-graph" in paths else 20, repeats=args.repeats)
        per_call = {key: [t / (_INNER if key[0] == "in-graph" else 1) for t in v] for key, v in timings.items()}
        for (path, label), (med, p99) in per_call.items():
            rows.append({"path": path, "variant": label, "batch": batch, "median_ms": med, "p99_ms": p99,
                         "vs_stock": per_call[(path, "stock")][0] / med, "max_abs": max_abs.get(label)})
    command = f"python -m bench.mlp --threads {args.threads} --repeats {args.repeats}"
    if args.name != "mlp":
        command += f" --dims {args.dims} --acts {args.acts} --batch-sizes {args.batch_sizes} --name {args.name}"
    if args.paths != "eager,session":
        command += f" --paths {args.paths}"
    # A forced lower ISA path (ours, and oneDNN's for both TensorFlow and FusedMLP) is part of the command.
    forced = " ".join(f"{k}={os.environ[k]}" for k in ("RECOPT_ISA", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k))
    command = f"{forced} {command}" if forced else command
    payload = {"bench": "mlp", "threads": args.threads, "machine": common.machine(), "command": command,
               "dims": dims, "acts": acts, "rows": rows}
    common.write_result(f"{args.name}_{args.threads}", payload)
    for r in rows:
        print(f"{r['path']:<9}{r['variant']:<20} batch {r['batch']:>4}: median {r['median_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
              f"{r['vs_stock']:.2f}x vs stock", file=sys.stderr)


# Calls per timed in-graph run: per-op time = run time / _INNER.
_INNER = 20


def _session_callables(tf, variants, width, threads):
    """Each variant's graph in a TF1 Session, called as TF Serving calls a
    SavedModel signature (Session::MakeCallable), with the thread mode's
    pool sizes in the session config."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, width])
        outputs = {label: fn.python_function(x) for label, fn in variants.items() if label != "xla"}
    inline = threads == "inline"
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1 if inline else 0,
                                      inter_op_parallelism_threads=-1 if inline else 0)
    sess = tf.compat.v1.Session(graph=graph, config=config)
    return {label: sess.make_callable(out, feed_list=[x]) for label, out in outputs.items()}


if __name__ == "__main__":
    main()
