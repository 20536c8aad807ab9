"""End to end: each zoo model (full size) as exported vs optimized by
tf-recopt, side by side in one process per threading mode.

    python -m bench.end_to_end [--models dlrm,wdl] [--repeats N] [--workdir DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

# Two-tower scores 1M candidates per query: batch 512 would be ~65 GFLOP a call.
BATCH_SIZES = {"two_tower": "1,8"}
DEFAULT_BATCHES = "1,64,512"
MODELS = ("dlrm", "wdl", "dcn", "din", "dien", "two_tower", "tfrs_retrieval", "tfrs_ranking")
BATCH_SIZES["tfrs_retrieval"] = "1,8"
RETRIEVAL_MODELS = ("two_tower", "tfrs_retrieval")


def _bench(models, batches, threads, repeats):
    cmd = [sys.executable, "-m", "tf_recopt.cli", "bench", *[f"{k}={v}" for k, v in models.items()],
           "--batch-sizes", batches, "--threads", threads, "--repeats", str(repeats), "--json"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"bench failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout)


def run_model(name, workdir, repeats):
    from tf_recopt import zoo
    import tf_recopt
    src = os.path.join(workdir, name)
    outs = {"recopt": (os.path.join(workdir, f"{name}_recopt"), "fp32"),
            "recopt_bf16": (os.path.join(workdir, f"{name}_recopt_bf16"), "bf16"),
            # precision="int8": dense layers, embedding tables and candidates
            # (each falling back to fp32 where it breaks parity; see fallbacks).
            "recopt_int8": (os.path.join(workdir, f"{name}_recopt_int8"), "int8")}
    if name in RETRIEVAL_MODELS:  # int8 retrieval is exact; the approximate scan beside it
        outs["recopt_int8_approx"] = (os.path.join(workdir, f"{name}_recopt_int8_approx"), "int8_approx")
    for path in [src] + [p for p, _ in outs.values()]:
        shutil.rmtree(path, ignore_errors=True)
    zoo.export(name, src, size="full")
    entry = {"model": name, "timings": {}}
    for label, (path, precision) in list(outs.items()):
        t0 = time.perf_counter()
        try:
            report = tf_recopt.optimize(src, path, precision=precision)
        except tf_recopt.ParityError as exc:
            # Reduced precision may move ids below recall_floor: optimize refuses, as it should.
            entry[f"{precision}_refused"] = str(exc).split(": ", 1)[-1][:200]
            del outs[label]
            continue
        if label == "recopt":
            entry.update(optimize_seconds=round(time.perf_counter() - t0, 2), rewrites=report.rewrites(),
                         parity_ok=report.parity_ok)
        else:
            parity = [p for s in report.signatures.values() for p in s.parity]
            entry[f"{precision}_parity_max_abs"] = max(p.max_abs for p in parity if p.recall is None)
            recalls = [p.recall for p in parity if p.recall is not None]
            if recalls:
                entry[f"{precision}_recall"] = min(recalls)
            if report.precision_fallbacks:
                entry[f"{precision}_fallbacks"] = [f.split(":")[0] for f in report.precision_fallbacks]
    models = {"stock": src, **{label: path for label, (path, _) in outs.items()}}
    for threads in ("default", "inline"):
        entry["timings"][threads] = _bench(models, BATCH_SIZES.get(name, DEFAULT_BATCHES), threads, repeats)
    for path in models.values():
        shutil.rmtree(path, ignore_errors=True)
    return entry


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--workdir", default="/tmp/tf_recopt_bench")
    p.add_argument("--name", default="end_to_end", help="results file (bench/results/NAME.json)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench import common
    os.makedirs(args.workdir, exist_ok=True)
    entries = []
    for name in args.models.split(","):
        print(f"[end_to_end] {name}", file=sys.stderr, flush=True)
        entries.append(run_model(name, args.workdir, args.repeats))
    payload = {"bench": "end_to_end", "machine": common.machine(), "entries": entries,
               "int8_scope": "(dense, tables, candidates)",
               "command": f"python -m bench.end_to_end --models {args.models} --repeats {args.repeats}"
               + (f" --name {args.name}" if args.name != "end_to_end" else "")}
    common.write_result(args.name, payload)


if __name__ == "__main__":
    main()
