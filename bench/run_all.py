"""`make bench-all`: every benchmark, each threading mode in its own process
(TensorFlow's pools are fixed at start-up), then BENCHMARKS.md."""
import subprocess
import sys

STEPS = [
    ["-m", "bench.mlp", "--threads", "inline"],
    ["-m", "bench.mlp", "--threads", "default"],
    ["-m", "bench.dense_variants", "--threads", "inline"],
    ["-m", "bench.embedding", "--threads", "inline"],
    ["-m", "bench.embedding", "--threads", "default"],
    ["-m", "bench.topk", "--threads", "inline"],
    ["-m", "bench.topk", "--threads", "default"],
    ["-m", "bench.retrieval", "--threads", "inline"],
    ["-m", "bench.retrieval", "--threads", "default"],
    ["-m", "bench.interaction", "--threads", "inline"],
    ["-m", "bench.interaction", "--threads", "default"],
    ["-m", "bench.ctr_interactions", "--threads", "inline"],
    ["-m", "bench.ctr_interactions", "--threads", "default"],
    ["-m", "bench.attention", "--threads", "inline"],
    ["-m", "bench.attention", "--threads", "default"],
    ["-m", "bench.gru", "--threads", "inline"],
    ["-m", "bench.gru", "--threads", "default"],
    ["-m", "bench.mha", "--threads", "inline"],
    ["-m", "bench.mha", "--threads", "default"],
    ["-m", "bench.end_to_end"],
    ["-m", "bench.end_to_end", "--models", "dlrm", "--name", "end_to_end_dlrm"],
    ["-m", "bench.end_to_end", "--models", "din,dien", "--name", "end_to_end_attention"],
    ["-m", "bench.end_to_end", "--models", "two_tower,tfrs_retrieval", "--name", "end_to_end_retrieval"],
    ["-m", "bench.end_to_end", "--models", "tfrs_ranking", "--name", "end_to_end_ranking"],
    ["-m", "bench.end_to_end", "--models", "dlrm,wdl", "--name", "end_to_end_tables"],
    ["-m", "bench.end_to_end", "--models", "tfrs_dlrm,tfrs_dlrm_garden", "--name", "end_to_end_tfrs_dlrm"],
    ["-m", "bench.optimize_time"],
    ["-m", "bench.serving"],
    ["-m", "bench.serving_tune"],
    ["-m", "bench.peers"],
]


def main():
    for step in STEPS:
        print("$ python " + " ".join(step), flush=True)
        subprocess.run([sys.executable, *step], check=True)
    from bench import report
    report.render()
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
