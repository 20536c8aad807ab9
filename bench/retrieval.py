"""Unit benchmark: full-corpus retrieval, n = 1M candidates, d = 64, k = 500,
batch 1 and 8. Stock TensorFlow (matmul + top_k), Faiss IndexFlatIP (exact
inner-product search, faiss-cpu; its thread count follows --threads), and
Recopt>ScoreTopK with fp32, bf16 and int8 candidates in the blocks16 layout
("recopt <storage>": precision="<storage>_approx" in optimize()) and in rows
("recopt <storage> rows": what the GPU device option and a shared fp32
matrix get), and Recopt>ExactScoreTopK ("recopt <storage> exact": what
precision="int8"/"bf16" writes for the CPU, the centred int8/bf16 scan plus
fp32 rescoring). Faiss's quantized-then-refined index is the exactness
peer: IndexScalarQuantizer(QT_8bit) + IndexRefineFlat, which rescores
k_factor x k candidates in fp32 with no guarantee. Each is reported as a
ratio to stock and to Faiss, as recall@k against exact fp32, as whether its
ids equal the fp32 rows scan's (the answer the exact op promises), with
the exact op's survivors (candidates rescored per query, median and
largest), and as a fraction of the bandwidth bound (candidate bytes / time
vs the copy bandwidth measured in the same run).

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


FAISS_REFINE_FACTORS = (1, 2)


def _faiss(candidates, threads):
    """{label: search(q, k) -> ids} for the Faiss indexes, and an error."""
    try:
        import faiss
    except ImportError as exc:  # optional peer: pip install tf-recopt[bench]
        return {}, f"faiss not installed ({exc})"
    faiss.omp_set_num_threads(1 if threads == "inline" else os.cpu_count())
    flat = faiss.IndexFlatIP(DIM)
    flat.add(candidates)
    searches = {"faiss": lambda q, k: flat.search(q, k)[1]}
    sq = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    refine = faiss.IndexRefineFlat(sq)
    refine.train(candidates)
    refine.add(candidates)
    for factor in FAISS_REFINE_FACTORS:
        params = faiss.IndexRefineSearchParameters(k_factor=factor)
        searches[f"faiss sq8+refine x{factor}"] = lambda q, k, p=params: refine.search(q, k, params=p)[1]
    return searches, ""


def main(argv=None):
    from bench import common
    args = common.unit_args(argv)
    import tensorflow as tf
    import tf_recopt
    from tf_recopt.ops import retrieval
    ops = tf_recopt.load_ops()
    rng = np.random.default_rng(0)
    cand = rng.standard_normal((N, DIM)).astype(np.float32)
    searches, faiss_error = _faiss(cand, args.threads)
    encoded = {s: retrieval.encode(cand, s) for s in retrieval.STORAGES}
    stored = {s: [tf.constant(a) for a in arrays] for s, arrays in encoded.items()}
    blocked = {s: tf.constant(retrieval.to_blocks(arrays[0])) for s, arrays in encoded.items()}
    exact_inputs = {s: [tf.constant(a) for a in retrieval.encode_exact(cand, s)] for s in retrieval.EXACT_STORAGES}
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
        for s, (b, sc, bounds, centre) in exact_inputs.items():
            outputs[f"recopt {s} exact"] = lambda b=b, sc=sc, bounds=bounds, centre=centre: \
                ops.recopt_exact_score_top_k(q_t, b, sc, empty, K, cand_t, bounds, centre, num_candidates=N)[:2]
        fns = {label: tf.function(make) for label, make in outputs.items()}
        calls = {label: (lambda f=f: f()[1].numpy()) for label, f in fns.items()}
        graphs = {label: common.in_graph(make, INNER) for label, make in outputs.items()}
        for label, search in searches.items():
            calls[label] = lambda search=search: search(q, K)
        survivors = {s: ops.recopt_exact_score_top_k(q_t, *exact_inputs[s][:2], empty, K, cand_t,
                                                     *exact_inputs[s][2:], num_candidates=N)[2].numpy()
                     for s in exact_inputs}
        exact = calls["stock"]()
        fp32_rows = calls["recopt fp32 rows"]()
        timings = common.time_calls({**calls, **{f"{label} graph": g for label, g in graphs.items()}},
                                    warmup=3, repeats=args.repeats)
        # Per-op (median, p99): in graph for TensorFlow, the search call for Faiss.
        per_op = {label: tuple(t / INNER for t in timings[f"{label} graph"]) if label in graphs else timings[label]
                  for label in calls}
        for label in calls:
            med, p99 = timings[label]
            graph_med, graph_p99 = per_op[label]
            nbytes = encoded[label.split()[1]][0].nbytes if label.startswith("recopt") else cand.nbytes
            ids = calls[label]()
            rows.append({"batch": batch, "variant": label, "median_ms": med, "p99_ms": p99,
                         "graph_median_ms": graph_med, "graph_p99_ms": graph_p99,
                         "vs_stock": per_op["stock"][0] / graph_med,
                         "vs_faiss": per_op["faiss"][0] / graph_med if "faiss" in per_op else None,
                         "recall": retrieval.recall_at_k(exact, ids),
                         "ids_equal_fp32_rows": bool(np.array_equal(ids, fp32_rows)),
                         "bound_fraction": nbytes / (graph_med / 1e3) / 1e9 / bandwidth})
            if label.endswith(" exact"):
                counts = survivors[label.split()[1]]
                rows[-1]["survivors_median"] = float(np.median(counts))
                rows[-1]["survivors_max"] = int(counts.max())
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
