"""One model's latency on the Session path in a warm loop: stock, tf-recopt
and (when onnxruntime and tf2onnx are installed) ONNX Runtime, one thread
each (intra-op 1, inter-op -1), each called `--inner` times in a row per
round, rounds interleaved across the runtimes, median us per call.

bench.corpus and bench.peers interleave the runtimes call by call, so every
call starts with caches another runtime just used; this is the other
regime, a busy server running one model.

    python -m bench.warm_loop SRC [--optimized DIR | --option KEY=VALUE ...] [--batch 1] [--rounds 9] [--inner 500]

SRC is a SavedModel (a corpus model: `python -m bench.corpus_export NAME SRC`
with PYTHONPATH=build/corpus and TF_USE_LEGACY_KERAS=1). Without
--optimized it is optimized into a temporary directory first, with the
OptimizeOptions fields given as --option (freeze_table_max_bytes=0: the
tables kept variables, as before they were frozen).
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np


def measure(src, optimized, workdir, batch, rounds, inner, signature="serving_default"):
    from tf_recopt.benchmark import feed_maker
    from tf_recopt.peers.prepare import prepare
    from tf_recopt.peers.runners import make_runner
    peers = {"stock": ("stock_session", src), "recopt": ("recopt_session", optimized)}
    onnx = prepare(src, workdir, "model", ["onnxruntime"])["onnxruntime"]
    if "path" in onnx:
        peers["onnxruntime"] = ("onnxruntime", onnx["path"])
    runners = {}
    for label, (peer, path) in peers.items():
        try:
            runners[label] = make_runner(peer, path, signature, "1")
        except Exception as e:  # noqa: BLE001 - ONNX Runtime rejecting a model leaves the TF rows standing
            if label != "onnxruntime":
                raise
            onnx = {"error": str(e)}
    if "onnxruntime" not in runners:
        print(f"onnxruntime left out: {onnx.get('error')}")
    feeds = {k: v.numpy() for k, v in feed_maker(src, signature, 0)(batch).items()}
    calls = {label: r.bind(feeds) for label, r in runners.items()}
    for call in calls.values():
        for _ in range(max(10, inner // 10)):
            call()
    times = {label: [] for label in calls}
    for _ in range(rounds):
        for label, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                call()
            times[label].append((time.perf_counter() - t0) / inner * 1e6)
    return {label: round(float(np.median(t)), 1) for label, t in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("--optimized", help="an optimize()d copy of SRC (default: made in a temporary directory)")
    p.add_argument("--option", action="append", default=[], help="KEY=VALUE, an optimize() option (int if it parses)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--inner", type=int, default=500)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        optimized = args.optimized
        if optimized is None:
            import tf_recopt
            optimized = os.path.join(tmp, "recopt")
            tf_recopt.optimize(args.src, optimized, **dict(_option(o) for o in args.option))
        result = measure(args.src, optimized, tmp, args.batch, args.rounds, args.inner)
    print(json.dumps({"model": args.src, "batch": args.batch, "median_us": result}))


def _option(text):
    key, _, value = text.partition("=")
    try:
        return key, int(value)
    except ValueError:
        return key, value


if __name__ == "__main__":
    main()
