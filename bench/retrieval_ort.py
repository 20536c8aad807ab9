"""Diagnostic: Recopt>ScoreTopK alone (blocks16 as optimize() writes it for
the CPU, and rows) against ONNX Runtime's MatMul + TopK
(an ONNX graph built directly), stock TF and numpy's matmul (GEMV: the
bandwidth reference), one thread, interleaved. Locates the retrieval gap
that `make bench` shows against ONNX Runtime in the kernel or around it.

    python -m bench.retrieval_ort [--n 100000] [--k 100] [--dim 64] [--repeats 40]
    (RECOPT_ISA=generic|avx2 picks the kernel path, as for every op)
"""
import argparse
import os
import sys

import numpy as np

def _ort_session(cand, k):
    dim = cand.shape[1]
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["q", "ct"], ["s"]), helper.make_node("TopK", ["s", "k"], ["v", "i"], axis=-1)],
        "retrieval", [helper.make_tensor_value_info("q", TensorProto.FLOAT, [None, dim])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("i", TensorProto.INT64, None)],
        [numpy_helper.from_array(np.ascontiguousarray(cand.T), "ct"),
         numpy_helper.from_array(np.array([k], np.int64), "k")])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from bench import common
    common.set_threads("inline")
    import tensorflow as tf
    import tf_recopt
    from tf_recopt.ops import retrieval
    ops = tf_recopt.load_ops()
    rng = np.random.default_rng(0)
    cand = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    session = _ort_session(cand, args.k)
    matrix, scales = [tf.constant(a) for a in retrieval.encode(cand, "fp32")]
    blocks = tf.constant(retrieval.to_blocks(cand))
    cand_t, empty = tf.constant(cand), tf.zeros([0])
    rows = []
    for batch in (1, 8):
        q = rng.standard_normal((batch, args.dim)).astype(np.float32)
        q_t = tf.constant(q)
        stock = tf.function(lambda: tf.math.top_k(tf.matmul(q_t, cand_t, transpose_b=True), args.k))
        fused = tf.function(lambda: ops.recopt_score_top_k(q_t, blocks, scales, empty, args.k, layout="blocks16",
                                                           num_candidates=args.n))
        rows_layout = tf.function(lambda: ops.recopt_score_top_k(q_t, matrix, scales, empty, args.k))
        calls = {"onnxruntime": lambda: session.run(["i"], {"q": q})[0], "recopt": lambda: fused()[1].numpy(),
                 "recopt rows": lambda: rows_layout()[1].numpy(),
                 "stock": lambda: stock()[1].numpy(), "numpy_matmul": lambda: q @ cand.T}
        timings = common.time_calls(calls, warmup=3, repeats=args.repeats)
        rows += [{"batch": batch, "variant": v, "median_ms": m, "p99_ms": p99} for v, (m, p99) in timings.items()]
        print(f"n={args.n} d={args.dim} k={args.k} batch {batch}: " +
              "  ".join(f"{v} {m:.3f} ms" for v, (m, _) in timings.items()), file=sys.stderr)
    isa = os.environ.get("RECOPT_ISA", "")
    common.write_result(f"retrieval_ort_{args.n}_{args.dim}_{args.k}" + (f"_{isa}" if isa else ""), {
        "bench": "retrieval_ort", "machine": common.machine(), "rows": rows,
        "command": (f"RECOPT_ISA={isa} " if isa else "")
        + f"python -m bench.retrieval_ort --n {args.n} --k {args.k} --dim {args.dim} --repeats {args.repeats}"})


if __name__ == "__main__":
    main()
