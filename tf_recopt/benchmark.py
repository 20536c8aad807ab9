"""Latency/throughput of SavedModel signatures, measured side by side.

Models are timed round-robin within each repetition so that machine noise
(shared, 2-core CI boxes) falls on all of them alike; we report the median
and p99 of per-call latency and the throughput at the median.
"""
import dataclasses
import importlib.metadata
import os
import platform
from typing import Dict, List

import tensorflow as tf

from tf_recopt import saved_model_io, timing, verify
from tf_recopt.options import OptimizeOptions
from tf_recopt.ragged_feeds import ragged_parents


@dataclasses.dataclass
class Timing:
    model: str
    batch_size: int
    median_ms: float
    p99_ms: float
    throughput: float     # examples / s at the median latency
    calls: int


def configure_threads(mode):
    """'default': TF's pools; 'inline': inter-op -1 (run in the caller) and
    intra-op 1, the one-model-per-thread serving setting. Must run before
    TensorFlow executes its first op."""
    if mode == "inline":
        tf.config.threading.set_inter_op_parallelism_threads(-1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    elif mode != "default":
        raise ValueError(f"threads must be 'default' or 'inline', got {mode!r}")


def feed_maker(path, signature, seed):
    """batch_size -> inputs for `signature` of the SavedModel at `path`
    (valid ids included); the model is read once (about a second), not per batch size."""
    sig = saved_model_io.load(path, OptimizeOptions(freeze_max_bytes=0)).signatures[signature]
    ragged = ragged_parents(sig.graph_def, sig)
    return lambda batch_size: verify.generate_inputs(sig, path, batch_size, seed, ragged)


def sample_feeds(path, signature, batch_size, seed):
    """Inputs for `signature` of the SavedModel at `path`, valid ids included."""
    return feed_maker(path, signature, seed)(batch_size)


def bench(models: Dict[str, str], batch_sizes=(1, 64, 512), signature="serving_default",
          warmup=20, repeats=200, min_seconds=0.0, seed=0) -> List[Timing]:
    """models: label -> SavedModel path. Feeds come from the first model and
    are shared, so every model sees identical inputs."""
    first = next(iter(models.values()))
    fns = {label: tf.saved_model.load(path).signatures[signature] for label, path in models.items()}
    results = []
    make_feeds = feed_maker(first, signature, seed)
    for batch in batch_sizes:
        feeds = make_feeds(batch)
        samples = timing.interleaved({label: _call(fn, feeds) for label, fn in fns.items()},
                                     warmup, repeats, min_seconds)
        for label, s in samples.items():
            med, p99 = timing.summary_ms(s)
            results.append(Timing(label, batch, med, p99, batch / med * 1e3, len(s)))
    return results


def _call(fn, feeds):
    def call():
        for v in fn(**feeds).values():
            v.numpy()
    return call


def format_table(timings: List[Timing], baseline=None):
    """Rows per batch size; ratio = baseline median / model median."""
    baseline = baseline or timings[0].model
    base = {t.batch_size: t.median_ms for t in timings if t.model == baseline}
    lines = [f"{'model':<28} {'batch':>5} {'median ms':>10} {'p99 ms':>9} {'ex/s':>11} {'speed-up':>8}"]
    for t in timings:
        ratio = base.get(t.batch_size, float('nan')) / t.median_ms
        lines.append(f"{t.model:<28} {t.batch_size:>5} {t.median_ms:>10.3f} {t.p99_ms:>9.3f} "
                     f"{t.throughput:>11.0f} {ratio:>7.2f}x")
    return "\n".join(lines)


def machine():
    """CPU model, cores, widest ISA, Python, TensorFlow and peer versions."""
    model = "unknown CPU"
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import tensorflow as tf
    isa = os.environ.get("RECOPT_ISA") or ("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "generic")
    info = {"cpu": model, "cores": os.cpu_count(), "isa": isa, "python": platform.python_version(),
            "tensorflow": tf.__version__,
            # What decides the dense paths: oneDNN's bf16 runs on AMX, int8 scoring on VNNI.
            "flags": sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                                     "amx_int8", "amx_tile"})}
    for peer in ("onnxruntime", "tf2onnx", "openvino"):
        try:
            info[peer] = importlib.metadata.version(peer)
        except importlib.metadata.PackageNotFoundError:
            pass
    return info
