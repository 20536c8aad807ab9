"""`make demo`: export a DLRM, optimize it with the CLI, show before/after.

Runs each step as the user would (the `tf-recopt` command line), then times
original and optimized side by side at batch 1, 64 and 512 with TensorFlow's
default threading and with the inline one-model-per-thread setting.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def _cli(*args):
    cmd = [sys.executable, "-m", "tf_recopt.cli", *args]
    print("$ tf-recopt " + " ".join(args), flush=True)
    result = subprocess.run(cmd, text=True, capture_output=True)
    if result.returncode != 0:
        sys.exit(f"demo step failed:\n{result.stderr[-4000:]}")
    return result.stdout


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="/tmp/tf_recopt_demo")
    p.add_argument("--size", choices=["small", "full"], default="full")
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    shutil.rmtree(args.workdir, ignore_errors=True)
    os.makedirs(args.workdir)
    src, out = os.path.join(args.workdir, "dlrm"), os.path.join(args.workdir, "dlrm_recopt")

    from tf_recopt import zoo
    t0 = time.perf_counter()
    zoo.export("dlrm", src, size=args.size)
    print(f"exported DLRM ({args.size}) to {src} in {time.perf_counter() - t0:.1f}s", flush=True)

    report_path = os.path.join(args.workdir, "report.json")
    print(_cli("optimize", src, out, "--report", report_path))
    report = json.load(open(report_path))
    fired = {}
    for sig in report["signatures"].values():
        for p_ in sig["passes"]:
            fired[p_["name"]] = max(fired.get(p_["name"], 0), p_["applied"])
    print("rewrites fired (per signature): " + ", ".join(f"{k}={v}" for k, v in fired.items()))
    print(f"parity: {'ok' if report['parity_ok'] else 'FAILED'}\n")

    for threads in ("default", "inline"):
        print(f"latency, threads={threads} (median and p99 over {args.repeats} calls, interleaved):")
        print(_cli("bench", f"original={src}", f"optimized={out}", "--batch-sizes", "1,64,512",
                   "--repeats", str(args.repeats), "--threads", threads))


if __name__ == "__main__":
    main()
