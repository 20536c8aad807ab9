"""One pass's worth on a real third-party model: a corpus model (bench.corpus)
optimized with every default pass and with all but one, timed side by side
with stock TensorFlow on TF Serving's path (the SavedModel as a v1 Session
callable), interleaved, in both thread modes, by the peers harness.

    python -m bench.pass_ablation --model xDeepFM --pass fuse_cin [--batch-sizes 1,64,512] [--threads 1,all]

Writes bench/results/ablation_<model>_<pass>.json; `python -m bench.report
--only ablation` renders every such file into BENCHMARKS.md.
"""
import argparse
import os
import shutil
import sys
import tempfile


def run(model, pass_name, batch_sizes, threads, repeats, workdir):
    from bench import corpus
    from grappler_passes import DEFAULT_ORDER
    from tf_recopt.benchmark import machine
    from tf_recopt.peers import suite
    import tf_recopt
    if pass_name not in DEFAULT_ORDER:
        raise SystemExit(f"--pass {pass_name!r} is not a default pass: {', '.join(DEFAULT_ORDER)}")
    corpus.install()
    src = os.path.join(workdir, model)
    error = corpus.export(model, src)
    if error:
        raise SystemExit(f"{model} did not export: {error}")
    without = f"recopt_without_{pass_name}_session"
    paths = {"with": os.path.join(workdir, "with"), "without": os.path.join(workdir, "without")}
    reports = {"with": tf_recopt.optimize(src, paths["with"], overwrite=True),
               "without": tf_recopt.optimize(src, paths["without"], overwrite=True,
                                             passes=[p for p in DEFAULT_ORDER if p != pass_name])}
    rewrites = reports["with"].rewrites().get(pass_name, 0)
    if not rewrites:
        raise SystemExit(f"{pass_name} rewrote nothing in {model}: nothing to compare")
    # "stock" (eager) is the harness's parity baseline; the others are timed on the Session path.
    artifacts = {"stock": {"path": src}, "stock_session": {"path": src},
                 without: {"path": paths["without"]}, "recopt_session": {"path": paths["with"]}}
    runs = {}
    for mode in threads:
        spec = dict(model=model, src=src, signature="serving_default", threads=mode, batch_sizes=list(batch_sizes),
                    warmup=5, repeats=repeats, sla_ms=None, max_batch=0, seed=0, artifacts=artifacts)
        runs[mode] = suite.measure_in_subprocess(spec)
    return {"machine": machine(), "model": model, "pass": pass_name, "rewrites": rewrites, "without": without,
            "runs": runs, "command": "python -m bench.pass_ablation " + " ".join(sys.argv[1:])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--pass", dest="pass_name", required=True)
    p.add_argument("--batch-sizes", default="1,64,512")
    p.add_argument("--threads", default="1,all")
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args(argv)
    from bench.common import write_result
    workdir = tempfile.mkdtemp(prefix="recopt_ablation_")
    try:
        result = run(args.model, args.pass_name, [int(b) for b in args.batch_sizes.split(",")],
                     args.threads.split(","), args.repeats, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(write_result(f"ablation_{args.model}_{args.pass_name}", result))


if __name__ == "__main__":
    main()
