"""Renders bench/results/*.json into BENCHMARKS.md (numbers only from those files)."""
import glob
import json
import math
import os

from bench import report_serving
from bench.common import RESULTS_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _by_threads(prefix):
    """(threads, results) for each threading mode that has a results file."""
    for threads in ("inline", "default"):
        data = _load(f"{prefix}_{threads}")
        if data:
            yield threads, data


def _mlp_section(lines):
    runs = [(threads, data) for prefix in ("mlp", "mlp_vnni", "mlp_avx2", "mlp_rows", "mlp_rows_avx2")
            for threads, data in _by_threads(prefix)]
    for threads, data in runs:
        dims = "-".join(str(d) for d in data.get("dims", [512, 1024, 512, 256, 1]))
        forced = (" (oneDNN held to AVX512-VNNI: no AMX)" if "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI" in data["command"]
                  else " (forced AVX2 path)" if "ONEDNN_MAX_CPU_ISA" in data["command"] else "")
        per_op = ", per-op time by row count (gemm=auto's thresholds)" if "--paths in-graph" in data["command"] else ""
        lines += [f"### Whole MLP {dims}, threads={threads}{forced}{per_op}", "",
                  f"Command: `{data['command']}`", "",
                  f"Machine: {data['machine']['cpu']}, {data['machine']['cores']} cores, CPU flags "
                  f"{', '.join(data['machine'].get('flags', [])) or 'not recorded'}; RECOPT_ISA path "
                  f"{data['machine']['isa']}.", "",
                  *([("ONEDNN_MAX_CPU_ISA limits stock TensorFlow's oneDNN and FusedMLP's alike; XLA compiles for "
                      "the host CPU regardless, so its rows here are not AVX2 numbers; oneDNN has no bf16 matmul on "
                      "AVX2, so `recopt_bf16_onednn` did not run, and no brgemm int8 kernel, so `recopt_int8`'s "
                      "layers ran in fp32."), ""] if "AVX2" in forced else []),
                  "recopt_* are FusedMLP: gemm=auto (no suffix), the hand kernels (`_packed`) and oneDNN "
                  "(`_onednn`) in one run; `_bf16` is weights_bf16 (on oneDNN with AMX: bf16 products); "
                  "`recopt_int8` is int8_layers on every layer at least 16 wide (what precision=\"int8\" "
                  "writes; oneDNN VNNI / AMX-INT8, one scale per input row). `vs stock` is against stock on the "
                  "same path; `max abs` is the largest deviation from stock's outputs at that batch.", "",
                  "| path | variant | batch | median ms | p99 ms | vs stock | max abs |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in data["rows"]:
            dev = "-" if r.get("max_abs") is None else f"{r['max_abs']:.1e}"
            lines.append(f"| {r.get('path', 'eager')} | {r['variant']} | {r['batch']} | {r['median_ms']:.3f} | "
                         f"{r['p99_ms']:.3f} | {r['vs_stock']:.2f}x | {dev} |")
        lines.append("")


# The all-models run above predates the zoo DIEN's AUGRU architecture.
_DIEN_NOTE = ("Its dien rows are the earlier simplified DIEN (one GRU, DIN pooling); the current DIEN (GRU, "
              "attention scores, AUGRU) is measured in the DIN and DIEN section below.")


def _e2e_section(lines, name="end_to_end", title="zoo models (full size)"):
    data = _load(name)
    if not data:
        return
    labels = ["recopt", "recopt_bf16", "recopt_int8"]
    approx = any(r["model"] == "recopt_int8_approx" for e in data["entries"] for rows in e["timings"].values()
                 for r in rows)
    labels += ["recopt_int8_approx"] if approx else []
    lines += [f"### End to end, {title}: stock export vs tf-recopt (fp32 and bf16 weights)", "",
              f"Command: `{data['command']}`", "",
              "| model | threads | batch | stock median / p99 ms | recopt median / p99 ms | speed-up "
              f"| recopt bf16 median / p99 ms | speed-up | recopt int8 {data.get('int8_scope', 'candidates')} "
              "median / p99 ms | speed-up |" + (" recopt int8_approx median / p99 ms | speed-up |" if approx else ""),
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if approx else "")]
    for e in data["entries"]:
        for threads, rows in e["timings"].items():
            by = {(r["model"], r["batch_size"]): r for r in rows}
            for batch in sorted({r["batch_size"] for r in rows}):
                s = by[("stock", batch)]
                cells = []
                for label in labels:
                    o = by.get((label, batch))
                    cells.append("- | -" if o is None else
                                 f"{o['median_ms']:.3f} / {o['p99_ms']:.3f} | {s['median_ms'] / o['median_ms']:.2f}x")
                lines.append(f"| {e['model']} | {threads} | {batch} | {s['median_ms']:.3f} / {s['p99_ms']:.3f} | "
                             + " | ".join(cells) + " |")
    precisions = ("bf16", "int8") + (("int8_approx",) if approx else ())
    lines += ["", "| model | optimize() seconds | rewrites applied | parity | "
              + " | ".join(f"{p} max abs error (recall@k)" for p in precisions) + " |",
              "|---|---:|---|---|" + "---:|" * len(precisions)]
    for e in data["entries"]:
        rw = ", ".join(f"{k}={v}" for k, v in e["rewrites"].items() if v)
        lines.append(f"| {e['model']} | {e['optimize_seconds']} | {rw} | {'ok' if e['parity_ok'] else 'FAIL'} | "
                     + " | ".join(_precision_cell(e, p) for p in precisions) + " |")
    lines.append("")


