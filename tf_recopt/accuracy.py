"""Accuracy in a ranking team's terms: AUC and logloss of the original and
the optimized model on labelled examples, and the gate optimize() applies
with them (options.label_key).

Why not element-wise tolerance alone: reduced precision moves every score a
little, and what a ranking team accepts is whether the ranking (AUC) and
the calibration (logloss, normalized entropy's numerator) moved, on their
own data. Outputs judged this way are the per-example probabilities: float
outputs of shape [batch] or [batch, 1] whose original values lie in [0, 1].
"""
import dataclasses
from typing import Dict, List, Optional

import numpy as np

from tf_recopt import example_feeds

# Keras' epsilon: logloss of a probability clipped to [eps, 1 - eps].
_EPS = 1e-7
# Examples per call when running the models over the labelled set.
_CHUNK = 1024


@dataclasses.dataclass
class MetricParity:
    signature: str
    output: str
    label: str
    examples: int
    auc: float
    auc_optimized: float
    logloss: float
    logloss_optimized: float
    ok: bool
    detail: str = ""


def auc(labels, scores):
    """ROC AUC by the Mann-Whitney statistic; tied scores share their
    average rank (each tied positive/negative pair counts one half)."""
    labels = np.asarray(labels, np.float64).ravel()
    scores = np.asarray(scores, np.float64).ravel()
    positives = labels > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes among the labels")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), np.float64)
    # Average rank (1-based) of each run of equal scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels, probabilities):
    y = np.asarray(labels, np.float64).ravel()
    p = np.clip(np.asarray(probabilities, np.float64).ravel(), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def labelled_examples(options):
    """(serialized records, labels per label key) for options.label_key;
    ValueError naming the records and the example at fault."""
    given = options.sample_inputs
    if not isinstance(given, (str, list, tuple)) and not hasattr(given, "__fspath__"):
        raise ValueError(f"label_key={options.label_key!r} needs sample_inputs as tf.Example TFRecord file(s) "
                         f"holding that feature (in TFX, the examples channel)")
    files = example_feeds.tfrecord_files(given)
    records = example_feeds.read_records(files, options.metric_examples)
    keys = sorted(set(_label_keys(options.label_key).values()))
    labels = {k: [] for k in keys}
    for i, record in enumerate(records):
        feature = example_feeds.parse_example("labelled examples", i, record).features.feature
        for key in keys:
            if key not in feature:
                raise ValueError(f"label_key {key!r}: example {i} of {files[:3]} has no feature {key!r} "
                                 f"(it has {sorted(feature)[:20]})")
            values = example_feeds.feature_values(feature[key])
            if len(values) != 1:
                raise ValueError(f"label_key {key!r}: example {i} of {files[:3]} holds {len(values)} values; "
                                 f"a label is one number per example")
            labels[key].append(float(values[0]))
    arrays = {k: np.asarray(v, np.float64) for k, v in labels.items()}
    for key, y in arrays.items():
        if ((y < 0) | (y > 1)).any():
            raise ValueError(f"label_key {key!r}: labels must lie in [0, 1] (binary clicks or soft labels); "
                             f"found {y[(y < 0) | (y > 1)][:3].tolist()}")
    return records, arrays


def _label_keys(label_key):
    """label_key as {output or "*": feature}: a string labels every scored output."""
    return dict(label_key) if isinstance(label_key, dict) else {"*": label_key}


def scored_outputs(signature, outputs: Dict[str, np.ndarray], label_key) -> Dict[str, str]:
    """Output key -> label feature for the outputs judged by AUC/logloss."""
    keys = _label_keys(label_key)
    found = {}
    for name, value in outputs.items():
        value = np.asarray(value)
        per_example = value.dtype.kind == "f" and (value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1))
        probability = per_example and value.size > 0 and np.nanmin(value) >= 0 and np.nanmax(value) <= 1
        label = keys.get(name, keys.get("*"))
        if label is not None and probability:
            found[name] = label
        elif name in keys:
            raise ValueError(f"label_key names output '{name}' of signature '{signature}', which is not a "
                             f"per-example probability (float [batch] or [batch, 1] in [0, 1])")
    return found


def compare(signature, scored, labels, expected, actual, max_auc_drop, max_logloss_increase) -> List[MetricParity]:
    """One MetricParity per scored output: fails when AUC drops by more than
    max_auc_drop or logloss rises by more than max_logloss_increase
    (relative to the original's)."""
    results = []
    for output, label in scored.items():
        y = labels[label]
        exp, act = np.asarray(expected[output]).ravel(), np.asarray(actual[output]).ravel()
        try:
            a0, a1 = auc(y, exp), auc(y, act)
        except ValueError as exc:
            raise ValueError(f"label_key {label!r} over {len(y)} examples: {exc}; give examples of both "
                             f"classes") from exc
        l0, l1 = logloss(y, exp), logloss(y, act)
        problems = []
        if a0 - a1 > max_auc_drop:
            problems.append(f"AUC {a0:.5f} -> {a1:.5f} (drop {a0 - a1:.5f} > max_auc_drop {max_auc_drop})")
        if not np.isfinite(a1) or not np.isfinite(l1) or l1 - l0 > max_logloss_increase * l0:
            problems.append(f"logloss {l0:.5f} -> {l1:.5f} (+{(l1 - l0) / l0:.3%} > max_logloss_increase "
                            f"{max_logloss_increase:.3%})")
        results.append(MetricParity(signature, output, label, len(y), a0, a1, l0, l1, not problems,
                                    "; ".join(problems)))
    return results


def run_chunked(fn, feeds_for, count):
    """fn's outputs over `count` examples, in chunks, concatenated."""
    parts = []
    for start in range(0, count, _CHUNK):
        parts.append({k: v.numpy() for k, v in fn(**feeds_for(start, min(count, start + _CHUNK))).items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def describe(results: Optional[List[MetricParity]]):
    return [f"{m.signature}/{m.output} vs '{m.label}' over {m.examples} examples: AUC {m.auc:.5f} -> "
            f"{m.auc_optimized:.5f}, logloss {m.logloss:.5f} -> {m.logloss_optimized:.5f}"
            f"{'' if m.ok else ' FAIL ' + m.detail}" for m in results or []]
