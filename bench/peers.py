"""Every zoo model (medium size: full's layers, tables and candidate sets
10x smaller, so tf2onnx converts each in seconds and the suite fits in
well under 20 minutes on 2 cores) against its peers: stock TF, XLA, ONNX
Runtime (tf2onnx), tf-recopt with and without custom ops; intra-op threads
1 and all; an SLA search. Writes bench/results/peers.json and the PNGs in
bench/results/peers/ (BENCHMARKS.md is rendered from them).

    python -m bench.peers [--models dlrm,wdl] [--repeats N] [--sla-ms MS] [--size medium]
"""
import argparse
import os
import shutil
import sys
import time

MODELS = ("dlrm", "wdl", "dcn", "din", "dien", "two_tower", "tfrs_retrieval")
SIZE = "medium"
# Retrieval scores 100k candidates per query: 0.8 GFLOP a call at batch 64.
RETRIEVAL = ("two_tower", "tfrs_retrieval")
BATCHES = {"ranking": (1, 64, 512), "retrieval": (1, 8, 64)}
MAX_BATCH = {"ranking": 1024, "retrieval": 64}
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "peers")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--sla-ms", type=float, default=10.0)
    p.add_argument("--workdir", default="/tmp/tf_recopt_bench_peers")
    p.add_argument("--size", choices=["small", "medium", "full"], default=SIZE,
                   help="zoo size (full: tf2onnx takes minutes and ~15 GB on DLRM's 0.7 GB of tables)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench import common
    from tf_recopt import zoo
    from tf_recopt.peers import plots, suite
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    os.makedirs(OUT_DIR)
    merged, start = None, time.perf_counter()
    for name in args.models.split(","):
        kind = "retrieval" if name in RETRIEVAL else "ranking"
        print(f"[peers] {name}", file=sys.stderr, flush=True)
        src = os.path.join(args.workdir, name)
        shutil.rmtree(args.workdir, ignore_errors=True)
        zoo.export(name, src, size=args.size)
        results = suite.measure_models({name: src}, os.path.join(args.workdir, "peers"), batch_sizes=BATCHES[kind],
                                       warmup=args.warmup, repeats=args.repeats, sla_ms=args.sla_ms,
                                       max_batch=MAX_BATCH[kind])
        print(suite.format_table(results), file=sys.stderr, flush=True)
        if merged is None:
            merged = results
        else:
            merged["models"].update(results["models"])
    shutil.rmtree(args.workdir, ignore_errors=True)
    merged["plots"] = plots.write_all(merged, OUT_DIR)
    merged["settings"].update(batch_sizes={k: list(v) for k, v in BATCHES.items()}, max_batch=MAX_BATCH,
                              size=args.size)
    merged["seconds"] = round(time.perf_counter() - start)
    merged["command"] = (f"python -m bench.peers --models {args.models} --repeats {args.repeats} "
                         f"--warmup {args.warmup} --sla-ms {args.sla_ms:g}"
                         + (f" --size {args.size}" if args.size != SIZE else ""))
    merged["bench"] = "peers"
    common.write_result("peers", merged)


if __name__ == "__main__":
    main()
