"""optimize(device="gpu"): only rewrites whose ops have GPU kernels, within
the GPU kernels' limits. Runs on the CPU: the rewritten graphs must still
give TensorFlow's answers (parity is checked wherever optimize() runs)."""
import json

import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from grappler_passes import UnknownPassError, resolve_passes, run_pipeline
from grappler_passes.fuse_topk import GPU_MAX_DIM, GPU_MAX_K
from tests.conftest import run_cli, saved_model_nodes
from tests.graph_util import frozen_graph, ops_of, run_graph
from tf_recopt.options import OptimizeOptions

RNG = np.random.default_rng(3)
N = 20_000


def _optimize(fn, spec, feed, device):
    graph_def, inputs, outputs = frozen_graph(fn, spec)
    protected = {n.split(":")[0] for n in inputs + outputs}
    options = OptimizeOptions(device=device)
    optimized, results = run_pipeline(graph_def, protected, passes=["fuse_topk", "prune_dead_nodes"],
                                      options=options)
    want = run_graph(graph_def, inputs, outputs, [feed])
    got = run_graph(optimized, inputs, outputs, [feed])
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)
    reasons = [r for res in results for _, r in res.skipped]
    _optimize.last = optimized
    return ops_of(optimized), reasons


def test_options_accept_gpu_only_as_a_new_device():
    OptimizeOptions(device="gpu").validate_fields()
    with pytest.raises(ValueError, match="device='tpu'"):
        OptimizeOptions(device="tpu").validate_fields()


def test_gpu_order_drops_passes_without_gpu_kernels():
    cpu = [p.name for p in resolve_passes()]
    gpu = [p.name for p in resolve_passes(device="gpu")]
    assert {"fuse_embedding", "fuse_interaction", "fuse_attention", "fuse_gru", "fuse_mha"} <= set(cpu)
    assert not {"fuse_embedding", "fuse_interaction", "fuse_attention", "fuse_gru", "fuse_mha"} & set(gpu)
    assert {"fuse_topk", "fuse_dense"} <= set(gpu)
    with pytest.raises(UnknownPassError, match="fuse_embedding.*no GPU kernel"):
        resolve_passes(["fuse_embedding", "fuse_dense"], device="gpu")
    assert resolve_passes(["fuse_embedding"], custom_ops=False, device="gpu") == []


def test_gpu_score_topk_within_limits(ops):
    c = RNG.integers(-4, 5, (N, 16)).astype(np.float32)
    q = RNG.integers(-4, 5, (3, 16)).astype(np.float32)
    got, _ = _optimize(lambda x: tf.math.top_k(tf.matmul(x, c, transpose_b=True), 100),
                       tf.TensorSpec([None, 16], tf.float32), q, "gpu")
    assert "Recopt>ScoreTopK" in got and "TopKV2" not in got
    # The GPU kernel reads rows; the CPU one gets the blocks16 layout.
    layouts = [n.attr["layout"].s for n in _optimize.last.node if n.op == "Recopt>ScoreTopK"]
    assert layouts == [b"rows"]
    _optimize(lambda x: tf.math.top_k(tf.matmul(x, c, transpose_b=True), 100),
              tf.TensorSpec([None, 16], tf.float32), q, "cpu")
    assert [n.attr["layout"].s for n in _optimize.last.node if n.op == "Recopt>ScoreTopK"] == [b"blocks16"]


def test_gpu_leaves_k_above_the_limit_to_tensorflow(ops):
    c = RNG.integers(-4, 5, (N, 16)).astype(np.float32)
    q = RNG.integers(-4, 5, (2, 16)).astype(np.float32)
    fn = lambda x: tf.math.top_k(tf.matmul(x, c, transpose_b=True), GPU_MAX_K + 1)  # noqa: E731
    got, reasons = _optimize(fn, tf.TensorSpec([None, 16], tf.float32), q, "gpu")
    assert "TopKV2" in got and not {"Recopt>ScoreTopK", "Recopt>TopK"} & set(got)
    assert any(f"above the GPU kernels' {GPU_MAX_K}" in r for r in reasons)
    got_cpu, _ = _optimize(fn, tf.TensorSpec([None, 16], tf.float32), q, "cpu")
    assert "Recopt>ScoreTopK" in got_cpu  # the CPU kernel has no such limit


def test_gpu_wide_queries_keep_the_matmul_but_take_the_topk(ops):
    d = GPU_MAX_DIM + 8
    c = RNG.standard_normal((N, d)).astype(np.float32)
    q = RNG.standard_normal((2, d)).astype(np.float32)
    got, reasons = _optimize(lambda x: tf.math.top_k(tf.matmul(x, c, transpose_b=True), 50),
                             tf.TensorSpec([None, d], tf.float32), q, "gpu")
    assert "MatMul" in got and "Recopt>TopK" in got and "Recopt>ScoreTopK" not in got


def test_gpu_topk_is_float_only(ops):
    x = RNG.integers(0, 1000, (2, N)).astype(np.int32)
    fn = lambda v: tf.math.top_k(v * 2, 10)  # noqa: E731
    got, reasons = _optimize(fn, tf.TensorSpec([None, N], tf.int32), x, "gpu")
    assert "TopKV2" in got and any("float32 only" in r for r in reasons)
    got_cpu, _ = _optimize(fn, tf.TensorSpec([None, N], tf.int32), x, "cpu")
    assert "Recopt>TopK" in got_cpu


def test_optimize_dlrm_for_gpu(ops, zoo_dir, tmp_path):
    out = tmp_path / "dlrm_gpu"
    report = tf_recopt.optimize(zoo_dir("dlrm"), str(out), device="gpu")
    assert report.written and report.parity_ok and report.device == "gpu"
    assert saved_model_nodes(str(out), "Recopt>FusedMLP")
    assert not saved_model_nodes(str(out), "Recopt>FusedEmbeddingLookup")
    assert not saved_model_nodes(str(out), "Recopt>DotInteraction")


def test_cli_device_gpu_on_two_tower(ops, zoo_dir, tmp_path):
    out, report = tmp_path / "tt_gpu", tmp_path / "report.json"
    r = run_cli("optimize", zoo_dir("two_tower"), str(out), "--device", "gpu", "--report", str(report))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(report.read_text())["device"] == "gpu"
    assert saved_model_nodes(str(out), "Recopt>ScoreTopK")
