"""Recopt>FusedMLP's oneDNN backend: bf16 arithmetic against its oracle,
gemm="auto"'s choice, concurrent calls over many row counts, and the
fallback when oneDNN is missing. Numerics of every activation and shape on
both backends: test_fused_mlp_op.py."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference

RNG = np.random.default_rng(11)


def _layers(dims, acts):
    ws = [(RNG.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32) for a, b in zip(dims, dims[1:])]
    bs = [RNG.standard_normal(b).astype(np.float32) * 0.1 for b in dims[1:]]
    return ws, bs, list(acts), [0.0] * len(acts)


def _mlp(ops, x, layers, **attrs):
    ws, bs, acts, alphas = layers
    return ops.recopt_fused_mlp(x, ws, bs, activations=acts, alphas=alphas, **attrs).numpy()


@pytest.mark.parametrize("rows", [1, 3, 64, 600])
def test_bf16_products_match_the_rounded_inputs_oracle(ops, rows):
    """oneDNN's weights_bf16 rounds weights and each layer's input to bf16 and
    sums in fp32: against an oracle that rounds the same, only the summation
    order differs (fp32 tolerance); against fp32 the rounding is visible and
    stays inside the bf16 parity budget (options.DEFAULT_TOLERANCE)."""
    layers = _layers([96, 256, 64, 1], ["relu", "swish", "sigmoid"])
    x = RNG.standard_normal((rows, 96)).astype(np.float32)
    got = _mlp(ops, x, layers, weights_bf16=True, gemm="onednn")
    want = reference.fused_mlp(x, *layers, weights_bf16=True, inputs_bf16=True).numpy()
    # 2^-8 relative per rounded hidden value can flip one more rounding in
    # the next layer's input: a few fp32 ulps of a unit-sized logit.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    fp32 = reference.fused_mlp(x, *layers).numpy()
    weights_only = reference.fused_mlp(x, *layers, weights_bf16=True).numpy()
    if rows > 1:
        assert np.abs(want - weights_only).max() > 1e-5  # input rounding is real and the oracle sees it
    np.testing.assert_allclose(got, fp32, rtol=2e-2, atol=5e-3)


def test_bf16_nan_and_empty_batch(ops):
    layers = _layers([16, 32, 4], ["relu", "linear"])
    x = np.ones((3, 16), np.float32)
    x[1, 5] = np.nan
    got = _mlp(ops, x, layers, weights_bf16=True, gemm="onednn")
    assert np.isnan(got[1]).all() and not np.isnan(got[[0, 2]]).any()
    assert _mlp(ops, np.zeros((0, 16), np.float32), layers, weights_bf16=True, gemm="onednn").shape == (0, 4)


@pytest.mark.parametrize("bf16", [False, True])
def test_auto_runs_one_backend_bit_for_bit(ops, bf16):
    """gemm="auto" picks a backend per call: its answer is bitwise that
    backend's. fp32 takes the hand kernels below 16 rows per thread on every
    CPU, and oneDNN at 512 rows per thread (AVX2 from 32, AVX-512 from 16)."""
    layers = _layers([40, 128, 8], ["tanh", "linear"])
    for rows in (1, 5, 64, 2048):
        x = RNG.standard_normal((rows, 40)).astype(np.float32)
        auto = _mlp(ops, x, layers, weights_bf16=bf16)
        packed = _mlp(ops, x, layers, weights_bf16=bf16, gemm="packed")
        onednn = _mlp(ops, x, layers, weights_bf16=bf16, gemm="onednn")
        assert np.array_equal(auto, packed) or np.array_equal(auto, onednn), rows
        if not bf16 and rows == 1:
            np.testing.assert_array_equal(auto, packed)
        if not bf16 and rows == 2048:
            np.testing.assert_array_equal(auto, onednn)


def test_concurrent_calls_over_more_row_counts_than_the_cache_keeps(ops):
    """Threads share one kernel and its primitive cache (64 row counts kept):
    80 row counts from 4 threads evict shapes other threads may be running."""
    layers = _layers([24, 48, 3], ["relu", "linear"])
    fn = tf.function(lambda x: ops.recopt_fused_mlp(x, layers[0], layers[1], activations=layers[2],
                                                    alphas=layers[3], gemm="onednn"),
                     input_signature=[tf.TensorSpec([None, 24], tf.float32)])
    inputs = {rows: RNG.standard_normal((rows, 24)).astype(np.float32) for rows in range(1, 81)}
    wants = {rows: reference.fused_mlp(x, *layers).numpy() for rows, x in inputs.items()}
    errors = []

    def worker(offset):
        try:
            for rows in list(inputs)[offset::4] + list(inputs)[::7]:
                np.testing.assert_allclose(fn(inputs[rows]).numpy(), wants[rows], rtol=1e-5, atol=1e-5)
        except Exception as exc:  # noqa: BLE001 - reported below with the thread's rows
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


_NO_ONEDNN = """
import numpy as np, tensorflow as tf, tf_recopt
from tf_recopt.ops import reference
ops = tf_recopt.load_ops()
w, b = np.eye(3, dtype=np.float32), np.zeros(3, np.float32)
x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
got = ops.recopt_fused_mlp(x, [w], [b], activations=["relu"], alphas=[0.]).numpy()
np.testing.assert_array_equal(got, np.maximum(x, 0))
try:
    ops.recopt_fused_mlp(x, [w], [b], activations=["relu"], alphas=[0.], gemm="onednn")
