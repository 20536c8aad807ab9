"""Orchestration: prepare each model's peers once, measure each threading
mode in its own process, then the JSON, the terminal table and the plots."""
import json
import os
import subprocess
import sys
import tempfile

from absl import logging

from tf_recopt.peers import BASELINE, PEERS, REDUCED_PRECISION_TOLERANCE, prepare

OURS = ("recopt", "recopt_stock", "recopt_session", "recopt_bf16_session", "recopt_int8_session")


def run(models, out_dir, workdir, **settings):
    """models: label -> SavedModel dir; settings as measure_models(). Returns
    the results dict, also written to out_dir/peers.json, PNGs beside it."""
    results = measure_models(models, workdir, **settings)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "peers.json"), "w") as f:
        json.dump(results, f, indent=1)
    from tf_recopt.peers import plots
    results["plots"] = plots.write_all(results, out_dir)
    return results


def measure_models(models, workdir, batch_sizes=(1, 64, 512), threads=("1", "all"), warmup=10, repeats=50,
                   sla_ms=None, max_batch=4096, peers=PEERS, signature="serving_default", seed=0):
    """Prepares each model's peers once (in workdir), then measures each
    threading mode in its own process; returns the results, writes nothing else."""
    from tf_recopt.benchmark import machine
    results = {"machine": machine(), "settings": dict(batch_sizes=list(batch_sizes), threads=list(threads),
                                                     warmup=warmup, repeats=repeats, sla_ms=sla_ms,
                                                     max_batch=max_batch, peers=list(peers)), "models": {}}
    for label, src in models.items():
        logging.info("bench --peers: %s (%s)", label, src)
        artifacts = prepare.prepare(src, os.path.join(workdir, label), label, peers)
        entry = {"src": src, "runs": {}}
        for mode in threads:
            spec = dict(model=label, src=src, signature=signature, threads=mode, batch_sizes=list(batch_sizes),
                        warmup=warmup, repeats=repeats, sla_ms=sla_ms, max_batch=max_batch, seed=seed,
                        artifacts=artifacts)
            entry["runs"][mode] = measure_in_subprocess(spec)
        results["models"][label] = entry
    return results


def measure_in_subprocess(spec):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        # faulthandler: a crash prints the Python stack, which names the peer at fault.
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "tf_recopt.peers.measure", f.name],
                              capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        culprits = crashed_peers(proc.stderr, spec["artifacts"]) if proc.returncode < 0 else []
        if culprits:
            # One peer's native crash (OpenVINO 2026.4's compile_model on some
            # static-shape f32 models) must not cost the others their run.
            why = {"error": f"crashed the measurement process (signal {-proc.returncode}); the other peers "
                            "were measured without it"}
            return measure_in_subprocess(dict(spec, artifacts={
                peer: why if peer in culprits else artifact for peer, artifact in spec["artifacts"].items()}))
        # A peer that crashes the process (not just raises) takes this mode's run with it: say so.
        tail = [l for l in proc.stderr.splitlines() if l.strip()][-3:]
        return {"error": f"measurement process exited {proc.returncode}: " + " | ".join(tail)[-600:]}
    return json.loads(proc.stdout)


# Packages whose native code a peer runs in; the peers using one are named after it.
_NATIVE = ("openvino", "onnxruntime")


def crashed_peers(stderr, artifacts):
    """The peers (still measurable) whose package the crashed thread's
    innermost Python frames were in, from faulthandler's dump; [] if none."""
    lines = stderr.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("Current thread")), None)
    if start is None:
        return []
    for line in lines[start + 1:]:
        if not line.strip().startswith("File "):
            break
        for package in _NATIVE:
            if f"/{package}/" in line:
                return [p for p, a in artifacts.items() if p.startswith(package) and "error" not in a]
    return []


def best_peer_ratio(run, batch, ours="recopt", among=None):
    """(best peer, its median / ours' median) at one batch size; candidates
    are `among` (default every fp32 peer that is not tf-recopt's) whose outputs match stock's."""
    rows = {r["peer"]: r["median_ms"] for r in run.get("timings", []) if r["batch"] == batch}
    among = [p for p in PEERS if p not in OURS and p not in REDUCED_PRECISION_TOLERANCE] if among is None else among
    others = {p: ms for p, ms in rows.items() if p in among and _parity_ok(run, p)}
    if ours not in rows or not others:
        return None, None
    best = min(others, key=others.get)
    return best, others[best] / rows[ours]


def _parity_ok(run, peer):
    return run["peers"].get(peer, {}).get("parity", {}).get("ok", False)


def format_table(results):
    lines = []
    for label, entry in results["models"].items():
        for mode, run in entry["runs"].items():
            lines.append(f"== {label}  (intra-op threads: {mode})")
            if "error" in run:
                lines.append(f"   not measured: {run['error']}")
                continue
            lines += _timing_lines(run)
            lines += [f"   {p}: {s['error']}" for p, s in run["peers"].items() if "error" in s]
            for peer, s in run.get("sla", {}).items():
                lines.append(f"   SLA {results['settings']['sla_ms']} ms p99: {peer} batch {s['batch']}, "
                             f"{s['throughput']:.0f} ex/s")
    return "\n".join(lines)


def _timing_lines(run):
    base = {r["batch"]: r["median_ms"] for r in run["timings"] if r["peer"] == BASELINE}
    lines = [f"   {'peer':<14} {'batch':>5} {'median ms':>10} {'p99 ms':>9} {'ex/s':>10} {'vs stock':>8}  parity"]
    for r in sorted(run["timings"], key=lambda r: (r["batch"], PEERS.index(r["peer"]))):
        ratio = base[r["batch"]] / r["median_ms"] if r["batch"] in base else float("nan")
        parity = "ok" if _parity_ok(run, r["peer"]) else "DIFFERS"
        lines.append(f"   {r['peer']:<14} {r['batch']:>5} {r['median_ms']:>10.3f} {r['p99_ms']:>9.3f} "
                     f"{r['throughput']:>10.0f} {ratio:>7.2f}x  {parity}")
    return lines
