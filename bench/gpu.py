"""GPU kernel core vs PyTorch on the device machine (never run in CI).

    make gpu-core && python3 -m bench.gpu --lib build/gpu_core/librecopt_gpu_core.so --out gpu.json

Needs a CUDA GPU, nvcc and PyTorch; TensorFlow is not used (the core is
TensorFlow-free, custom_ops/gpu/gpu_core.h). In one run it measures the
device's copy bandwidth (a device-to-device copy, bytes read + written), then:
  topk        recopt TopK vs torch.topk: n 1M/10M, k 500/1000, batch 1/8
  score_topk  fused score+TopK (fp32, fp16, bf16, int8 candidates) vs
              torch.matmul + torch.topk in fp32 (cuBLAS) and fp16: n 1M/10M, d 64
  mlp         3-layer MLP, fp32 / fp16 / bf16 GEMMs vs torch fp32 and fp16
Each case: CUDA-event times over --repeats calls after warm-up, median and
p99, the ratio to the peer, and the fraction of the copy bandwidth reached
(bytes the kernel must read / time). Results go to --out as JSON and to
stdout as a table; bench/report.py renders them into BENCHMARKS.md.
"""
import argparse
import json
import platform
import sys

import numpy as np


def timed(torch, fn, repeats, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99))}


def copy_bandwidth(torch, repeats):
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t = timed(torch, lambda: dst.copy_(src), repeats)
    return 2 * src.numel() / (t["median_ms"] * 1e-3)  # bytes read + written per second


def case(name, ours, peers, bytes_read, bandwidth):
    row = {"case": name, "recopt": ours, "bytes_read": bytes_read,
           "bandwidth_fraction": bytes_read / (ours["median_ms"] * 1e-3) / bandwidth}
    for peer, t in peers.items():
        row[peer] = t
        row[f"ratio_vs_{peer}"] = t["median_ms"] / ours["median_ms"]
    return row


def bench_topk(torch, core, repeats, bandwidth, sizes):
    rows = []
    for n in sizes:
        for k in (500, 1000):
            for b in (1, 8):
                x = torch.randn((b, n), device="cuda")
                v, i = core.topk(x, k)
                tv, _ = torch.topk(x, k)
                assert torch.equal(v, tv), f"topk values differ at n={n} k={k} b={b}"
                rows.append(case(f"topk n={n} k={k} b={b}", timed(torch, lambda: core.topk(x, k), repeats),
                                 {"torch_topk": timed(torch, lambda: torch.topk(x, k), repeats)}, x.numel() * 4,
                                 bandwidth))
    return rows


def bench_score_topk(torch, core, repeats, bandwidth, sizes, d=64):
    from custom_ops.gpu_harness import encode  # the same encodings the tests check
    rows = []
    for n in sizes:
        c = torch.randn((n, d), device="cuda")
        c16 = c.half()
        for k in (500, 1000):
            for b in (1, 8):
                q = torch.randn((b, d), device="cuda")
                q16 = q.half()
                peers = {"torch_fp32": timed(torch, lambda: torch.topk(q @ c.T, k), repeats),
                         "torch_fp16": timed(torch, lambda: torch.topk((q16 @ c16.T).float(), k), repeats)}
                for storage in ("fp32", "fp16", "bf16", "int8"):
                    cand, scales, _ = encode(c, storage)
                    ours = timed(torch, lambda: core.score_topk(q, cand, k, storage=storage, row_scales=scales),
                                 repeats)
                    nbytes = cand.numel() * cand.element_size() + (scales.numel() * 4 if scales is not None else 0)
                    rows.append(case(f"score_topk {storage} n={n} d={d} k={k} b={b}", ours, peers, nbytes, bandwidth))
    return rows


def bench_mlp(torch, core, repeats, bandwidth):
    rows = []
    dims = [512, 1024, 512, 256]
    ws = [torch.randn((a, b), device="cuda") / a ** 0.5 for a, b in zip(dims, dims[1:])]
    bs = [torch.zeros((b,), device="cuda") for b in dims[1:]]
    lin = torch.nn.Sequential(*[torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:])]).cuda()
    lin16 = torch.nn.Sequential(*[torch.nn.Linear(a, b) for a, b in zip(dims, dims[1:])]).cuda().half()
    for rows_n in (1, 64, 512, 4096):
        x = torch.randn((rows_n, dims[0]), device="cuda")
        x16 = x.half()
        peers = {"torch_fp32": timed(torch, lambda: lin(x), repeats),
                 "torch_fp16": timed(torch, lambda: lin16(x16), repeats)}
        for precision in ("fp32", "fp16", "bf16"):
            ours = timed(torch, lambda: core.mlp(x, ws, bs, [1, 1, 0], precision=precision), repeats)
            nbytes = sum(w.numel() for w in ws) * 4
            rows.append(case(f"mlp {precision} rows={rows_n} dims={dims}", ours, peers, nbytes, bandwidth))
    return rows


def table(rows):
    lines = ["| case | recopt median ms | p99 ms | vs peers (x) | bandwidth fraction |", "|---|---|---|---|---|"]
    for r in rows:
        ratios = ", ".join(f"{k[9:]} {v:.2f}" for k, v in r.items() if k.startswith("ratio_vs_"))
        lines.append(f"| {r['case']} | {r['recopt']['median_ms']:.3f} | {r['recopt']['p99_ms']:.3f} | {ratios} | "
                     f"{r['bandwidth_fraction']:.1%} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lib", required=True, help="librecopt_gpu_core.so (make gpu-core)")
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--sizes", default="1000000,10000000", help="n values, comma-separated")
    p.add_argument("--only", choices=["topk", "score_topk", "mlp"], action="append")
    args = p.parse_args(argv)
    import torch
    from custom_ops.gpu_harness import GpuCore
    if not torch.cuda.is_available():
        print("error: no CUDA device", file=sys.stderr)
        return 1
    core = GpuCore(args.lib)
    sizes = [int(s) for s in args.sizes.split(",")]
    bandwidth = copy_bandwidth(torch, args.repeats)
    only = set(args.only or ["topk", "score_topk", "mlp"])
    rows = []
    if "topk" in only:
        rows += bench_topk(torch, core, args.repeats, bandwidth, sizes)
    if "score_topk" in only:
        rows += bench_score_topk(torch, core, args.repeats, bandwidth, sizes)
    if "mlp" in only:
        rows += bench_mlp(torch, core, args.repeats, bandwidth)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda,
              "host": platform.node(), "copy_bandwidth_gbs": bandwidth / 1e9,
              "command": "python3 -m bench.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
              "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{result['device']}: copy bandwidth {bandwidth / 1e9:.0f} GB/s\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
