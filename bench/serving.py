"""Serving capacity: `tf-recopt serve` on loopback with the zoo's DLRM as
exported (stock) and optimized (recopt), each with and without server-side
batching; a closed-loop gRPC load generator (bounded in requests and in
time) reports QPS and p50/p99 latency at several concurrencies.

    python -m bench.serving [--size full] [--concurrency 1,8,32] [--rounds 3] [--requests 1500] [--seconds 5]

Client and server share the machine's cores, as a sidecar load test does;
numbers are for the whole loop, not the model alone.
"""
import argparse
import os
import shutil
import sys
import threading
import time

import numpy as np

from bench import common

BATCHING = ("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 1000 }\n"
            "num_batch_threads { value: %d }\nmax_enqueued_batches { value: 1000 }\n")


def _args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="dlrm")
    p.add_argument("--size", default="full", choices=["small", "full"])
    p.add_argument("--concurrency", default="1,8,32")
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


def _request(src, model, batch):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    from tf_recopt.benchmark import sample_feeds
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for k, v in sample_feeds(src, "serving_default", batch, seed=1).items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(np.asarray(v)))
    return request


def load(stub, request, concurrency, max_requests, seconds):
    """Closed loop: `concurrency` clients each send the next request when
    the last one returns. Returns (latencies in s, errors, wall seconds)."""
    lock = threading.Lock()
    sent = [0]
    latencies, errors = [], []
    deadline = time.monotonic() + seconds

    def client():
        while True:
            with lock:
                if sent[0] >= max_requests or time.monotonic() > deadline:
                    return
                sent[0] += 1
            t0 = time.perf_counter()
            try:
                stub.Predict(request, timeout=30)
            except Exception as exc:  # counted and reported, never fatal for the run
                with lock:
                    errors.append(str(exc)[:200])
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.monotonic() - started


def _flags(args, base, batching):
    flags = [f"--model_name={args.model}", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0",
             f"--grpc_max_threads={max(64, 2 * max(map(int, args.concurrency.split(','))))}"]
    if batching:
        params = os.path.join(args.workdir, "batching.config")
        with open(params, "w") as f:
            f.write(BATCHING % (os.cpu_count() or 1))
        flags += ["--enable_batching", f"--batching_parameters_file={params}"]
    return flags


def _measure(servers, request, args):
    """Rounds of (concurrency x server) points, interleaved so the host's
    noise lands on every server alike; latencies pooled over rounds, QPS the
    median of the rounds'."""
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
                lat, errors, wall = load(stub, request, concurrency, args.requests, args.seconds)
                entry = samples.setdefault(key + (concurrency,), {"lat": [], "qps": [], "errors": []})
                entry["lat"] += lat
                entry["qps"].append(len(lat) / wall)
                entry["errors"] += errors
                print(f"round {round_} {key} c={concurrency}: {len(lat) / wall:.0f} QPS", flush=True)
    rows = []
    for (variant, batching, concurrency), e in samples.items():
        row = {"variant": variant, "batching": batching, "concurrency": concurrency, "requests": len(e["lat"]),
               "errors": len(e["errors"]), "qps": float(np.median(e["qps"])),
               "p50_ms": float(np.median(e["lat"])) * 1e3 if e["lat"] else None,
               "p99_ms": float(np.percentile(e["lat"], 99)) * 1e3 if e["lat"] else None}
        if e["errors"]:
            row["first_error"] = e["errors"][0]
        rows.append(row)
    return sorted(rows, key=lambda r: (r["batching"], r["concurrency"], r["variant"] != "stock"))


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _args(argv)
    src, bases = _prepare(args)
    request = _request(src, args.model, args.request_batch)
    from tf_recopt.serving.launch import Server
    servers = {}
    try:
        for variant, base in bases.items():
            for batching in (False, True):
                servers[(variant, batching)] = Server(*_flags(args, base, batching))
        for server in servers.values():
            server.wait_version(args.model, 1, timeout=600)
        rows = _measure(servers, request, args)
    finally:
        for server in servers.values():
            server.stop()
    stock = {(r["batching"], r["concurrency"]): r for r in rows if r["variant"] == "stock"}
    unbatched = {(r["variant"], r["concurrency"]): r for r in rows if not r["batching"]}
    for r in rows:
        r["qps_vs_stock"] = r["qps"] / stock[(r["batching"], r["concurrency"])]["qps"]
        r["qps_vs_unbatched"] = r["qps"] / unbatched[(r["variant"], r["concurrency"])]["qps"]
    path = common.write_result("serving", {
        "command": " ".join(["python -m bench.serving", *(argv if argv is not None else sys.argv[1:])]),
        "machine": common.machine(), "setup": f"zoo {args.model} ({args.size}), {args.request_batch} example(s) "
        f"per request, {args.rounds} interleaved rounds of at most {args.requests} requests or {args.seconds:g} s "
        "per point",
        "batching": BATCHING % (os.cpu_count() or 1), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