except tf.errors.OpError as exc:
    print("refused:", exc.message)
"""


@pytest.mark.parametrize("env", [{"RECOPT_ONEDNN": "0"}, {"RECOPT_ONEDNN_LIBRARY": "/nonexistent/libdnnl.so.3"}])
def test_without_onednn_auto_falls_back_and_onednn_names_why(env):
    result = subprocess.run([sys.executable, "-c", _NO_ONEDNN], capture_output=True, text=True,
                            env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused:" in result.stdout and "gemm=onednn but" in result.stdout, result.stdout
    assert ("RECOPT_ONEDNN=0" if "RECOPT_ONEDNN" in env else "/nonexistent/libdnnl.so.3") in result.stdout


def test_bad_gemm_value_is_rejected(ops):
    layers = _layers([4, 2], ["relu"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="gemm must be auto, onednn or packed"):
        _mlp(ops, np.ones((1, 4), np.float32), layers, gemm="mkl")


_BF16_WITHOUT_AMX = """
import numpy as np, tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
import tf_recopt
ops = tf_recopt.load_ops()
rng = np.random.default_rng(3)
ws = [rng.standard_normal((64, 96)).astype(np.float32), rng.standard_normal((96, 4)).astype(np.float32)]
bs = [np.zeros(96, np.float32), np.zeros(4, np.float32)]
x = rng.standard_normal((4096, 64)).astype(np.float32)
run = lambda gemm: ops.recopt_fused_mlp(x, ws, bs, activations=["relu", "linear"], alphas=[0., 0.],
                                        weights_bf16=True, gemm=gemm).numpy()
np.testing.assert_array_equal(run("auto"), run("packed"))
print("auto took the hand kernels")
"""


def test_bf16_without_amx_never_takes_onednn_on_many_threads():
    """Without AMX, bf16 gemm="auto" never runs oneDNN (its AutoMinRows is
    2^62): with two intra-op threads that bound once overflowed when
    multiplied by the threads, and auto took oneDNN's slow bf16 kernels
    (0.29x stock at batch 512, bench.mlp with AVX512-VNNI forced)."""
    result = subprocess.run([sys.executable, "-c", _BF16_WITHOUT_AMX], capture_output=True, text=True,
                            env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "auto took the hand kernels" in result.stdout
