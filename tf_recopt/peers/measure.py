"""Parity, timing and the SLA search for one model in one threading mode.

    python -m tf_recopt.peers.measure SPEC.json   (prints the result as JSON)

Runs in its own process: TensorFlow's thread pools are fixed at start-up.
Peers are timed round-robin inside each repetition so the host's noise
lands on all of them alike.
"""
import json
import sys

import numpy as np

from tf_recopt import timing, verify
from tf_recopt.peers import BASELINE, REDUCED_PRECISION_TOLERANCE, describe_error

PARITY_BATCH = 8
PARITY_RTOL, PARITY_ATOL = 1e-3, 1e-4


def measure(spec):
    """spec: model, src, signature, threads ("1"|"all"), batch_sizes, warmup,
    repeats, sla_ms (or None), max_batch, seed, artifacts (peer -> path|error)."""
    from tf_recopt.benchmark import configure_threads
    configure_threads("inline" if spec["threads"] == "1" else "default")
    from tf_recopt.benchmark import feed_maker
    result = {"model": spec["model"], "threads": spec["threads"], "peers": {}, "timings": [], "sla": {}}
    runners = _runners(spec, result["peers"])
    make_feeds = feed_maker(spec["src"], spec["signature"], spec["seed"])

    def feeds(batch):
        return {k: v.numpy() for k, v in make_feeds(batch).items()}

    if not _parity(runners, result["peers"], feeds(PARITY_BATCH)):
        return result
    for batch in spec["batch_sizes"]:
        result["timings"] += _time_batch(spec, runners, result["peers"], batch, feeds(batch))
    if spec.get("sla_ms"):
        result["sla"] = _sla_search(spec, runners, result["peers"], feeds)
    return result


def _runners(spec, status):
    from tf_recopt.peers.runners import make_runner
    runners = {}
    for peer, artifact in spec["artifacts"].items():
        if "error" in artifact:
            status[peer] = {"error": artifact["error"]}
            continue
        try:
            runners[peer] = make_runner(peer, artifact["path"], spec["signature"], spec["threads"])
            status[peer] = {"prepare_seconds": artifact.get("seconds")}
        except Exception as e:  # noqa: BLE001 - reported per peer
            status[peer] = {"error": describe_error(e)}
    return runners


def _call_all(runners, status, feeds):
    """peer -> bound call; a peer that cannot run these feeds is marked failed and dropped."""
    calls = {}
    for peer in list(runners):
        try:
            call = runners[peer].bind(feeds)
            call()   # compiles (XLA) or fails here, not inside the timed loop
            calls[peer] = call
        except Exception as e:  # noqa: BLE001
            status[peer]["error"] = describe_error(e)
            del runners[peer]
    return calls


def _parity(runners, status, feeds):
    """Every peer's outputs against stock's; False when stock itself cannot run."""
    calls = _call_all(runners, status, feeds)
    if BASELINE not in calls:
        return False
    want = calls[BASELINE]()
    for peer, call in calls.items():
        status[peer]["parity"] = compare(want, call(), *REDUCED_PRECISION_TOLERANCE.get(peer, (PARITY_RTOL, PARITY_ATOL)))
    return True


def compare(want, got, rtol=None, atol=None):
    """Float outputs by optimize()'s own rule (verify.compare: allclose,
    NaN where the stock output has NaN); ids and strings as the fraction
    that match, since other runtimes may order equal scores differently."""
    rtol = PARITY_RTOL if rtol is None else rtol
    atol = PARITY_ATOL if atol is None else atol
    worst, match, missing, ok = 0.0, 1.0, sorted(set(want) - set(got)), True
    for key in sorted(set(want) & set(got)):
        a, b = _comparable(want[key]), _comparable(got[key])
        if a.shape != b.shape:
            return {"ok": False, "detail": f"output '{key}' shape {b.shape} != {a.shape}"}
        if a.dtype.kind == "f":
            parity = verify.compare("peer", {key: a}, {key: b.astype(a.dtype)}, rtol, atol)[0]
            worst, ok = max(worst, parity.max_abs), ok and parity.ok
        else:
            match = min(match, float(np.mean(a == b)) if a.size else 1.0)
    ok = ok and not missing and match >= 0.99
    return {"ok": ok, "max_abs": worst, "id_match": match, **({"missing": missing} if missing else {})}


def _comparable(value):
    """ONNX Runtime returns strings as str, TensorFlow as bytes."""
    a = np.asarray(value)
    if a.dtype.kind in "OU":
        a = np.array([v.encode() if isinstance(v, str) else v for v in a.reshape(-1)], dtype=object).reshape(a.shape)
    return a


def _time_batch(spec, runners, status, batch, feeds, repeats=None):
    samples = timing.interleaved(_call_all(runners, status, feeds), spec["warmup"], repeats or spec["repeats"])
    rows = []
    for peer, s in samples.items():
        median, p99 = timing.summary_ms(s)
        rows.append({"peer": peer, "batch": batch, "median_ms": median, "p99_ms": p99,
                     "throughput": batch / median * 1e3, "calls": len(s)})
    return rows


def _sla_search(spec, runners, status, feeds):
    """Per peer: the largest power-of-two batch whose p99 stays within sla_ms."""
    best, alive, batch = {}, dict(runners), 1
    repeats = max(20, spec["repeats"] // 4)
    while alive and batch <= spec["max_batch"]:
        for row in _time_batch(spec, alive, status, batch, feeds(batch), repeats):
            if row["p99_ms"] <= spec["sla_ms"]:
                best[row["peer"]] = {k: row[k] for k in ("batch", "median_ms", "p99_ms", "throughput")}
            else:
                alive.pop(row["peer"], None)
        batch *= 2
    return {peer: best.get(peer, {"batch": 0, "throughput": 0.0, "detail": "p99 over the SLA at batch 1"})
            for peer in runners}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    json.dump(measure(spec), sys.stdout)


if __name__ == "__main__":
    main()
