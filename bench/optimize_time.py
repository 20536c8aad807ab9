"""How long optimize() takes on models with many embedding lookups, against
what TensorFlow alone needs to load and re-save the same SavedModel (the
floor any optimizer that writes a SavedModel pays), side by side in one run.

Models: N features, each an embedding_lookup over a table split into 2
variables (a PartitionedVariable's lookup: DynamicPartition, two gathers,
ParallelDynamicStitch, whose arithmetic fuse_embedding probes), tables of
2500 + 7 i rows x 8, concatenated. N = 26 (Criteo's count) and 300.

    python -m bench.optimize_time [--repeats N]
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

FEATURES = (26, 300)


def _export(tf, path, n):
    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            rng = np.random.default_rng(0)
            self.tables = [[tf.Variable(rng.random((2500 + 7 * i, 8), np.float32)) for _ in range(2)]
                           for i in range(n)]

        @tf.function(input_signature=[tf.TensorSpec([None, n], tf.int64)])
        def serve(self, ids):
            return {"out": tf.concat([tf.nn.embedding_lookup(self.tables[i], ids[:, i]) for i in range(n)], 1)}
    model = Model()
    tf.saved_model.save(model, path, signatures={"serving_default": model.serve})


def _timed(fn):
    """(seconds fn() took, its result)."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _load_and_save(tf, src, dst):
    tf.saved_model.save(tf.saved_model.load(src), dst)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_recopt
    from bench import common
    rows, work = [], tempfile.mkdtemp(prefix="recopt_optimize_time_")
    try:
        for n in FEATURES:
            src = os.path.join(work, f"m{n}")
            _export(tf, src, n)
            feeds = {"ids": tf.constant(np.random.default_rng(1).integers(0, 4000, (4, n)))}
            stock, ours = [], []
            for r in range(args.repeats):   # interleaved, each into a fresh directory
                stock.append(_timed(lambda: _load_and_save(tf, src, os.path.join(work, f"s{n}_{r}")))[0])
                seconds, report = _timed(lambda: tf_recopt.optimize(src, os.path.join(work, f"o{n}_{r}"),
                                                                    sample_inputs=feeds))
                ours.append(seconds)
                fused = report.signatures["serving_default"].ops_after.get("Recopt>FusedEmbeddingLookup")
                assert report.parity_ok and fused == 1, report
            row = {"features": n, "load_save_s": statistics.median(stock), "optimize_s": statistics.median(ours),
                   "optimize_max_s": max(ours)}
            row["ratio"] = row["optimize_s"] / row["load_save_s"]
            rows.append(row)
            print(f"N={n:>4}: TensorFlow load+save {row['load_save_s']:.2f} s, optimize {row['optimize_s']:.2f} s "
                  f"(max {row['optimize_max_s']:.2f}), {row['ratio']:.2f}x", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.write_result("optimize_time", {
        "bench": "optimize_time", "machine": common.machine(), "repeats": args.repeats,
        "setup": "N features, each an embedding_lookup over a table split into 2 variables (2500 + 7 i rows x 8)",
        "command": f"python -m bench.optimize_time --repeats {args.repeats}", "rows": rows})


if __name__ == "__main__":
    main()
