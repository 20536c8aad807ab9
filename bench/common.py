"""Shared benchmark plumbing: timing loops, machine description, JSON results."""
import json
import os
import time

import numpy as np

from tf_recopt import benchmark as _benchmark
from tf_recopt import timing

machine = _benchmark.machine   # the bench scripts' machine description

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def time_calls(fns, warmup=20, repeats=200):
    """fns: label -> zero-arg callable, interleaved (tf_recopt.timing).
    Returns label -> (median ms, p99 ms)."""
    return {label: timing.summary_ms(s) for label, s in timing.interleaved(fns, warmup, repeats).items()}


def in_graph(make_outputs, inner):
    """A zero-argument callable that runs make_outputs() `inner` times in one
    tf.function (a tf.while_loop), for per-op time = call time / inner free
    of Python's eager dispatch. make_outputs returns a tensor or a tuple of
    non-empty tensors; each iteration's first entries feed a carried sum, so
    no iteration is pruned or merged with another."""
    import tensorflow as tf

    def body(i, acc):
        outputs = make_outputs()
        for out in outputs if isinstance(outputs, (tuple, list)) else (outputs,):
            acc += tf.cast(tf.reshape(out, [-1])[0], tf.float32)
        return i + 1, acc

    # parallel_iterations=1: the iterations share no data, and TensorFlow
    # would otherwise run several at once on the inter-op pool.
    fn = tf.function(lambda: tf.while_loop(lambda i, _: i < inner, body, (tf.constant(0), tf.constant(0.)),
                                           parallel_iterations=1)[1])
    return lambda: fn().numpy()


def stock_vs_recopt(fns, inner, repeats, row):
    """Checks fns["recopt"] against fns["stock"] (rtol/atol 1e-4), times both
    in graph, interleaved, and adds per-op median/p99 ms and the speed-up to row."""
    import tensorflow as tf
    np.testing.assert_allclose(tf.function(fns["recopt"])().numpy(), tf.function(fns["stock"])().numpy(),
                               rtol=1e-4, atol=1e-4)
    timings = time_calls({k: in_graph(f, inner) for k, f in fns.items()}, warmup=3, repeats=repeats)
    row["inner"] = inner
    for label, (median, p99) in timings.items():
        row[f"{label}_ms"], row[f"{label}_p99_ms"] = median / inner, p99 / inner
    row["vs_stock"] = row["stock_ms"] / row["recopt_ms"]
    return row


def copy_bandwidth_gbs(repeats=5):
    """Read+write bytes per second of a 256 MiB numpy copy (best of repeats)."""
    src = np.ones(64 << 20, np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def write_result(name, payload):
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path


def unit_args(argv, default_threads="default", default_repeats=30):
    """--threads/--repeats for a unit benchmark; sets the threading mode
    (before TensorFlow creates its pools) and returns the parsed args."""
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("--threads", choices=["default", "inline"], default=default_threads)
    p.add_argument("--repeats", type=int, default=default_repeats)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    set_threads(args.threads)
    return args


def set_threads(mode):
    from tf_recopt.benchmark import configure_threads
    configure_threads(mode)
