"""tf-recopt optimize | inspect | validate | bench | serve | tune.

Errors users can fix (bad paths, unknown signatures or passes, parity
failures) print one line and exit 2; tracebacks are for our bugs.
"""
import argparse
import dataclasses
import json
import os
import sys

EXIT_USAGE = 2


def _csv(value):
    return [v for v in value.split(",") if v] if value else None


from tf_recopt.peers import PEERS as PEER_NAMES  # noqa: E402 - constants only, no TensorFlow import
THREAD_MODES = {"default": "default", "inline": "inline", "all": "default", "1": "inline"}


def _parser():
    p = argparse.ArgumentParser(prog="tf-recopt", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    o = sub.add_parser("optimize", help="write an optimized copy of a SavedModel")
    o.add_argument("input")
    o.add_argument("output", nargs="?")
    o.add_argument("--no-custom-ops", action="store_true", help="stock TensorFlow ops only")
    o.add_argument("--passes", type=_csv, help="comma-separated pass names, in run order")
    o.add_argument("--signatures", type=_csv, help="signatures to rewrite (default all)")
    o.add_argument("--report", help="also write the report JSON here")
    o.add_argument("--overwrite", action="store_true")
    o.add_argument("--no-validate", action="store_true", help="skip the parity check (not advised)")
    o.add_argument("--precision", default="fp32",
                   help="fp32|bf16|int8|bf16_approx|int8_approx|auto, or per component: "
                        "dense=int8,retrieval=fp32,embedding=bf16. "
                        "bf16: fused dense weights, retrieval candidates and embedding tables stored as "
                        "bfloat16; int8: retrieval candidates stored as int8 with per-row scales, fused "
                        "dense layers >= 16 wide multiplied in int8 (VNNI/AMX), 8-bit row-wise tables. "
                        "Retrieval at int8/bf16 is exact (quantized scan, fp32 rescoring: the fp32 ids and "
                        "scores); *_approx keeps the scan's own answer, held to --recall-floor. "
                        "auto: fp32, bf16 and int8 each gated, timed here, the fastest written")
    o.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: only rewrites whose ops have GPU kernels, within their limits (k <= 4096)")
    o.add_argument("--recall-floor", type=float, default=0.99,
                   help="refuse to write when retrieval recall@k vs the original falls below this")
    o.add_argument("--rtol", type=float, help="parity rtol (default 1e-4 fp32, 2e-2 bf16)")
    o.add_argument("--atol", type=float, help="parity atol (default 1e-5 fp32, 5e-3 bf16)")
    o.add_argument("--sample-examples", nargs="+", metavar="TFRECORD",
                   help="parity inputs from tf.Example TFRecord files/dirs/globs (*.gz as GZIP) instead of "
                        "generated ones")
    o.add_argument("--label-key", help="label feature of the --sample-examples: probability outputs are then "
                                       "judged by AUC and logloss instead of element-wise tolerance")
    o.add_argument("--max-auc-drop", type=float, default=0.0005, help="with --label-key (default 0.0005)")
    o.add_argument("--max-logloss-increase", type=float, default=0.001,
                   help="with --label-key, relative to the original's logloss (default 0.001: 0.1%%)")
    o.add_argument("--metric-examples", type=int, default=4096, help="labelled examples read (default 4096)")

    i = sub.add_parser("inspect", help="signatures, op histogram, what each pass would rewrite")
    i.add_argument("input")
    i.add_argument("--no-custom-ops", action="store_true")
    i.add_argument("--json", action="store_true")

    v = sub.add_parser("validate", help="compare an optimized model with its original")
    v.add_argument("original")
    v.add_argument("optimized")
    v.add_argument("--rtol", type=float, default=1e-4)
    v.add_argument("--recall-floor", type=float, default=0.99, help="minimum recall@k for fused top-k ids")
    v.add_argument("--atol", type=float, default=1e-5)
    v.add_argument("--batch-size", type=int, default=8)

    b = sub.add_parser("bench", help="latency/throughput of SavedModels side by side")
    b.add_argument("models", nargs="+", help="SavedModel dirs (LABEL=DIR to name one)")
    b.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64, 512])
    b.add_argument("--signature", default="serving_default")
    b.add_argument("--repeats", type=int, default=200)
    b.add_argument("--warmup", type=int, default=20)
    b.add_argument("--threads", type=_csv, default=None,
                   help="default|inline (all intra-op threads | one, in the caller); with --peers a list "
                        "of 1 and all (default 1,all), each measured in its own process")
    b.add_argument("--json", action="store_true")
    b.add_argument("--peers", action="store_true",
                   help="compare each (original) model against its peers; optimizes the models itself")
    b.add_argument("--peer-set", type=_csv, default=list(PEER_NAMES), metavar="P1,P2",
                   help="with --peers: which of " + ",".join(PEER_NAMES) + " (default all; stock always runs)")
    b.add_argument("--sla-ms", type=float, help="with --peers: also find each peer's largest batch "
                                                "(powers of 2) whose p99 stays under this")
    b.add_argument("--max-batch", type=int, default=4096, help="upper end of the --sla-ms search")
    b.add_argument("--out", default="recopt_bench", help="with --peers: folder for peers.json and the PNG plots")
    b.add_argument("--workdir", help="with --peers: where optimized/converted copies go (default: a temp dir)")
    # Parsed by tf_recopt.serving.server (TF Serving's flag names); listed here for --help.
    sub.add_parser("serve", add_help=False,
                   help="TF-Serving-compatible gRPC/REST model server (see `tf-recopt serve --help`)")
    sub.add_parser("tune", add_help=False,
                   help="the serving threads and batching with the most QPS within a p99 SLA "
                        "(see `tf-recopt tune --help`)")
    return p


