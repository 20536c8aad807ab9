"""Recopt>FusedMLP against its pure-TF reference, every activation and shape
edge, on both backends (gemm="packed": the hand kernels; gemm="onednn")."""
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference

RNG = np.random.default_rng(7)


def _layers(dims, acts):
    ws = [(RNG.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32) for a, b in zip(dims, dims[1:])]
    bs = [RNG.standard_normal(b).astype(np.float32) * 0.1 for b in dims[1:]]
    alphas = [0.2 if a == "leaky_relu" else 0.0 for a in acts]
    return ws, bs, list(acts), alphas


def _run(ops, x, ws, bs, acts, alphas, gemm="auto"):
    return ops.recopt_fused_mlp(x, ws, bs, activations=acts, alphas=alphas, gemm=gemm).numpy()


# Every fp32 test runs on each backend; "auto" is covered by the tests that
# leave gemm out and by test_fused_mlp_onednn.py.
GEMMS = pytest.mark.parametrize("gemm", ["packed", "onednn"])


@GEMMS
@pytest.mark.parametrize("act", reference.ACTIVATION_NAMES)
def test_each_activation_matches_reference(ops, act, gemm):
    ws, bs, acts, alphas = _layers([37, 45], [act])
    x = RNG.standard_normal((19, 37)).astype(np.float32) * 3
    got = _run(ops, x, ws, bs, acts, alphas, gemm)
    want = reference.fused_mlp(x, ws, bs, acts, alphas).numpy()
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@GEMMS
@pytest.mark.parametrize("rows", [0, 1, 5, 6, 7, 48, 49, 513, 1100])
def test_batch_sizes_and_deep_chain(ops, rows, gemm):
    ws, bs, acts, alphas = _layers([13, 64, 17, 33, 1], ["relu", "tanh", "relu6", "sigmoid"])
    x = RNG.standard_normal((rows, 13)).astype(np.float32)
    got = _run(ops, x, ws, bs, acts, alphas, gemm)
    assert got.shape == (rows, 1)
    np.testing.assert_allclose(got, reference.fused_mlp(x, ws, bs, acts, alphas).numpy(), rtol=1e-5, atol=1e-5)


def test_rank3_input_keeps_leading_dims(ops):
    ws, bs, acts, alphas = _layers([8, 16, 4], ["relu", "linear"])
    x = RNG.standard_normal((3, 5, 8)).astype(np.float32)
    got = _run(ops, x, ws, bs, acts, alphas)
    assert got.shape == (3, 5, 4)
    np.testing.assert_allclose(got, reference.fused_mlp(x, ws, bs, acts, alphas).numpy(), rtol=1e-5, atol=1e-5)


@GEMMS
def test_nan_and_inf_propagate_like_tensorflow(ops, gemm):
    ws, bs, acts, alphas = _layers([4, 8], ["linear"])
    x = np.ones((3, 4), np.float32)
    x[0, 1], x[1, 2] = np.nan, np.inf
    got = _run(ops, x, ws, bs, acts, alphas, gemm)
    want = reference.fused_mlp(x, ws, bs, acts, alphas).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5)


def test_mismatched_dims_name_the_op(ops):
    ws, bs, acts, alphas = _layers([4, 8], ["relu"])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="(?i)(rows|dimension|shape)"):
        _run(ops, np.ones((2, 5), np.float32), ws, bs, acts, alphas)


def test_unknown_activation_is_rejected(ops):
    ws, bs, _, alphas = _layers([4, 8], ["relu"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="unknown activation 'mish'"):
        _run(ops, np.ones((2, 4), np.float32), ws, bs, ["mish"], alphas)


def test_multithreaded_large_batch_matches(ops):
    ws, bs, acts, alphas = _layers([64, 256, 128, 1], ["relu", "relu", "sigmoid"])
    x = RNG.standard_normal((4096, 64)).astype(np.float32)
    np.testing.assert_allclose(_run(ops, x, ws, bs, acts, alphas),
                               reference.fused_mlp(x, ws, bs, acts, alphas).numpy(), rtol=1e-5, atol=1e-5)


_ISA_SCRIPT = """
import numpy as np, tensorflow as tf, tf_recopt
from tf_recopt.ops import reference
ops = tf_recopt.load_ops()
rng = np.random.default_rng(0)
ws = [rng.standard_normal((33, 70)).astype(np.float32), rng.standard_normal((70, 3)).astype(np.float32)]
bs = [rng.standard_normal(70).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
x = rng.standard_normal((101, 33)).astype(np.float32)
got = ops.recopt_fused_mlp(x, ws, bs, activations=["gelu", "linear"], alphas=[0., 0.], gemm="packed").numpy()
want = reference.fused_mlp(x, ws, bs, ["gelu", "linear"], [0., 0.]).numpy()
np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
for k, bf16 in ((9, False), (1100, False), (1100, True)):   # one-column layers: the dot-product path
    w, b = (rng.standard_normal((k, 1)) / np.sqrt(k)).astype(np.float32), np.array([0.3], np.float32)
    x = rng.standard_normal((37, k)).astype(np.float32)
    got = ops.recopt_fused_mlp(x, [w], [b], activations=["sigmoid"], alphas=[0.], weights_bf16=bf16,
                               gemm="packed").numpy()
    want = reference.fused_mlp(x, [w], [b], ["sigmoid"], [0.], weights_bf16=bf16).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_isa_path_the_cpu_supports(isa):
    """RECOPT_ISA forces a path of the hand kernels; one the CPU lacks falls
    back to the best one."""
    result = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], capture_output=True, text=True,
                            env={**__import__("os").environ, "RECOPT_ISA": isa})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


_THREADS_SCRIPT = """
import numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads({threads})
import tf_recopt
from tf_recopt.ops import reference
ops = tf_recopt.load_ops()
rng = np.random.default_rng(1)
dims = [24, 200, 40, 3]
ws = [rng.standard_normal((a, b)).astype(np.float32) for a, b in zip(dims, dims[1:])]
bs = [rng.standard_normal(b).astype(np.float32) for b in dims[1:]]
acts = ["relu", "tanh", "linear"]
for gemm in ("packed", "onednn", "auto"):
    for rows in (1, 5, 48, 49, 200, 700):
        x = rng.standard_normal((rows, 24)).astype(np.float32)
        got = ops.recopt_fused_mlp(x, ws, bs, activations=acts, alphas=[0.] * 3, gemm=gemm).numpy()
        want = reference.fused_mlp(x, ws, bs, acts, [0.] * 3).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=gemm)
