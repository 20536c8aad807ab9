"""`tf-recopt tune MODEL --sla-ms P99`: the serving configuration that
answers the most queries per second within a p99 latency SLA, found by
measurement (DeepRecSched's point: batch size and threads tuned to the SLA
are worth about 2x QPS over defaults).

Each configuration (TensorFlow intra-/inter-op threads x server-side
batching) runs in a real `tf-recopt serve` subprocess on loopback, under a
closed-loop gRPC load at rising client counts, interleaved with the other
configurations over rounds; its QPS at the SLA is the highest QPS of any
client count whose p99 met the SLA without errors. The winner is written
as TF Serving's batching_parameters.txt plus the matching flags of
tensorflow_model_server and `tf-recopt serve`; tune.json keeps every point,
tune.png plots p99 against QPS.

Not searched: allowed_batch_sizes (TensorFlow's CPU kernels run any batch
size, so padding to fixed sizes only adds rows; it pays on XLA/TPU), and
precision (optimize() with precision=... writes a different model: tune each
candidate model and compare)."""
import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from typing import List, Optional

import numpy as np

from tf_recopt.errors import RecoptError


class TuneError(RecoptError):
    pass


@dataclasses.dataclass(frozen=True)
class Config:
    intra: int
    inter: int
    max_batch_size: Optional[int] = None  # None: batching off
    batch_timeout_micros: int = 0
    num_batch_threads: int = 0

    @property
    def name(self):
        threads = f"intra={self.intra} inter={self.inter}"
        if self.max_batch_size is None:
            return threads + ", batching off"
        return (threads + f", batch<={self.max_batch_size} timeout={self.batch_timeout_micros}us "
                f"threads={self.num_batch_threads}")

    def batching_text(self):
        return (f"max_batch_size {{ value: {self.max_batch_size} }}\n"
                f"batch_timeout_micros {{ value: {self.batch_timeout_micros} }}\n"
                f"num_batch_threads {{ value: {self.num_batch_threads} }}\n"
                f"max_enqueued_batches {{ value: 100 }}\n")

    def flags(self, batching_file="batching_parameters.txt"):
        out = [f"--tensorflow_intra_op_parallelism={self.intra}", f"--tensorflow_inter_op_parallelism={self.inter}"]
        if self.max_batch_size is not None:
            out += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
        return out


def grid(threads: str, batching: str, cores: int) -> List[Config]:
    """threads: 'intra:inter,...'; batching: 'off,max_batch_size:timeout_us,...'."""
    out = []
    for t in threads.split(","):
        intra, inter = (int(v) for v in t.split(":"))
        for b in batching.split(","):
            if b == "off":
                out.append(Config(intra, inter))
            else:
                size, timeout = (int(v) for v in b.split(":"))
                out.append(Config(intra, inter, size, timeout, cores))
    return out


def _parser():
    p = argparse.ArgumentParser(prog="tf-recopt tune", description=__doc__.splitlines()[0])
    p.add_argument("model", help="a SavedModel directory (the version to serve)")
    p.add_argument("--sla-ms", type=float, required=True, help="p99 latency target in milliseconds")
    p.add_argument("--clients", default="1,2,4,8,16,32", help="closed-loop client counts, ascending")
    p.add_argument("--threads", default="0:0,1:-1,0:-1",
                   help="intra:inter op thread settings to try (0:0 is TensorFlow Serving's default)")
    p.add_argument("--batching", default="off,8:0,16:500,32:1000,64:2000",
                   help="'off' and max_batch_size:batch_timeout_micros pairs to try")
    p.add_argument("--request-batch", type=int, default=1, help="examples per request")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--seconds", type=float, default=2.0, help="at most this long per point and round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the configurations")
    p.add_argument("--group", type=int, default=8,
                   help="configurations whose servers run side by side (each holds the model in memory)")
    p.add_argument("--requests", type=int, default=4000, help="at most this many requests per point and round")
    p.add_argument("--out", default="recopt_tune", help="folder for the winner's files, tune.json and tune.png")
    p.add_argument("--server-flags", default="", help="more `tf-recopt serve` flags for every configuration")
    return p


def _server(config, base, args, workdir, index):
    from tf_recopt.serving.launch import Server
    batching_file = os.path.join(workdir, f"batching_{index}.txt")
    if config.max_batch_size is not None:
        with open(batching_file, "w") as f:
            f.write(config.batching_text())
    return Server("--model_name=tuned", f"--model_base_path={base}", "--file_system_poll_wait_seconds=0",
                  *config.flags(batching_file), *args.server_flags.split())


