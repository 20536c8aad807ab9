"""`tf-recopt tune` on the benchmark's serving model (the zoo's DLRM,
optimized), recorded for BENCHMARKS.md: QPS within a p99 SLA for every
threads x batching configuration, the winner against TensorFlow Serving's
defaults (intra 0, inter 0, batching off).

    python -m bench.serving_tune [--sla-ms 20] [--size full] [-- more tune flags]
"""
import argparse
import json
import os
import sys

from bench import common


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="dlrm")
    p.add_argument("--size", default="full", choices=["small", "full"])
    p.add_argument("--sla-ms", type=float, default=20.0)
    p.add_argument("--workdir", default="/tmp/tf_recopt_bench_serving_tune")
    args = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tf_recopt
    from tf_recopt import zoo
    from tf_recopt.serving import tune
    src = zoo.export(args.model, os.path.join(args.workdir, "src"), size=args.size)
    optimized = os.path.join(args.workdir, "recopt")
    if not os.path.exists(optimized):
        tf_recopt.optimize(src, optimized)
    out = os.path.join(args.workdir, "out")
    tune.main([optimized, "--sla-ms", str(args.sla_ms), "--out", out, *extra])
    with open(os.path.join(out, "tune.json")) as f:
        summary = json.load(f)
    import shutil
    shutil.copy(os.path.join(out, "tune.png"), os.path.join(common.RESULTS_DIR, "serving_tune.png"))
    path = common.write_result("serving_tune", {
        "command": " ".join(["python -m bench.serving_tune", *argv]), "machine": common.machine(),
        "setup": f"zoo {args.model} ({args.size}) optimized, {summary['request_batch']} example(s) per request",
        **summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