print("ok")
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_row_and_column_sharding_agree(threads):
    """intra-op 1 runs every row block inline; more threads shard the blocks:
    both must give the reference answer at block edges (48, 49 rows)."""
    result = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT.format(threads=threads)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


@GEMMS
@pytest.mark.parametrize("act", reference.ACTIVATION_NAMES)
def test_activation_over_the_whole_float_range(ops, act, gemm):
    """A 1x1 weight of 1 and zero bias: the op's output is act(x) itself,
    checked on tiny, moderate, saturating and non-finite inputs (vectorised
    exp/tanh, NaN propagation). A single column keeps inf * 0 out of the sums."""
    values = np.array([0.0, -0.0, 1e-6, -1e-6, 0.03, -0.07, 0.5, -0.9, 1.0, 2.5, -3.3, 8.0, -9.0, 15.5, -17.0,
                       20.0, -30.0, 50.0, -80.0, 88.0, -88.0, 95.0, -104.0, np.inf, -np.inf, np.nan],
                      np.float32)
    x = values.reshape(-1, 1)
    w, b = np.ones((1, 1), np.float32), np.zeros(1, np.float32)
    alpha = [0.2 if act == "leaky_relu" else 0.0]
    got = _run(ops, x, [w], [b], [act], alpha, gemm)
    want = reference.fused_mlp(x, [w], [b], [act], alpha).numpy()
    np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("k", [1, 7, 16, 40, 512, 513, 1100])
@pytest.mark.parametrize("rows", [0, 1, 5, 1000])
def test_one_column_layer_is_a_dot_product_per_row(ops, k, rows):
    """n == 1 (logit layers) runs as row-by-weights dot products, k in
    chunks of 512: chunk edges, vector tails and every activation class."""
    for act, bf16 in (("linear", False), ("relu", False), ("softplus", False), ("sigmoid", True)):
        ws, bs, acts, alphas = _layers([k, 1], [act])
        x = RNG.standard_normal((rows, k)).astype(np.float32)
        got = ops.recopt_fused_mlp(x, ws, bs, activations=acts, alphas=alphas, weights_bf16=bf16,
                                   gemm="packed").numpy()
        want = reference.fused_mlp(x, ws, bs, acts, alphas, weights_bf16=bf16).numpy()
        assert got.shape == (rows, 1)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"{act} bf16={bf16}")


@GEMMS
def test_one_column_layer_propagates_nan_and_inf(ops, gemm):
    w, b = np.array([[1.0], [2.0], [0.5]], np.float32), np.zeros(1, np.float32)
    x = np.array([[1, 1, 1], [np.nan, 0, 0], [np.inf, 0, 0], [-np.inf, 1, 1]], np.float32)
    got = _run(ops, x, [w], [b], ["linear"], [0.0], gemm)
    np.testing.assert_array_equal(got.reshape(-1), np.array([3.5, np.nan, np.inf, -np.inf], np.float32))


@pytest.mark.parametrize("rows", [0, 1, 7, 130])
def test_bf16_weights_match_the_bf16_rounded_reference(ops, rows):
    """The hand kernels' bf16 mode is exact fp32 arithmetic on bf16-rounded
    weights: the reference rounds with TensorFlow's own cast, so fp32
    tolerance applies (the oneDNN bf16 path: test_fused_mlp_onednn.py)."""
    ws, bs, acts, alphas = _layers([37, 70, 5], ["gelu_tanh", "linear"])
    x = RNG.standard_normal((rows, 37)).astype(np.float32)
    got = ops.recopt_fused_mlp(x, ws, bs, activations=acts, alphas=alphas, weights_bf16=True,
                               gemm="packed").numpy()
    want = reference.fused_mlp(x, ws, bs, acts, alphas, weights_bf16=True).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if rows:
        fp32 = reference.fused_mlp(x, ws, bs, acts, alphas).numpy()
        assert np.abs(got - fp32).max() > 1e-5  # the rounding is real
        np.testing.assert_allclose(got, fp32, rtol=5e-2, atol=5e-2)