def measure(configs, base, args, request, workdir):
    """Points (one per client count) for each configuration. The servers of
    a group run side by side and the points are interleaved over rounds, so
    the host's drift lands on every configuration alike; QPS is the median
    of the rounds, p99 over the pooled latencies. A configuration stops at
    the first client count whose p99 passed twice the SLA (more clients
    would only queue)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    from tf_recopt.serving.loadgen import closed_loop
    counts = [int(c) for c in args.clients.split(",")]
    servers = []
    try:
        for i, config in enumerate(configs):
            servers.append(_server(config, base, args, workdir, i))
        stubs = []
        for config, server in zip(configs, servers):
            try:
                server.wait_version("tuned", 1, timeout=600)
            except AssertionError as exc:
                raise TuneError(f"{config.name}: the server did not load the model: {exc}") from None
            stubs.append(prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.target)))
            closed_loop(stubs[-1], request, 1, 50, 30)
        cap = [None] * len(configs)
        samples = {}
        for round_ in range(args.rounds):
            for clients in counts:
                for i, stub in enumerate(stubs):
                    if cap[i] is not None and clients > cap[i]:
                        continue
                    lat, errors, wall = closed_loop(stub, request, clients, args.requests, args.seconds)
                    entry = samples.setdefault((i, clients), {"lat": [], "qps": [], "errors": []})
                    entry["lat"] += lat
                    entry["qps"].append(len(lat) / wall)
                    entry["errors"] += errors
                    if round_ == 0 and (not lat or np.percentile(lat, 99) * 1e3 > 2 * args.sla_ms):
                        cap[i] = clients
    finally:
        for server in servers:
            server.stop()
    out = []
    for i in range(len(configs)):
        points = []
        for clients in counts:
            e = samples.get((i, clients))
            if e is None:
                continue
            point = {"clients": clients, "requests": len(e["lat"]), "errors": len(e["errors"]),
                     "qps": float(np.median(e["qps"])),
                     "p50_ms": float(np.median(e["lat"])) * 1e3 if e["lat"] else None,
                     "p99_ms": float(np.percentile(e["lat"], 99)) * 1e3 if e["lat"] else None}
            if e["errors"]:
                point["first_error"] = e["errors"][0]
            points.append(point)
        out.append(points)
    return out


def qps_at_sla(points, sla_ms):
    ok = [p["qps"] for p in points if p["errors"] == 0 and p["p99_ms"] is not None and p["p99_ms"] <= sla_ms]
    return max(ok, default=0.0)


def _plot(results, sla_ms, path):
    from tf_recopt.peers import plots
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for r in results:
        pts = [p for p in r["points"] if p["p99_ms"] is not None]
        ax.plot([p["qps"] for p in pts], [p["p99_ms"] for p in pts], marker="o", label=r["config"])
    ax.axhline(sla_ms, color="k", linestyle="--", label=f"SLA p99 {sla_ms:g} ms")
    ax.set_xlabel("QPS")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("tf-recopt tune: p99 against QPS per configuration")
    plots.save(fig, plt, path, dpi=110)


def _write_winner(best, out, sla_ms):
    batching = os.path.join(out, "batching_parameters.txt")
    if best.max_batch_size is not None:
        with open(batching, "w") as f:
            f.write(best.batching_text())
    elif os.path.exists(batching):
        os.remove(batching)  # a stale winner from an earlier run must not be picked up
    flags = " ".join(best.flags(batching))
    with open(os.path.join(out, "flags.txt"), "w") as f:
        f.write(f"# best configuration for p99 <= {sla_ms:g} ms: {best.name}\n"
                f"tensorflow_model_server --model_name=MODEL --model_base_path=BASE {flags}\n"
                f"tf-recopt serve --model_name=MODEL --model_base_path=BASE {flags}\n")


def main(argv=None):
    args = _parser().parse_args(argv)
    if not os.path.isfile(os.path.join(args.model, "saved_model.pb")):
        raise TuneError(f"{args.model}: no saved_model.pb (give the SavedModel directory of one version)")
    if args.sla_ms <= 0:
        raise TuneError(f"--sla-ms must be positive, got {args.sla_ms}")
    configs = grid(args.threads, args.batching, os.cpu_count() or 1)
    from tf_recopt.serving.loadgen import predict_request
    request = predict_request(args.model, "tuned", args.request_batch, args.signature)
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="recopt_tune_")
    results = []
    try:
        base = os.path.join(workdir, "model")
        os.makedirs(base)
        os.symlink(os.path.abspath(args.model), os.path.join(base, "1"))
        for g in range(0, len(configs), max(1, args.group)):
            group = configs[g:g + max(1, args.group)]
            started = time.monotonic()
            for config, points in zip(group, measure(group, base, args, request, workdir)):
                results.append({"config": config.name, "params": dataclasses.asdict(config), "points": points,
                                "qps_at_sla": qps_at_sla(points, args.sla_ms)})
                print(f"{config.name}: {results[-1]['qps_at_sla']:.0f} QPS at p99 <= {args.sla_ms:g} ms", flush=True)
            print(f"({len(group)} configurations in {time.monotonic() - started:.0f} s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    default = results[0]
    best = max(results, key=lambda r: r["qps_at_sla"])
    summary = {"model": os.path.abspath(args.model), "sla_ms": args.sla_ms, "request_batch": args.request_batch,
               "results": results, "best": best["config"], "default": default["config"]}
    with open(os.path.join(args.out, "tune.json"), "w") as f:
        json.dump(summary, f, indent=1)
    _plot(results, args.sla_ms, os.path.join(args.out, "tune.png"))
    if best["qps_at_sla"] == 0:
        lowest = min((p["p99_ms"], r["config"]) for r in results for p in r["points"] if p["p99_ms"] is not None)
        raise TuneError(f"no configuration met p99 <= {args.sla_ms:g} ms at any client count; the lowest p99 was "
                        f"{lowest[0]:.2f} ms ({lowest[1]}); see {args.out}/tune.json")
    _write_winner(Config(**best["params"]), args.out, args.sla_ms)
    gain = best["qps_at_sla"] / default["qps_at_sla"] if default["qps_at_sla"] else float("inf")
    print(f"best: {best['config']}: {best['qps_at_sla']:.0f} QPS at p99 <= {args.sla_ms:g} ms, "
          f"{gain:.2f}x the first configuration ({default['config']}); wrote {args.out}/flags.txt")
    return 0
