"""precision="auto": each plain precision optimized and gated as if the
user had asked for it, the ones that pass timed side by side on this
machine, and the fastest written.

A lower precision has to earn its place: it is chosen only when it is at
least MIN_GAIN faster than the next higher one that passed (geometric mean
over AUTO_BATCHES), so timing noise never trades accuracy for nothing.
The gate is the one each precision has alone: its default tolerance (or the
user's rtol/atol), AUC/logloss with label_key, recall_floor for approximate
retrieval; under "int8" a component whose int8 form breaks parity is rerun
in fp32 as usual (report.precision_fallbacks).
"""
import dataclasses
import math
import os
import shutil
import tempfile
from typing import Dict, List, Optional

from tf_recopt import benchmark
from tf_recopt.accuracy import describe
from tf_recopt.errors import ParityError

AUTO_CANDIDATES = ("fp32", "bf16", "int8")   # highest precision first
AUTO_BATCHES = (1, 64)
MIN_GAIN = 1.03


@dataclasses.dataclass
class AutoCandidate:
    precision: str
    ok: bool
    detail: str = ""                  # why it was refused, or its fallbacks
    median_ms: Dict[int, float] = dataclasses.field(default_factory=dict)   # batch -> median
    vs_fp32: Optional[float] = None   # geometric mean of fp32 median / its median
    chosen: bool = False
    # What its gate measured: the largest element-wise difference from the
    # original over every float output, and AUC/logloss with label_key.
    max_abs: Optional[float] = None
    metrics: List[str] = dataclasses.field(default_factory=list)


def optimize_auto(optimize, src, out, kwargs, report_path, repeats=50):
    """optimize(src, <scratch>, precision=p, **kwargs) for each candidate,
    into a scratch dir beside `out` (checked by the caller), then the
    fastest that passed moved to `out`; returns its report with
    report.auto filled in. Nothing is left behind on failure."""
    if not kwargs.get("validate", True):
        raise ValueError("precision='auto' needs validate=True: each precision is kept only inside its accuracy gate")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".recopt_auto_", dir=os.path.dirname(out))
    try:
        candidates, reports, refusal = [], {}, None
        for precision in AUTO_CANDIDATES:
            try:
                report = optimize(src, os.path.join(scratch, precision), precision=precision, **kwargs)
            except ParityError as exc:
                refusal = refusal or exc
                candidates.append(AutoCandidate(precision, False, exc.args[0][:300]))
                continue
            reports[precision] = report
            sigs = report.signatures.values()
            candidates.append(AutoCandidate(
                precision, True, "; ".join(report.precision_fallbacks),
                max_abs=max((p.max_abs for s in sigs for p in s.parity if p.recall is None), default=None),
                metrics=[line for s in sigs for line in describe(s.metrics)]))
        if not reports:
            raise refusal
        names = list(next(iter(reports.values())).signatures)
        signature = "serving_default" if "serving_default" in names else names[0]
        _time(candidates, {p: os.path.join(scratch, p) for p in reports}, signature, repeats)
        chosen = _choose(candidates)
        chosen.chosen = True
        report = reports[chosen.precision]
        report.auto = [dataclasses.asdict(c) for c in candidates]
        report.output_dir = out
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(os.path.join(scratch, chosen.precision), out)
        with open(os.path.join(out, report_path), "w") as f:
            f.write(report.to_json())
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _time(candidates, paths, signature, repeats):
    """Interleaved eager calls of `signature` of every passing candidate."""
    timings = benchmark.bench(paths, AUTO_BATCHES, signature, warmup=5, repeats=repeats)
    by = {c.precision: c for c in candidates}
    for t in timings:
        by[t.model].median_ms[t.batch_size] = t.median_ms
    base = by["fp32"].median_ms if "fp32" in paths else None
    for c in candidates:
        if c.ok and base:
            c.vs_fp32 = _geomean([base[b] / c.median_ms[b] for b in AUTO_BATCHES])


def _choose(candidates):
    """The highest precision that passed, replaced by each lower one that is
    at least MIN_GAIN faster than the current choice."""
    passed = [c for c in candidates if c.ok]
    best = passed[0]
    for c in passed[1:]:
        if _geomean([best.median_ms[b] / c.median_ms[b] for b in AUTO_BATCHES]) >= MIN_GAIN:
            best = c
    return best


def _geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))
