"""Serving capacity: `tf-recopt serve` on loopback with the zoo's DLRM as
exported (stock) and optimized (recopt), on the C++ request path (native)
and the pure-Python one (python), each with and without server-side
batching; a closed-loop gRPC load generator (bounded in requests and in
time) reports QPS and p50/p99 latency at several concurrencies. The
reference is the same optimized model called in process (Session callable,
no server) at batch 1 and at the batching limit.

    python -m bench.serving [--size full] [--concurrency 1,8,32,64] [--rounds 3] [--requests 1500] [--seconds 5]

Client and server share the machine's cores, as a sidecar load test does;
numbers are for the whole loop, not the model alone.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from bench import common
from tf_recopt.serving.loadgen import closed_loop as load, predict_request

BATCHING = ("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\n"
            "num_batch_threads { value: %d }\nmax_enqueued_batches { value: 1000 }\n")


def _args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="dlrm")
    p.add_argument("--size", default="full", choices=["small", "full"])
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--variants", default="stock:native,recopt:native,recopt:python",
                   help="model:path pairs; path native = --native_request_path=true")
    p.add_argument("--server-flags", default="", help="extra `tf-recopt serve` flags, space separated")
    p.add_argument("--no-echo", action="store_true", help="leave out the grpcio server with no model")
    p.add_argument("--request-batch", type=int, default=1, help="examples per request")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=1500, help="at most this many requests per point and round")
    p.add_argument("--seconds", type=float, default=5.0, help="at most this long per point and round")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--workdir", default="/tmp/tf_recopt_bench_serving")
    return p.parse_args(argv)


def _prepare(args):
    """Version directories for the stock and optimized model."""
    import tf_recopt
    from tf_recopt import zoo
    shutil.rmtree(args.workdir, ignore_errors=True)
    src = zoo.export(args.model, os.path.join(args.workdir, "src"), size=args.size)
    stock = os.path.join(args.workdir, "stock")
    shutil.copytree(src, os.path.join(stock, "1"))
    recopt = os.path.join(args.workdir, "recopt")
    tf_recopt.optimize(src, os.path.join(recopt, "1"))
    return src, {"stock": stock, "recopt": recopt}


def _flags(args, base, path, batching):
    flags = [f"--model_name={args.model}", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0",
             f"--grpc_max_threads={max(64, 2 * max(map(int, args.concurrency.split(','))))}",
             f"--native_request_path={'true' if path == 'native' else 'false'}", *args.server_flags.split()]
    if batching:
        params = os.path.join(args.workdir, "batching.config")
        with open(params, "w") as f:
            f.write(BATCHING % (os.cpu_count() or 1))
        flags += ["--enable_batching", f"--batching_parameters_file={params}"]
    return flags


class EchoServer:
    """grpcio answering every Predict with an empty PredictResponse and no
    model: what the transport alone costs the server (and the client)."""

    def __init__(self, threads):
        from tf_recopt.serving.launch import free_port
        port = free_port()
        self.target = f"127.0.0.1:{port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.serving", "--echo-server", str(port), str(threads)])

    def wait(self):
        import grpc
        grpc.channel_ready_future(grpc.insecure_channel(self.target)).result(timeout=60)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def _echo_main(port, threads):
    from concurrent import futures

    import grpc
    server = grpc.server(futures.ThreadPoolExecutor(threads))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": handler}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def _cpu_seconds(pid):
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(servers, request, args):
    """Rounds of (concurrency x server) points, interleaved so the host's
    noise lands on every server alike; latencies pooled over rounds, QPS the
    median of the rounds'. CPU per request: the server process's and this
    (client) process's CPU time over the point, divided by its requests."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    stubs = {key: prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(s.target))
             for key, s in servers.items()}
    for stub in stubs.values():
        load(stub, request, 1, args.warmup, 60)
    samples = {}
    for round_ in range(args.rounds):
        for concurrency in map(int, args.concurrency.split(",")):
            for key, stub in stubs.items():
                pid = servers[key].proc.pid
                server_cpu, client_cpu = _cpu_seconds(pid), time.process_time()
                lat, errors, wall = load(stub, request, concurrency, args.requests, args.seconds)
                entry = samples.setdefault(key + (concurrency,), {"lat": [], "qps": [], "errors": [],
                                                                  "server_cpu": 0.0, "client_cpu": 0.0})
                entry["server_cpu"] += _cpu_seconds(pid) - server_cpu
                entry["client_cpu"] += time.process_time() - client_cpu
                entry["lat"] += lat
                entry["qps"].append(len(lat) / wall)
                entry["errors"] += errors
                print(f"round {round_} {key} c={concurrency}: {len(lat) / wall:.0f} QPS", flush=True)
    rows = []
    for (variant, path, batching, concurrency), e in samples.items():
        row = {"variant": variant, "path": path, "batching": batching, "concurrency": concurrency,
               "requests": len(e["lat"]),
               "errors": len(e["errors"]), "qps": float(np.median(e["qps"])),
               "p50_ms": float(np.median(e["lat"])) * 1e3 if e["lat"] else None,
               "p99_ms": float(np.percentile(e["lat"], 99)) * 1e3 if e["lat"] else None,
               "server_cpu_us": e["server_cpu"] / len(e["lat"]) * 1e6 if e["lat"] else None,
               "client_cpu_us": e["client_cpu"] / len(e["lat"]) * 1e6 if e["lat"] else None}
        if e["errors"]:
            row["first_error"] = e["errors"][0]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["batching"], r["concurrency"], r["variant"] != "stock", r["path"]))


