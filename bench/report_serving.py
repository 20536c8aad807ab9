"""The Serving sections of BENCHMARKS.md (bench.serving, bench.serving_tune),
rendered by bench/report.py."""


def serving_section(lines):
    from bench.report import _headed, _load
    data = _load("serving")
    if not data:
        return
    ref = {r["batch"]: r for r in data.get("in_process", [])}
    ref_text = "; ".join(f"batch {b}: {r['examples_per_s']:.0f} examples/s, p50 {r['p50_ms']:.3f} ms"
                         for b, r in sorted(ref.items()))
    _headed(lines, data, f"### Serving: `tf-recopt serve` on loopback, {data['setup']}",
            "Closed loop over gRPC (TF Serving's stubs): each of `concurrency` clients sends its next request "
            "when the last returns. Client and server share the machine's cores. `path`: `native` is the C++ "
            "request path (C++ SavedModel loader, Predict decoded/run/encoded and batched in C++), `python` the "
            "pure-Python one (`--native_request_path=false`). Batching parameters: "
            + data["batching"].strip().replace("\n", "; ")
            + (f". Extra server flags: `{data['server_flags']}`" if data.get("server_flags") else "")
            + ". `vs stock`: QPS against stock TensorFlow on the same path, batching setting and concurrency; "
            "`vs python`: against the Python path; `vs unbatched`: against the same model and path without "
            "batching; `server CPU` / `client CPU`: microseconds of CPU per request of the server process / the "
            "load-generating process over the point (/proc); `echo` is a grpcio server answering Predict with an "
            "empty response and no model, the transport's own cost; `vs in-process`: examples/s against the optimized model's Session callable called back "
            "to back in one process without a server (" + (ref_text or "not measured") + "), at batch 1 "
            f"unbatched and at max_batch_size batched. Machine: {data['machine']['cpu']}, "
            f"{data['machine'].get('cores', '?')} cores, CPU flags {', '.join(data['machine'].get('flags', []))}; "
            f"RECOPT_ISA path {data['machine']['isa']}.",
            ["| model | path | batching | concurrency | requests | errors | QPS | p50 ms | p99 ms | server CPU us | "
             "client CPU us | vs stock | vs python | vs unbatched | vs in-process |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"])

    def ratio(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}x"
    for r in data["rows"]:
        lines.append(f"| {r['variant']} | {r.get('path', 'python')} | {'on' if r['batching'] else 'off'} | "
                     f"{r['concurrency']} | {r['requests']} | {r['errors']} | {r['qps']:.0f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {_us(r.get('server_cpu_us'))} | {_us(r.get('client_cpu_us'))} | "
                     f"{ratio(r.get('qps_vs_stock'))} | {ratio(r.get('qps_vs_python'))} | "
                     f"{ratio(r['qps_vs_unbatched'])} | {ratio(r.get('qps_vs_in_process'), 3)} |")
    lines.append("")


def _us(value):
    return "-" if value is None else f"{value:.0f}"


def tune_section(lines):
    from bench.report import _headed, _load
    data = _load("serving_tune")
    if not data:
        return
    default = next(r for r in data["results"] if r["config"] == data["default"])
    _headed(lines, data, f"### Serving: `tf-recopt tune` on loopback, {data['setup']}, p99 SLA {data['sla_ms']:g} ms",
            "Each configuration in its own `tf-recopt serve` (C++ request path); the servers of a group (up to 8 "
            "configurations; groups run one after the other) side by side, a closed-loop gRPC load at each client "
            "count visiting them in interleaved rounds; `QPS at SLA`: the best median QPS at a "
            "client count whose pooled p99 met the SLA without errors; `vs default`: against the first "
            "configuration (TF Serving's defaults). Machine: "
            f"{data['machine']['cpu']}, {data['machine'].get('cores', '?')} cores, CPU flags "
            f"{', '.join(data['machine'].get('flags', []))}; RECOPT_ISA path {data['machine']['isa']}. "
            "p99 against QPS: ![tune](bench/results/serving_tune.png)",
            ["| configuration | QPS at SLA | vs default | at clients | p99 ms there | clients tried |",
             "|---|---:|---:|---:|---:|---|"])
    for r in data["results"]:
        ok = [p for p in r["points"] if p["errors"] == 0 and p["p99_ms"] is not None
              and p["p99_ms"] <= data["sla_ms"]]
        at = max(ok, key=lambda p: p["qps"]) if ok else None
        ratio = r["qps_at_sla"] / default["qps_at_sla"] if default["qps_at_sla"] else float("nan")
        best = " (best)" if r["config"] == data["best"] else ""
        where = f"{at['clients']} | {at['p99_ms']:.2f}" if at else "- | -"
        tried = ",".join(str(p["clients"]) for p in r["points"])
        lines.append(f"| {r['config']}{best} | {r['qps_at_sla']:.0f} | {ratio:.2f}x | {where} | {tried} |")
    lines.append("")
