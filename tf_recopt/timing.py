"""The one timing loop of the project: tf-recopt bench (tf_recopt.benchmark),
the peers harness (tf_recopt.peers.measure) and bench/ all time through it.

Calls are interleaved round-robin, so a burst of noise on a shared machine
hits every contender alike, and each is summarised by its median and p99.
"""
import time

import numpy as np


def interleaved(calls, warmup=20, repeats=200, min_seconds=0.0):
    """calls: label -> zero-argument callable. Each is warmed up `warmup`
    times, then all are called in turn for `repeats` rounds (more while
    `min_seconds` of rounds have not passed). Returns label -> seconds per
    call, as an array in call order."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    samples = {label: [] for label in calls}
    start, rounds = time.perf_counter(), 0
    while rounds < repeats or time.perf_counter() - start < min_seconds:
        for label, call in calls.items():
            t0 = time.perf_counter()
            call()
            samples[label].append(time.perf_counter() - t0)
        rounds += 1
    return {label: np.asarray(s) for label, s in samples.items()}


def summary_ms(seconds):
    """(median ms, p99 ms) of per-call seconds."""
    ms = np.asarray(seconds) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 99))
