"""PNGs a user reads at a glance: latency vs batch size per model (one
panel per threading mode, every peer), and speed-up over stock TensorFlow."""
import os

from tf_recopt.peers import BASELINE, PEERS

COLORS = {"stock": "#7f7f7f", "xla": "#1f77b4", "onnxruntime": "#ff7f0e", "recopt": "#2ca02c",
          "recopt_stock": "#98df8a", "stock_session": "#c7c7c7", "recopt_session": "#17becf",
          "openvino": "#9467bd", "openvino_bf16": "#c5b0d5", "recopt_bf16_session": "#bcbd22",
          "recopt_int8_session": "#d62728"}


def pyplot():
    import matplotlib
    matplotlib.use("Agg")   # files only; no display on servers
    import matplotlib.pyplot as plt
    return plt


def write_all(results, out_dir):
    paths = [latency_plot(label, entry, out_dir) for label, entry in results["models"].items()]
    for mode in results["settings"]["threads"]:
        paths.append(speedup_plot(results, mode, out_dir))
    return [os.path.basename(p) for p in paths if p]


def latency_plot(label, entry, out_dir):
    plt = pyplot()
    runs = {m: r for m, r in entry["runs"].items() if r.get("timings")}
    if not runs:
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, (mode, run) in zip(axes[0], runs.items()):
        for peer in PEERS:
            rows = sorted((r for r in run["timings"] if r["peer"] == peer), key=lambda r: r["batch"])
            if rows:
                ax.plot([r["batch"] for r in rows], [r["median_ms"] for r in rows], "o-", label=peer,
                        color=COLORS[peer])
        ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="median latency (ms)",
               title=f"{label}, intra-op threads {mode}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, plt, os.path.join(out_dir, f"{label}_latency.png"))


def speedup_plot(results, mode, out_dir):
    """Grouped bars: per model and batch size, each peer's speed-up over stock."""
    plt = pyplot()
    groups = []
    for label, entry in results["models"].items():
        timings = entry["runs"].get(mode, {}).get("timings", [])
        for batch in sorted({r["batch"] for r in timings}):
            rows = {r["peer"]: r["median_ms"] for r in timings if r["batch"] == batch}
            if BASELINE in rows:
                groups.append((f"{label}\nb{batch}", {p: rows[BASELINE] / ms for p, ms in rows.items()}))
    if not groups:
        return None
    peers = [p for p in PEERS if p != BASELINE]
    width = 0.8 / len(peers)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups)), 4))
    for i, peer in enumerate(peers):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, [ratios.get(peer, 0.0) for _, ratios in groups], width, label=peer, color=COLORS[peer])
        for x, (_, ratios) in zip(xs, groups):
            if peer not in ratios:   # could not run this model: say so instead of an empty slot
                ax.text(x, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=6, color=COLORS[peer])
    ax.axhline(1.0, color=COLORS[BASELINE], linewidth=1)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], [name for name, _ in groups], fontsize=7)
    ax.set(ylabel="speed-up over stock TF (x)", title=f"speed-up over stock TensorFlow, intra-op threads {mode}")
    ax.legend(fontsize=8)
    return save(fig, plt, os.path.join(out_dir, f"speedup_threads_{mode}.png"))


def save(fig, plt, path, dpi=100):
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