def _precision_cell(entry, precision):
    if f"{precision}_refused" in entry:
        return f"refused: {entry[precision + '_refused'][:80]}"
    if f"{precision}_parity_max_abs" not in entry:
        return "-"
    recall = entry.get(f"{precision}_recall")
    fallbacks = "; ".join(entry.get(f"{precision}_fallbacks", []))
    return (f"{entry[precision + '_parity_max_abs']:.2g}" + (f" ({recall:.4f})" if recall is not None else "")
            + (f" [{fallbacks}]" if fallbacks else ""))


def _embedding_section(lines):
    for threads, data in _by_threads("embedding"):
        lines += [f"### Embedding lookups: {data['setup']}, threads={threads}", "",
                  f"Command: `{data['command']}`", "",
                  f"Copy bandwidth measured in the same run: {data['copy_bandwidth_gbs']:.1f} GB/s "
                  "(read + write of a 256 MiB numpy copy). `rows GB/s` = bytes of table rows read / median time.", "",
                  "| case | variant | median ms | p99 ms | vs stock | rows GB/s |", "|---|---|---:|---:|---:|---:|"]
        for r in data["rows"]:
            lines.append(f"| {r['case']} | {r['variant']} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | "
                         f"{r['vs_stock']:.2f}x | {r['rows_gbs']:.2f} |")
        lines.append("")


