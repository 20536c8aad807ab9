"""`make corpus`: tf-recopt over the public model zoos users train with
(DeepCTR 0.9.4, DeepMatch 0.3.2), one model at a time, side by side with
stock TensorFlow on TF Serving's path.

    python -m bench.corpus [--models WDL,DeepFM] [--peers stock,stock_session,recopt_session,onnxruntime,openvino]
                           [--batch-sizes 1,512] [--threads 1] [--no-timing]

Per model: export (bench/corpus_export.py, its own process: Keras 2), then
optimize() in a fresh process (its wall time and peak RSS, parity, which
fused ops it wrote, passes that were dropped), then the peers harness on the
Session path. The packages go into $RECOPT_CORPUS_CACHE (default
build/corpus) with --no-deps: their declared pins are older than our
TensorFlow. Writes bench/results/corpus.json; `python -m bench.report --only
corpus` renders it into BENCHMARKS.md. Not part of `make test`, which runs
a three-model subset (tests/test_corpus.py).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from bench.common import write_result
from bench.corpus_export import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("deepctr==0.9.4", "deepmatch==0.3.2")


def cache_dir():
    return os.environ.get("RECOPT_CORPUS_CACHE", os.path.join(ROOT, "build", "corpus"))


def install():
    """The zoo packages in the cache dir (once); returns the dir."""
    target = cache_dir()
    if not os.path.isdir(os.path.join(target, "deepctr")):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, *PACKAGES],
                       check=True)
    return target


def _env(legacy):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([cache_dir(), ROOT, env.get("PYTHONPATH", "")])
    return env


def _tail(text):
    """The end of a process's stderr, on one line (its error is at the end)."""
    return " | ".join(line for line in text.splitlines() if line.strip())[-600:]


def export(name, out):
    proc = subprocess.run([sys.executable, "-m", "bench.corpus_export", name, out], capture_output=True, text=True,
                          env=_env(legacy=True), cwd=ROOT)
    return None if proc.returncode == 0 else _tail(proc.stderr)


_OPTIMIZE = """
import json, sys, time
import tf_recopt
start = time.perf_counter()
try:
    r = tf_recopt.optimize(sys.argv[1], sys.argv[2], overwrite=True)
    out = dict(ok=r.parity_ok, stages=r.stage_seconds,
               fused={op: n for s in r.signatures.values() for op, n in s.ops_after.items() if op.startswith("Recopt>")},
               dropped={p.name: p.error for s in r.signatures.values() for p in s.passes if p.error},
               rewrites={k: v for k, v in r.rewrites().items() if v},
               nodes=[sum(s.nodes_before for s in r.signatures.values()), sum(s.nodes_after for s in r.signatures.values())])
except Exception as e:
    out = dict(ok=False, error=f"{type(e).__name__}: {e}"[:600])
out["seconds"] = time.perf_counter() - start
# VmHWM, not ru_maxrss: the latter survives exec, so a child forked from a
# big parent would report the parent's size.
out["peak_rss_mb"] = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps(out))
"""


def optimize(src, dst):
    """optimize() in a fresh process: its wall time and peak RSS are its own."""
    proc = subprocess.run([sys.executable, "-c", _OPTIMIZE, src, dst], capture_output=True, text=True,
                          env=_env(legacy=False), cwd=ROOT)
    if proc.returncode != 0:
        return {"ok": False, "error": "optimize process exited %d: %s" % (proc.returncode, _tail(proc.stderr))}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(models, workdir, peers, batch_sizes, threads, timing=True):
    from tf_recopt.benchmark import machine
    from tf_recopt.peers import suite
    install()
    rows = []
    for name in models:
        src, dst = os.path.join(workdir, name), os.path.join(workdir, name + "_recopt")
        started = time.perf_counter()
        row = {"model": name, "export_error": export(name, src)}
        row["export_s"] = time.perf_counter() - started
        if row["export_error"] is None:
            row["optimize"] = optimize(src, dst)
            if timing and row["optimize"].get("ok"):
                measured = suite.measure_models({name: src}, os.path.join(workdir, "peers"), batch_sizes=batch_sizes,
                                                threads=threads, peers=peers, warmup=5, repeats=30)
                row["runs"] = measured["models"][name]["runs"]
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "runs"})[:400], file=sys.stderr)
    return {"machine": machine(), "packages": list(PACKAGES), "peers": list(peers), "batch_sizes": list(batch_sizes),
            "threads": list(threads), "models": rows,
            "command": "python -m bench.corpus " + " ".join(sys.argv[1:])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    # "stock" is the harness's parity baseline: without it nothing is timed.
    p.add_argument("--peers", default="stock,stock_session,recopt_session")
    p.add_argument("--batch-sizes", default="1,512")
    p.add_argument("--threads", default="1")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="recopt_corpus_")
    result = run(args.models.split(","), workdir, tuple(args.peers.split(",")),
                 tuple(int(b) for b in args.batch_sizes.split(",")), tuple(args.threads.split(",")),
                 timing=not args.no_timing)
    write_result("corpus", result)


if __name__ == "__main__":
    main()
