"""Unit benchmark: full-corpus retrieval, n = 1M candidates, d = 64, k = 500,
batch 1 and 8. Stock TensorFlow (matmul + top_k), Faiss IndexFlatIP (exact
inner-product search, faiss-cpu; its thread count follows --threads), and
Recopt>ScoreTopK with fp32, bf16 and int8 candidates in the blocks16 layout
that optimize() writes for the CPU ("recopt <storage>") and in rows ("recopt
<storage> rows": what the GPU device option and a shared fp32 matrix get). Each is reported as a
ratio to stock and to Faiss, as recall@k against exact fp32, and as a
fraction of the bandwidth bound (candidate bytes / time vs the copy
bandwidth measured in the same run).

TensorFlow variants are timed per call from Python and in graph (INNER
runs in a tf.while_loop per call, time / INNER: no eager dispatch, as
Faiss's search has none); ratios and the bound use the in-graph times.

    python -m bench.retrieval --threads inline|default [--repeats N]
"""
import os
import sys

import numpy as np

N, DIM, K, BATCHES = 1_000_000, 64, 500, (1, 8)
INNER = 4


def _faiss(candidates, threads):
    try:
        import faiss
    except ImportError as exc:  # optional peer: pip install tf-recopt[bench]
        return None, f"faiss not installed ({exc})"
    faiss.omp_set_num_threads(1 if threads == "inline" else os.cpu_count())
    index = faiss.IndexFlatIP(DIM)
    index.add(candidates)
    return index, ""


def main(argv=None):
    from bench import common
    args = common.unit_args(argv)
    import tensorflow as tf
    import tf_recopt
    from tf_recopt.ops import retrieval
    ops = tf_recopt.load_ops()
    rng = np.random.default_rng(0)
    cand = rng.standard_normal((N, DIM)).astype(np.float32)
    index, faiss_error = _faiss(cand, args.threads)
    encoded = {s: retrieval.encode(cand, s) for s in retrieval.STORAGES}
    stored = {s: [tf.constant(a) for a in arrays] for s, arrays in encoded.items()}
    blocked = {s: tf.constant(retrieval.to_blocks(arrays[0])) for s, arrays in encoded.items()}
    cand_t, empty = tf.constant(cand), tf.zeros([0])
    bandwidth = common.copy_bandwidth_gbs()
    rows = []
    for batch in BATCHES:
        q = rng.standard_normal((batch, DIM)).astype(np.float32)
        q_t = tf.constant(q)
        outputs = {"stock": lambda: tf.math.top_k(tf.matmul(q_t, cand_t, transpose_b=True), K)}
        for s, (m, sc) in stored.items():
            outputs[f"recopt {s}"] = lambda b=blocked[s], sc=sc: ops.recopt_score_top_k(
                q_t, b, sc, empty, K, layout="blocks16", num_candidates=N)
            outputs[f"recopt {s} rows"] = lambda m=m, sc=sc: ops.recopt_score_top_k(q_t, m, sc, empty, K)
        fns = {label: tf.function(make) for label, make in outputs.items()}
        calls = {label: (lambda f=f: f()[1].numpy()) for label, f in fns.items()}
        graphs = {label: common.in_graph(make, INNER) for label, make in outputs.items()}
        if index is not None:
            calls["faiss"] = lambda: index.search(q, K)[1]
        exact = calls["stock"]()
        timings = common.time_calls({**calls, **{f"{label} graph": g for label, g in graphs.items()}},
                                    warmup=3, repeats=args.repeats)
        # Per-op (median, p99): in graph for TensorFlow, the search call for Faiss.
        per_op = {label: tuple(t / INNER for t in timings[f"{label} graph"]) if label in graphs else timings[label]
                  for label in calls}
        for label in calls:
            med, p99 = timings[label]
            graph_med, graph_p99 = per_op[label]
            nbytes = encoded[label.split()[1]][0].nbytes if label.startswith("recopt") else cand.nbytes
            rows.append({"batch": batch, "variant": label, "median_ms": med, "p99_ms": p99,
                         "graph_median_ms": graph_med, "graph_p99_ms": graph_p99,
                         "vs_stock": per_op["stock"][0] / graph_med,
                         "vs_faiss": per_op["faiss"][0] / graph_med if "faiss" in per_op else None,
                         "recall": retrieval.recall_at_k(exact, calls[label]()),
                         "bound_fraction": nbytes / (graph_med / 1e3) / 1e9 / bandwidth})
            r = rows[-1]
            print(f"batch {batch} {label:<18} per call {med:7.3f} ms  in graph {graph_med:7.3f} ms (p99 "
                  f"{graph_p99:.3f})  {r['vs_stock']:.2f}x stock  recall {r['recall']:.4f}  "
                  f"{100 * r['bound_fraction']:.0f}% of bound", file=sys.stderr)
    payload = {"bench": "retrieval", "threads": args.threads, "machine": common.machine(),
               "copy_bandwidth_gbs": bandwidth, "faiss_error": faiss_error,
               "setup": f"n={N} candidates, d={DIM}, k={K}", "inner": INNER,
               "command": f"python -m bench.retrieval --threads {args.threads} --repeats {args.repeats}",
               "rows": rows}
    common.write_result(f"retrieval_{args.threads}", payload)


if __name__ == "__main__":
    main()