def _topk_section(lines):
    for threads, data in _by_threads("topk"):
        lines += [f"### TopK: Recopt>TopK vs tf.math.top_k, random fp32 rows, threads={threads}", "",
                  f"Command: `{data['command']}`", "",
                  f"Copy bandwidth in the same run: {data['copy_bandwidth_gbs']:.1f} GB/s. Indices are checked "
                  "equal to TopKV2's before timing. `per call`: one tf.function call from Python per op, "
                  "eager dispatch included. `in graph`: the op run `inner` times in a tf.while_loop per call, "
                  "time / inner (the loop's overhead included for both); `input GB/s` = bytes of the input / "
                  "recopt in-graph median.", "",
                  "| n | k | batch | per call: stock / recopt median ms | speed-up | inner | in graph: stock "
                  "median / p99 ms | recopt median / p99 ms | speed-up | input GB/s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in data["rows"]:
            lines.append(f"| {r['n']:,} | {r['k']} | {r['batch']} | {r['stock_ms']:.3f} / {r['recopt_ms']:.3f} | "
                         f"{r['speedup']:.2f}x | {r['inner']} | {r['graph_stock_ms']:.3f} / "
                         f"{r['graph_stock_p99_ms']:.3f} | {r['graph_recopt_ms']:.3f} / "
                         f"{r['graph_recopt_p99_ms']:.3f} | {r['graph_speedup']:.2f}x | "
                         f"{r['graph_input_gbs']:.1f} |")
        lines.append("")


def _retrieval_section(lines):
    for threads, data in _by_threads("retrieval"):
        lines += [f"### Retrieval: {data['setup']}, threads={threads}", "",
                  f"Command: `{data['command']}`", "",
                  f"Copy bandwidth in the same run: {data['copy_bandwidth_gbs']:.1f} GB/s; `of bound` = candidate "
                  "bytes read / median time / copy bandwidth. Recall@k is against exact fp32 (stock)."
                  + " TensorFlow variants are timed per call from Python and in graph (the op run "
                    f"{data['inner']} times in a tf.while_loop per call, time / {data['inner']}); ratios and "
                    "`of bound` use the in-graph medians, and Faiss's search call. `= fp32`: ids equal "
                    "the fp32 rows scan's (Recopt>ScoreTopK over fp32 rows); survivors: candidates the exact "
                    "op rescored per query (median / largest; -1: the query took the fp32 scan)."
                  + (f" Faiss: {data['faiss_error']}." if data.get("faiss_error") else ""), ""]
        lines += ["| batch | variant | per call median ms | in graph median / p99 ms | vs stock | vs Faiss | "
                  "recall@k | = fp32 | survivors | of bound |", "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"]
        for r in data["rows"]:
            vs_faiss = f"{r['vs_faiss']:.2f}x" if r.get("vs_faiss") else "n/a"
            same = {True: "yes", False: "no"}.get(r.get("ids_equal_fp32_rows"), "-")
            survivors = f"{r['survivors_median']:.0f} / {r['survivors_max']}" if "survivors_median" in r else "-"
            lines.append(f"| {r['batch']} | {r['variant']} | {r['median_ms']:.3f} | {r['graph_median_ms']:.3f} / "
                         f"{r['graph_p99_ms']:.3f} | {r['vs_stock']:.2f}x | {vs_faiss} | "
                         f"{r['recall']:.4f} | {same} | {survivors} | {100 * r['bound_fraction']:.0f}% |")
        lines.append("")


def _interaction_section(lines):
    for threads, data in _by_threads("interaction"):
        lines += [f"### DLRM dot interaction: Recopt>DotInteraction vs BatchMatMulV2 + reshape + gather or where, "
                  f"{data['setup']}, threads={threads}", "", f"Command: `{data['command']}`", "",
                  "| form | batch | stock median / p99 ms | recopt median / p99 ms | speed-up |",
                  "|---|---:|---:|---:|---:|"]
        for r in data["rows"]:
            lines.append(f"| {r.get('form', 'gather')} | {r['batch']} | {r['stock_ms']:.4f} / {r['stock_p99_ms']:.4f} | "
                         f"{r['recopt_ms']:.4f} / {r['recopt_p99_ms']:.4f} | {r['speedup']:.2f}x |")
        lines.append("")


def _ctr_section(lines):
    for threads, data in _by_threads("ctr_interactions"):
        lines += [f"### CTR interaction layers: DeepCTR's spelling (stock) vs the fused op, {data['setup']}, "
                  f"threads={threads}", "", f"Command: `{data['command']}`", "",
                  "Per-op times in graph (each call runs the layer `inner` times in a tf.while_loop). "
                  "afm: AfmPooling; bilinear: BilinearInteraction; inner_26 / inner_104: DotInteraction for "
                  "PNN's and an FGCNN-sized InnerProductLayer; autoint: MultiHeadAttention for one "
                  "InteractingLayer (E=16, 2x8 heads); kmax_pooling: Recopt>TopK, k=13 over rows of 26; fm: FactorizationMachine; "
                  "dcn_cross: CrossNetwork, 2 layers on dim 221. Machine: "
                  f"{data['machine']['cpu']}, CPU flags {', '.join(data['machine'].get('flags', [])) or 'not recorded'}"
                  f"; RECOPT_ISA path {data['machine']['isa']}.", "",
                  "| layer | batch | stock median / p99 ms | recopt median / p99 ms | speed-up |",
                  "|---|---:|---:|---:|---:|"]
        for r in data["rows"]:
            lines.append(f"| {r['family']} | {r['batch']} | {r['stock_ms']:.4f} / {r['stock_p99_ms']:.4f} | "
                         f"{r['recopt_ms']:.4f} / {r['recopt_p99_ms']:.4f} | {r['vs_stock']:.2f}x |")
        lines.append("")


def _attention_section(lines):
    for threads, data in _by_threads("attention"):
        lines += [f"### DIN attention: Recopt>DinAttention vs the stock subgraph and vs its MLP as Recopt>FusedMLP, "
                  f"{data['setup']}, threads={threads}", "", f"Command: `{data['command']}`", "",
                  "Per-op times in graph (each call runs the op `inner` times in a tf.while_loop).", "",
                  "| batch | stock median / p99 ms | stock + FusedMLP median / p99 ms | recopt median / p99 ms "
                  "| vs stock | vs stock + FusedMLP |", "|---:|---:|---:|---:|---:|---:|"]
        for r in data["rows"]:
            lines.append(f"| {r['batch']} | {r['stock_ms']:.4f} / {r['stock_p99_ms']:.4f} | "
                         f"{r['fused_mlp_ms']:.4f} / {r['fused_mlp_p99_ms']:.4f} | "
                         f"{r['recopt_ms']:.4f} / {r['recopt_p99_ms']:.4f} | {r['vs_stock']:.2f}x | "
                         f"{r['vs_fused_mlp']:.2f}x |")
        lines.append("")


def _in_graph_section(lines, name, title, key):
    """A stock-vs-recopt table of bench.common.stock_vs_recopt rows, keyed by
    row[key] and the batch (bench.gru, bench.mha)."""
    for threads, data in _by_threads(name):
        lines += [f"### {title}, {data['setup']}, threads={threads}", "",
                  f"Command: `{data['command']}`", "",
                  "Per-op times in graph (each call runs the layer `inner` times in a tf.while_loop).", "",
                  f"| {key} | batch | stock median / p99 ms | recopt median / p99 ms | speed-up |",
                  "|---|---:|---:|---:|---:|"]
        for r in data["rows"]:
            lines.append(f"| {r[key]} | {r['batch']} | {r['stock_ms']:.4f} / {r['stock_p99_ms']:.4f} | "
                         f"{r['recopt_ms']:.4f} / {r['recopt_p99_ms']:.4f} | {r['vs_stock']:.2f}x |")
        lines.append("")


def _gru_section(lines):
    _in_graph_section(lines, "gru", "DIEN GRU: Recopt>GRU vs the stock Keras GRU and AUGRU layers", "cell")


def _mha_section(lines):
    _in_graph_section(lines, "mha", "Multi-head attention: Recopt>MultiHeadAttention vs the stock Keras 3 layer",
                      "shape")


def _e2e_retrieval_section(lines):
    _e2e_section(lines, "end_to_end_retrieval", "retrieval models (full size; int8: exact retrieval with int8 "
                 "dense layers where they keep parity, int8_approx: the quantized scan's own top k)")


def _e2e_dlrm_section(lines):
    _e2e_section(lines, "end_to_end_dlrm", "DLRM after fuse_interaction (full size)")


def _e2e_attention_section(lines):
    _e2e_section(lines, "end_to_end_attention", "DIN and DIEN after fuse_attention and fuse_gru (full size)")


def _e2e_ranking_section(lines):
    _e2e_section(lines, "end_to_end_ranking", "TFRS-tutorial ranking model (StringLookup/IntegerLookup + Embedding "
                 "towers, full size), after lookup-table shapes were restored")


def _e2e_tables_section(lines):
    _e2e_section(lines, "end_to_end_tables", "Wide&Deep and DLRM after sharded-table support and bfloat16 "
                 "embedding tables under precision=\"bf16\" (full size)")


def _e2e_int8_section(lines):
    _e2e_section(lines, "end_to_end_int8", "ranking models under precision=\"int8\" (int8 dense layers, 8-bit "
                 "row-wise tables; full size; the loaded signature called from Python, machine and CPU flags as in the Whole "
                 "MLP sections)")


def _e2e_tfrs_dlrm_section(lines):
    _e2e_section(lines, "end_to_end_tfrs_dlrm", "tensorflow-recommenders DLRMs (full size): DotInteraction's "
                 "boolean_mask triangle (tfrs_dlrm) and its skip_gather=True form, the Model Garden DLRM's "
                 "(tfrs_dlrm_garden)")


def _headed(lines, data, title, note, table_head):
    """A section's title, command, explanatory note and table header."""
    lines += [title, "", f"Command: `{data['command']}`", "", note, "", *table_head]


def _optimize_time_section(lines):
    data = _load("optimize_time")
    if not data:
        return
    _headed(lines, data, f"### optimize() time: {data['setup']}, against TensorFlow loading and re-saving the same "
            "model", "optimize() includes its parity check (the optimized model reloaded and both run on sample "
            f"inputs). Medians of {data['repeats']} interleaved runs.",
            ["| features | TensorFlow load + save s | optimize() median / max s | ratio |", "|---:|---:|---:|---:|"])
    for r in data["rows"]:
        lines.append(f"| {r['features']} | {r['load_save_s']:.2f} | {r['optimize_s']:.2f} / {r['optimize_max_s']:.2f} "
                     f"| {r['ratio']:.2f}x |")
    lines.append("")


def _ablation_section(lines):
    """Every bench/results/ablation_<model>_<pass>.json (bench.pass_ablation)."""
    for path in sorted(glob.glob(os.path.join(RESULTS_DIR, "ablation_*.json"))):
        with open(path) as f:
            data = json.load(f)
        m, without = data["machine"], data["without"]
        _headed(lines, data, f"### Pass ablation: {data['pass']} on DeepCTR {data['model']} ({data['rewrites']} "
                "rewrites), Session path", f"Machine: {m['cpu']}, ISA path {m['isa']}. The model optimized with "
                f"every default pass (recopt) and with all but {data['pass']} (without), timed with stock "
                "TensorFlow on TF Serving's path (a v1 Session callable), interleaved; median (p99) ms.",
                ["| threads | batch | stock | without | recopt | recopt vs without | recopt vs stock |",
                 "|---|---:|---:|---:|---:|---:|---:|"])
        for mode, run in data["runs"].items():
            if "error" in run:
                lines.append(f"| {mode} | - | {run['error'][:160].replace('|', '/')} | | | | |")
                continue
            for b in sorted({t["batch"] for t in run.get("timings", [])}):
                t = {x["peer"]: x for x in run["timings"] if x["batch"] == b}
                s, w, r = (t.get(k) for k in ("stock_session", without, "recopt_session"))
                if not (s and w and r):
                    continue
                cells = " | ".join(f"{x['median_ms']:.3f} ({x['p99_ms']:.3f})" for x in (s, w, r))
                lines.append(f"| {mode} | {b} | {cells} | "
                             f"{w['median_ms'] / r['median_ms']:.2f}x | {s['median_ms'] / r['median_ms']:.2f}x |")
        lines.append("")


_CORPUS_PEERS = ("onnxruntime", "openvino")


def _corpus_section(lines):
    data = _load("corpus")
    if not data:
        return
    m = data["machine"]
    timed = any(t for row in data["models"] for run in (row.get("runs") or {}).values() for t in run.get("timings", []))
    batches = data["batch_sizes"] if timed else []
    peers = [p for p in _CORPUS_PEERS if p in data.get("peers", ())] if timed else []
    per_batch = " batch {b} stock / recopt ms (x) |" + (" batch {b} ORT / OpenVINO ms (recopt vs better) |"
                                                         if peers else "")
    _headed(lines, data, f"### Corpus: DeepCTR / DeepMatch models ({', '.join(data['packages'])})",
            f"Machine: {m['cpu']}, ISA path {m['isa']}. Each model exported with Criteo's shape (26 sparse ids, "
            "13 dense), tables redrawn from N(0, 0.5) and every other weight given noise of its own (DeepCTR's "
            "seeded initialisers make parallel towers identical, which ONNX Runtime then computes once); "
            "optimize() in a fresh process (the call's wall time, "
            "TensorFlow's import not counted; peak RSS as VmHWM; its own parity check)"
            + ("; then stock vs tf-recopt on the Session path (TF Serving's), threads="
               f"{','.join(data['threads'])} (1: intra-op 1 and inter-op -1, ops run in the caller's thread as "
               "ONNX Runtime's do), median ms and speed-up per batch size" if timed else
               "; no Session-path timing in this run")
            + ("; ONNX Runtime (tf2onnx, CPU provider) and OpenVINO (its own SavedModel conversion, f32) in the "
               "same interleaved rounds, `recopt vs better` = the faster of the two's median / recopt_session's "
               "(a peer that failed to convert or to match stock shows `-`)" if peers else "")
            + ". Export and optimize errors are listed as they came.",
            ["| model | optimize s | peak RSS MB | parity | fused ops |" + "".join(per_batch.format(b=b) for b in batches),
             "|---|---:|---:|---|---|" + "---:|" * (len(batches) * (2 if peers else 1))])
    for row in data["models"]:
        opt = row.get("optimize") or {}
        width = len(batches) * (2 if peers else 1)
        if row.get("export_error") or not opt.get("ok"):
            why = row.get("export_error") and "export failed: " + row["export_error"] or opt.get("error", "parity")
            lines.append(f"| {row['model']} | - | - | no | {why[-160:].replace('|', '/')} |" + " |" * width)
            continue
        fused = ", ".join(f"{op.split('>')[1]} x{n}" for op, n in sorted(opt.get("fused", {}).items())) or "none"
        cells = []
        for b in batches:
            t = _corpus_times(row, b)
            s_ms, r_ms = t.get("stock_session"), t.get("recopt_session")
            cells.append(f"{s_ms:.3f} / {r_ms:.3f} ({s_ms / r_ms:.2f}x)" if s_ms and r_ms else "-")
            if peers:
                best = _corpus_best_peer(t, peers)
                cells.append(" / ".join(f"{t[p]:.3f}" if t.get(p) else "-" for p in peers)
                             + (f" ({best / r_ms:.2f}x)" if best and r_ms else ""))
        lines.append(f"| {row['model']} | {opt['seconds']:.1f} | {opt['peak_rss_mb']:.0f} | yes | {fused} |"
                     + "".join(f" {c} |" for c in cells))
    lines.append("")
    done = {row["model"]: row["optimize"] for row in data["models"] if (row.get("optimize") or {}).get("ok")}
    if done:
        slow = max(done, key=lambda n: done[n]["seconds"])
        big = max(done, key=lambda n: done[n]["peak_rss_mb"])
        lines.append(f"optimize(): {sum(o['seconds'] <= 10 for o in done.values())} of {len(done)} models within "
                     f"10 s, slowest {slow} {done[slow]['seconds']:.1f} s; {sum(o['peak_rss_mb'] <= 2048 for o in done.values())}"
                     f" within 2 GB peak RSS, largest {big} {done[big]['peak_rss_mb']:.0f} MB.")
    for b in batches:
        ratios = _corpus_ratios(data, b)
        if ratios:
            lines.append(f"Batch {b}: geo-mean {math.exp(sum(map(math.log, ratios.values())) / len(ratios)):.2f}x "
                         f"over {len(ratios)} models, min {min(ratios.values()):.2f}x, slower than stock: "
                         f"{_below_one(ratios)}.")
        vs = _corpus_ratios(data, b, lambda t: _corpus_best_peer(t, peers)) if peers else {}
        if vs:
            lines.append(f"Batch {b}, against the better of ONNX Runtime and OpenVINO: as fast or faster on "
                         f"{sum(x >= 1.0 for x in vs.values())} of {len(vs)} models; behind on {_below_one(vs)}.")
    if peers:
        failed = [f"{row['model']} {p} ({info['error'][:120]})" for row in data["models"]
                  for p, info in next(iter((row.get("runs") or {}).values()), {}).get("peers", {}).items()
                  if p in peers and info.get("error")]
        failed += [f"{row['model']} (all peers: {run['error'][:120]})" for row in data["models"]
                   for run in (row.get("runs") or {}).values() if run.get("error")]
        lines.append("Peers that did not run: " + ("; ".join(failed) or "none") + ".")
    if batches:
        lines.append("")


def _below_one(ratios):
    """'name 0.93x, ...' for the ratios under 1, by name; 'none' if none."""
    return ", ".join(f"{n} {x:.2f}x" for n, x in sorted(ratios.items()) if x < 1.0) or "none"


def _corpus_times(row, batch):
    """peer -> median ms at `batch` (peers whose parity check failed left out)."""
    run = next(iter((row.get("runs") or {}).values()), {})
    ok = {p for p, info in run.get("peers", {}).items() if info.get("parity", {}).get("ok", True)}
    return {x["peer"]: x["median_ms"] for x in run.get("timings", []) if x["batch"] == batch and x["peer"] in ok}


def _corpus_best_peer(times, peers):
    found = [times[p] for p in peers if times.get(p)]
    return min(found) if found else None


def _corpus_ratios(data, batch, reference=lambda t: t.get("stock_session")):
    """model -> reference median / recopt median on the Session path at `batch`."""
    out = {}
    for row in data["models"]:
        t = _corpus_times(row, batch)
        ref = reference(t)
        if ref and t.get("recopt_session"):
            out[row["model"]] = ref / t["recopt_session"]
    return out


def _variants_section(lines):
    data = _load("dense_variants_inline")
    if not data:
        return
    lines += ["### Dense-layer spellings (two 512-wide layers on a 256-wide input), threads=inline", "",
              f"Command: `{data['command']}`", "",
              "Speed-up vs stock TensorFlow (median latency ratio); `stock ops` = custom_ops=False. Machine: "
              f"{data['machine']['cpu']}, CPU flags {', '.join(data['machine'].get('flags', [])) or 'not recorded'};"
              f" RECOPT_ISA path {data['machine']['isa']}. `int8 max abs`: largest deviation from stock's outputs "
              "(outputs of order 1) at that batch.", "",
              "| variant | batch | stock median / p99 ms | stock ops | recopt | recopt bf16 | recopt int8 | int8 max abs |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    by = {}
    for r in data["rows"]:
        by.setdefault((r["variant"], r["batch"]), {})[r["mode"]] = r
    for (variant, batch), modes in by.items():
        s = modes["stock"]
        lines.append(f"| {variant} | {batch} | {s['median_ms']:.3f} / {s['p99_ms']:.3f} | "
                     + " | ".join(f"{modes[m]['vs_stock']:.2f}x" if m in modes else "-"
                                  for m in ("recopt stock ops", "recopt", "recopt bf16", "recopt int8"))
                     + (f" | {modes['recopt int8']['max_abs']:.1e} |" if "recopt int8" in modes else " | - |"))
    lines.append("")


PEERS_BEGIN, PEERS_END = "<!-- peers:begin -->", "<!-- peers:end -->"


def _peers_section(lines):
    data = _load("peers")
    if not data:
        return
    from tf_recopt.peers import PEERS
    from tf_recopt.peers.suite import best_peer_ratio
    m = data["machine"]
    lines += [PEERS_BEGIN, "## Against the peers: stock TF, XLA, ONNX Runtime, OpenVINO", "",
              f"Command: `{data['command']}` ({data['seconds'] // 60} min; `make bench` runs it and rewrites "
              "this part). Every zoo model at medium size (full's layers; tables and candidate sets 10x "
              "smaller, so tf2onnx converts each in seconds); `xla` is the serving signature in "
              "`tf.function(jit_compile=True)`; `onnxruntime` is the tf2onnx conversion (opset 17) on the "
              "CPU provider, its pool told to stop spinning when a run returns (`session.force_spinning_stop`: "
              "left spinning, it slowed the next peer in the round); `openvino` / `openvino_bf16` are OpenVINO's "
              "own conversion of the SavedModel (`ov.convert_model`, in a subprocess) on its CPU plugin with "
              "inference precision f32 (forced) / bf16; `recopt` is tf-recopt's output, `recopt_stock` the same "
              "without custom ops, `recopt_bf16_session` / `recopt_int8_session` optimize(precision=\"bf16\" / "
              "\"int8\") on the Session path (reduced-precision peers are checked at optimize()'s tolerance for "
              "their precision). "
              "TF peers are called as `tf.saved_model.load(...).signatures[...]` is; `stock_session` and "
              "`recopt_session` run the same SavedModels as a v1 Session callable (TF Serving's and "
              "`tf-recopt serve`'s path, without TF's Python call overhead). threads=1: one intra-op "
              "thread (TF inter-op -1, ORT intra 1); threads=all: every core. Medians and p99 of "
              f"{data['settings']['repeats']} interleaved calls after {data['settings']['warmup']} warm-up "
              "calls; every peer first checked against stock on 8 examples.", "",
              f"Machine: {m['cpu']}, {m['cores']} cores, CPU flags {', '.join(m.get('flags', [])) or 'not recorded'}"
              f", RECOPT_ISA path {m['isa']}, TensorFlow {m['tensorflow']}, onnxruntime "
              f"{m.get('onnxruntime', 'n/a')}, tf2onnx {m.get('tf2onnx', 'n/a')}, openvino "
              f"{m.get('openvino', 'not recorded')}, Python {m['python']}.", "",
              "### Summary: recopt vs the best peer that runs the model (best peer median / recopt median)", "",
              "`recopt` is compared with stock / xla / onnxruntime / openvino (fp32) as Python calls them; "
              "`recopt_session` (TF Serving's Session path) with the best of those and `stock_session`; the "
              "faster of `recopt_bf16_session` and `recopt_int8_session` with `openvino_bf16`, the bf16 anchor. "
              "A peer whose outputs differ from stock's beyond its tolerance is not counted.", "",
              "| model | threads | batch | best peer | recopt vs best peer | recopt vs stock "
              "| recopt_session vs best peer | recopt_session vs stock_session | recopt bf16/int8 session vs "
              "openvino_bf16 |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for label, entry in data["models"].items():
        for mode, run in entry["runs"].items():
            batches = sorted({r["batch"] for r in run.get("timings", [])})
            for batch in batches[:1] + batches[-1:]:
                best, ratio = best_peer_ratio(run, batch, among=("stock", "xla", "onnxruntime", "openvino"))
                _, session_ratio = best_peer_ratio(run, batch, ours="recopt_session")
                ms = {r["peer"]: r["median_ms"] for r in run["timings"] if r["batch"] == batch}
                reduced = min((p for p in ("recopt_bf16_session", "recopt_int8_session") if p in ms),
                              key=lambda p: ms[p], default=None)
                if not run["peers"].get("openvino_bf16", {}).get("parity", {}).get("ok"):
                    reduced = None  # OpenVINO bf16 did not run or its outputs differ: nothing to compare
                lines.append(f"| {label} | {mode} | {batch} | {best or 'n/a'} | {_ratio(ratio)} | "
                             f"{_ratio(ms, 'stock', 'recopt')} | {_ratio(session_ratio)} | "
                             f"{_ratio(ms, 'stock_session', 'recopt_session')} | "
                             + (f"{_ratio(ms, 'openvino_bf16', reduced)} ({reduced.split('_')[1]})" if reduced else "n/a")
                             + " |")
    lines.append("")
    for label, entry in data["models"].items():
        lines += _peer_model_table(label, entry, PEERS, data["settings"]["sla_ms"])
    lines += [PEERS_END, ""]


def _ratio(value, base=None, ours=None):
    """'1.23x' from a ratio, or from medians[base] / medians[ours]; 'n/a' when missing."""
    if base is not None:
        value = value[base] / value[ours] if base in value and ours in value else None
    return f"{value:.2f}x" if value else "n/a"


def _peer_model_table(label, entry, peers, sla_ms):
    lines = [f"### {label}", "", f"![{label} latency](bench/results/peers/{label}_latency.png)", "",
             "Median ms (p99 ms) per call:", "",
             "| threads | batch | " + " | ".join(peers) + " |", "|---|---:|" + "---:|" * len(peers)]
    errors, sla = {}, []
    for mode, run in entry["runs"].items():
        if "error" in run:
            errors[f"threads={mode}"] = run["error"]
            continue
        for batch in sorted({r["batch"] for r in run["timings"]}):
            rows = {r["peer"]: r for r in run["timings"] if r["batch"] == batch}
            cells = [f"{rows[p]['median_ms']:.3f} ({rows[p]['p99_ms']:.3f})" if p in rows else "n/a" for p in peers]
            lines.append(f"| {mode} | {batch} | " + " | ".join(cells) + " |")
        for peer, status in run["peers"].items():
            if "error" in status:
                errors.setdefault(peer, status["error"])
            elif not status.get("parity", {}).get("ok", True):
                errors.setdefault(peer, f"outputs differ from stock: {status['parity']}")
        if run.get("sla"):
            sla.append(f"| {mode} | " + " | ".join(
                f"{run['sla'][p]['batch']} / {run['sla'][p]['throughput']:.0f}" if p in run["sla"] else "n/a"
                for p in peers) + " |")
    lines.append("")
    if sla:
        lines += [f"Largest power-of-two batch with p99 under {sla_ms:g} ms / examples per second there:", "",
                  "| threads | " + " | ".join(peers) + " |", "|---|" + "---:|" * len(peers)] + sla + [""]
    lines += [f"- `{peer}` did not run: {err}" for peer, err in errors.items()]
    return lines + [""]


def render_peers():
    """Rewrites only the peers part of BENCHMARKS.md (between its markers)."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        text = f.read()
    section = []
    _peers_section(section)
    block = "\n".join(section).rstrip() + "\n"
    if PEERS_BEGIN in text:
        head, rest = text.split(PEERS_BEGIN, 1)
        text = head + block + rest.split(PEERS_END, 1)[1].lstrip("\n")
    else:
        first_section = text.index("\n### ")
        text = text[:first_section + 1] + block + "\n" + text[first_section + 1:]
    with open(path, "w") as f:
        f.write(text)


# Sections that can be rerendered alone: name -> (renderer, header prefix,
# the section a missing one is first written after, in render()'s order).
SECTIONS = {"topk": (_topk_section, "### TopK:", None), "retrieval": (_retrieval_section, "### Retrieval:", None),
            "interaction": (_interaction_section, "### DLRM dot interaction:", None),
            "ctr_interactions": (_ctr_section, "### CTR interaction layers:", "### DLRM dot interaction:"),
            "attention": (_attention_section, "### DIN attention:", "### DLRM dot interaction:"),
            "gru": (_gru_section, "### DIEN GRU:", "### DIN attention:"),
            "mha": (_mha_section, "### Multi-head attention:", "### DIEN GRU:"),
            "end_to_end_retrieval": (_e2e_retrieval_section, "### End to end, retrieval models", None),
            "end_to_end_attention": (_e2e_attention_section, "### End to end, DIN and DIEN after",
                                     "### End to end, DLRM after fuse_interaction"),
            "end_to_end_dlrm": (_e2e_dlrm_section, "### End to end, DLRM after fuse_interaction", None),
            "end_to_end_ranking": (_e2e_ranking_section, "### End to end, TFRS-tutorial ranking",
                                   "### End to end, DIN and DIEN after"),
            "end_to_end_tables": (_e2e_tables_section, "### End to end, Wide&Deep and DLRM after sharded",
                                  "### End to end, TFRS-tutorial ranking"),
            "end_to_end_tfrs_dlrm": (_e2e_tfrs_dlrm_section, "### End to end, tensorflow-recommenders DLRMs",
                                     "### End to end, Wide&Deep and DLRM after sharded"),
            "optimize_time": (_optimize_time_section, "### optimize() time:",
                              "### End to end, tensorflow-recommenders DLRMs"),
            "embedding": (_embedding_section, "### Embedding lookups:", None),
            "dense_variants": (_variants_section, "### Dense-layer spellings", None),
            "end_to_end_int8": (_e2e_int8_section, "### End to end, ranking models under precision=",
                                "### End to end, tensorflow-recommenders DLRMs"),
            "mlp": (_mlp_section, "### Whole MLP", None),
            "corpus": (_corpus_section, "### Corpus:", "### optimize() time:"),
            "ablation": (_ablation_section, "### Pass ablation:", "### Corpus:"),
            "serving": (report_serving.serving_section, "### Serving: `tf-recopt serve`", "### Pass ablation:"),
            "serving_tune": (report_serving.tune_section, "### Serving: `tf-recopt tune`", "### Serving: `tf-recopt serve`")}


def _section_span(lines, prefix):
    """[start, end) of the run of sections whose headers start with prefix, or None."""
    starts = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    if not starts:
        return None
    end = next((i for i in range(starts[-1] + 1, len(lines))
                if lines[i].startswith(("## ", "### ")) and not lines[i].startswith(prefix)), len(lines))
    return starts[0], end


def render_sections(names):
    """Rewrites only the named sections of BENCHMARKS.md from their result
    files, leaving every other section (and hand-written notes) as they are."""
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        lines = f.read().split("\n")
    for name in names:
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; known: {', '.join(sorted(SECTIONS))}")
        renderer, prefix, after = SECTIONS[name]
        span = _section_span(lines, prefix)
        before = _section_span(lines, after) if span is None and after is not None else None
        if before is not None:
            span = (before[1], before[1])
        if span is None:
            raise SystemExit(f"BENCHMARKS.md has no section starting with {prefix!r}")
        start, end = span
        fresh = []
        renderer(fresh)
        lines[start:end] = fresh
    with open(path, "w") as f:
        f.write("\n".join(lines))


def render():
    machine = next((d["machine"] for d in (_load("end_to_end"), _load("mlp_inline"), _load("mlp_default")) if d),
                   None)
    lines = ["# Benchmarks", "",
             "Every number below comes from `make bench-all` (bench/run_all.py; `make bench` reruns only "
             "the peers part) on the machine described, "
             "written by bench/report.py from bench/results/*.json. Stock TensorFlow includes its Grappler "
             "remapper and oneDNN. `threads=default` is TensorFlow's default pools; `threads=inline` is "
             "inter-op -1 / intra-op 1 (one model per thread, run in the caller). Latencies are per call "
             "(median and p99 over interleaved repetitions); speed-up = stock median / recopt median.", ""]
    if machine:
        lines += [f"Machine: {machine['cpu']}, {machine['cores']} cores, ISA path {machine['isa']}, "
                  f"TensorFlow {machine['tensorflow']}, Python {machine['python']}.", ""]
    _peers_section(lines)
    _mlp_section(lines)
    _embedding_section(lines)
    _topk_section(lines)
    _retrieval_section(lines)
    _interaction_section(lines)
    _ctr_section(lines)
    _attention_section(lines)
    _gru_section(lines)
    _mha_section(lines)
    _variants_section(lines)
    _e2e_section(lines)
    lines += [_DIEN_NOTE, ""]
    _e2e_retrieval_section(lines)
    _e2e_dlrm_section(lines)
    _e2e_attention_section(lines)
    _e2e_ranking_section(lines)
    _e2e_tables_section(lines)
    _e2e_tfrs_dlrm_section(lines)
    _e2e_int8_section(lines)
    _optimize_time_section(lines)
    _corpus_section(lines)
    _ablation_section(lines)
    report_serving.serving_section(lines)
    report_serving.tune_section(lines)
    with open(os.path.join(ROOT, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["--peers"]:
        render_peers()
    elif sys.argv[1:2] == ["--only"]:
        render_sections(sys.argv[2].split(","))
    else:
        render()