def in_process(base, request, copies, seconds=3.0):
    """The optimized model without a server: its Session callable (C++
    bundle, as the native server holds it) called back to back in one
    thread on `copies` requests' rows at once; returns (examples per second,
    p50 ms)."""
    from tf_recopt.serving import tensors
    from tf_recopt.serving.servable import Servable
    servable = Servable("m", 1, os.path.join(base, "1"), use_native=True)
    sig = servable.signature(request.model_spec.signature_name)
    feeds = {k: np.concatenate([tensors.to_array(v, k)] * copies) for k, v in request.inputs.items()}
    batch = next(iter(feeds.values())).shape[0]
    for _ in range(20):
        sig.run(feeds)
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        sig.run(feeds)
        times.append(time.perf_counter() - t0)
    servable.close()
    return batch / float(np.median(times)), float(np.median(times)) * 1e3


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--echo-server"]:
        return _echo_main(int(argv[1]), int(argv[2]))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _args(argv)
    src, bases = _prepare(args)
    request = predict_request(src, args.model, args.request_batch)
    from tf_recopt.serving.launch import Server
    servers = {}
    try:
        for pair in args.variants.split(","):
            variant, path = pair.split(":")
            for batching in (False, True):
                servers[(variant, path, batching)] = Server(*_flags(args, bases[variant], path, batching))
        if not args.no_echo:
            servers[("echo", "grpcio", False)] = EchoServer(max(64, 2 * max(map(int, args.concurrency.split(",")))))
        for server in servers.values():
            if isinstance(server, EchoServer):
                server.wait()
            else:
                server.wait_version(args.model, 1, timeout=600)
        rows = _measure(servers, request, args)
    finally:
        for server in servers.values():
            server.stop()
    # The reference runs alone, after the servers are gone.
    max_batch = int(BATCHING.split("max_batch_size { value: ")[1].split()[0])
    reference = {}
    for copies in (1, max_batch):
        eps, p50 = in_process(bases["recopt"], request, copies)
        reference[copies] = {"batch": copies * args.request_batch, "examples_per_s": eps, "p50_ms": p50}
    stock = {(r["path"], r["batching"], r["concurrency"]): r for r in rows if r["variant"] == "stock"}
    unbatched = {(r["variant"], r["path"], r["concurrency"]): r for r in rows if not r["batching"]}
    python = {(r["variant"], r["batching"], r["concurrency"]): r for r in rows if r["path"] == "python"}
    for r in rows:
        same = stock.get((r["path"], r["batching"], r["concurrency"]))
        r["qps_vs_stock"] = r["qps"] / same["qps"] if same else None
        r["qps_vs_unbatched"] = r["qps"] / unbatched[(r["variant"], r["path"], r["concurrency"])]["qps"]
        py = python.get((r["variant"], r["batching"], r["concurrency"]))
        r["qps_vs_python"] = r["qps"] / py["qps"] if py else None
        if r["variant"] == "recopt":
            ref = reference[max_batch if r["batching"] else 1]
            r["qps_vs_in_process"] = r["qps"] * args.request_batch / ref["examples_per_s"]
    path = common.write_result("serving", {
        "command": " ".join(["python -m bench.serving", *argv]),
        "machine": common.machine(), "setup": f"zoo {args.model} ({args.size}), {args.request_batch} example(s) "
        f"per request, {args.rounds} interleaved rounds of at most {args.requests} requests or {args.seconds:g} s "
        "per point",
        "batching": BATCHING % (os.cpu_count() or 1), "server_flags": args.server_flags,
        "in_process": list(reference.values()), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