def cmd_optimize(args):
    import tf_recopt
    report = tf_recopt.optimize(args.input, args.output, custom_ops=not args.no_custom_ops, passes=args.passes,
                                signatures=args.signatures, validate=not args.no_validate, rtol=args.rtol,
                                atol=args.atol, overwrite=args.overwrite, precision=args.precision,
                                recall_floor=args.recall_floor, sample_inputs=args.sample_examples,
                                device=args.device, label_key=args.label_key, max_auc_drop=args.max_auc_drop,
                                max_logloss_increase=args.max_logloss_increase,
                                metric_examples=args.metric_examples)
    print(report)
    if args.report:
        with open(args.report, "w") as f:
            f.write(report.to_json())
    return 0


def cmd_inspect(args):
    import tf_recopt
    out = tf_recopt.inspect(args.input, custom_ops=not args.no_custom_ops)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for name, s in out["signatures"].items():
        print(f"signature '{name}'")
        print("  inputs:  " + ", ".join(f"{k}: {v}" for k, v in s["inputs"].items()))
        print("  outputs: " + ", ".join(s["outputs"]))
        print("  ops:     " + ", ".join(f"{op} x{n}" for op, n in s["ops"].items()))
        for r in s["passes"]:
            print(f"  pass {r['pass']:<18} would apply {r['would_apply']:>4} (matched {r['matched']}, "
                  f"skipped {len(r['skipped'])})" + (f" FAILED {r['error']}" if r["error"] else ""))
    return 0


def cmd_validate(args):
    import tf_recopt
    result = tf_recopt.validate(args.original, args.optimized, batch_size=args.batch_size, rtol=args.rtol,
                                atol=args.atol, recall_floor=args.recall_floor)
    for name in result.missing:
        print(f"signature '{name}': missing from {args.optimized}")
    for name, parity in result.signatures.items():
        for p in parity:
            measure = f"recall@k={p.recall:.4f}" if p.recall is not None else \
                f"max_abs={p.max_abs:.3g} max_rel={p.max_rel:.3g}"
            print(f"{name}/{p.output}: {measure} {'ok' if p.ok else 'FAIL ' + p.detail}")
    return 0 if result.ok else 1


def cmd_bench(args):
    models = _bench_models(args.models)
    if args.peers:
        return _bench_peers(args, models)
    from tf_recopt import benchmark
    threads = args.threads or ["default"]
    if len(threads) != 1 or threads[0] not in THREAD_MODES:
        raise ValueError(f"--threads: one of {sorted(THREAD_MODES)} without --peers, got {threads}")
    benchmark.configure_threads(THREAD_MODES[threads[0]])
    import tf_recopt
    tf_recopt.load_ops()
    timings = benchmark.bench(models, args.batch_sizes, args.signature, args.warmup, args.repeats)
    if args.json:
        print(json.dumps([dataclasses.asdict(t) for t in timings], indent=1))
    else:
        print(benchmark.format_table(timings))
    return 0


def _bench_models(specs):
    from tf_recopt.saved_model_io import check_saved_model_dir
    models = {}
    for m in specs:
        label, _, path = m.rpartition("=") if "=" in m else (os.path.basename(m.rstrip("/")), "", m)
        check_saved_model_dir(path)
        models[label] = path
    return models


def _bench_peers(args, models):
    import tempfile
    from tf_recopt.peers import suite
    unknown = sorted(set(args.peer_set) - set(PEER_NAMES))
    if unknown:
        raise ValueError(f"--peer-set: unknown peer(s) {unknown}; known: {list(PEER_NAMES)}")
    threads = [{"default": "all", "inline": "1"}.get(t, t) for t in (args.threads or ["1", "all"])]
    if set(threads) - {"1", "all"}:
        raise ValueError(f"--threads with --peers: 1 and/or all, got {args.threads}")
    peers = [p for p in PEER_NAMES if p in args.peer_set or p == "stock"]   # stock is every ratio's baseline
    with tempfile.TemporaryDirectory(prefix="recopt_peers_") as tmp:
        results = suite.run(models, args.out, args.workdir or tmp, batch_sizes=args.batch_sizes, threads=threads,
                            warmup=args.warmup, repeats=args.repeats, sla_ms=args.sla_ms,
                            max_batch=args.max_batch, peers=peers, signature=args.signature)
    print(json.dumps(results, indent=1) if args.json else suite.format_table(results))
    if not args.json:
        print(f"results: {os.path.join(args.out, 'peers.json')}; plots: {', '.join(results.get('plots', []))}")
    return 0


def cmd_serve(argv):
    from tf_recopt.serving import server
    return server.main(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        return _guarded("serve", lambda: cmd_serve(argv[1:]))
    if argv[:1] == ["tune"]:
        from tf_recopt.serving import tune
        return _guarded("tune", lambda: tune.main(argv[1:]))
    args = _parser().parse_args(argv)
    handler = {"optimize": cmd_optimize, "inspect": cmd_inspect, "validate": cmd_validate,
               "bench": cmd_bench}[args.command]
    return _guarded(args.command, lambda: handler(args))


def _guarded(command, fn):
    from tf_recopt.errors import RecoptError
    from grappler_passes import UnknownPassError
    try:
        return fn()
    except (RecoptError, UnknownPassError, FileExistsError, ValueError, KeyError) as exc:
        print(f"tf-recopt {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())


if __name__ == "__main__":
    run()
