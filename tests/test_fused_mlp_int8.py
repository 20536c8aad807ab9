"""Recopt>FusedMLP's int8 layers (oneDNN backend): integer products against
an exact simulation of the op's rounding (reference.fused_mlp int8_layers),
the error against fp32 inside the bound the rounding steps give, row answers
independent of the batch, and every path that must fall back to fp32."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference

RNG = np.random.default_rng(23)


def _int8_kernels():
    """oneDNN 3.2 multiplies int8 fast (brgemm) with AVX512-VNNI, AVX-VNNI or
    AMX; elsewhere FusedMLP runs its int8 layers in fp32 (checked below)."""
    if os.environ.get("RECOPT_ONEDNN") == "0" or os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in ("SSE41", "AVX", "AVX2"):
        return False
    with open("/proc/cpuinfo") as f:
        flags = next((line for line in f if line.startswith("flags")), "").split()
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


INT8 = _int8_kernels()


def _layers(dims, acts, scale=1.0):
    ws = [(RNG.standard_normal((a, b)) * scale / np.sqrt(a)).astype(np.float32) for a, b in zip(dims, dims[1:])]
    bs = [RNG.standard_normal(b).astype(np.float32) * 0.1 for b in dims[1:]]
    return ws, bs, list(acts), [0.2 if a == "leaky_relu" else 0.0 for a in acts]


def _mlp(ops, x, layers, **attrs):
    ws, bs, acts, alphas = layers
    return ops.recopt_fused_mlp(x, ws, bs, activations=acts, alphas=alphas, **attrs).numpy()


# relu before layer 1 makes its input uint8; tanh before layer 2 keeps int8.
STACK = ([80, 192, 96, 48, 1], ["relu", "tanh", "leaky_relu", "sigmoid"])


@pytest.mark.parametrize("rows", [1, 2, 17, 64, 600])
def test_int8_layers_match_the_exact_simulation(ops, rows):
    """Rounding and integer sums are simulated exactly; only the fp32
    epilogue's operation order may differ (an ulp, which can flip one
    rounding of the next layer's input: far below one int8 step)."""
    layers = _layers(*STACK)
    x = RNG.standard_normal((rows, 80)).astype(np.float32)
    got = _mlp(ops, x, layers, int8_layers=[0, 1, 2], gemm="onednn" if INT8 else "auto")
    fp32 = reference.fused_mlp(x, *layers).numpy()
    if not INT8:
        np.testing.assert_allclose(got, fp32, rtol=1e-5, atol=1e-5)
        return
    want = reference.fused_mlp(x, *layers, int8_layers=(0, 1, 2)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.abs(want - fp32).max() > 1e-4  # the rounding is real, and the simulation sees it
    np.testing.assert_allclose(got, fp32, rtol=5e-2, atol=5e-2)  # options.DEFAULT_TOLERANCE["int8"]


@pytest.mark.parametrize("act", ["linear", "relu"])
def test_one_layer_error_within_the_rounding_bound(ops, act):
    """|y - y_fp32| <= sum_k |x_k - x^_k||w_kn| + |x^_k||w_kn - w^_kn|
    <= s_x/2 sum_k |w_kn| + s_w[n]/2 sum_k |x^_k| (relu is 1-Lipschitz),
    plus fp32 rounding of the two sums."""
    layers = _layers([256, 64], [act])
    x = RNG.standard_normal((33, 256)).astype(np.float32) * np.linspace(0.01, 100, 33, dtype=np.float32)[:, None]
    got = _mlp(ops, x, layers, int8_layers=[0])
    fp32 = reference.fused_mlp(x, *layers).numpy()
    err = np.abs(got - fp32)
    if not INT8:
        np.testing.assert_allclose(got, fp32, rtol=1e-4, atol=1e-4)
        return
    w = layers[0][0]
    xq, sx = (t.numpy() for t in reference.quantize_rows(x))
    _, sw = (t.numpy() for t in reference.quantize_rows(w.T))
    bound = sx / 2 * np.abs(w).sum(0)[None, :] + sw.T / 2 * np.abs(xq * sx).sum(1, keepdims=True)
    slack = 1e-5 * (np.abs(x) @ np.abs(w) + 1)
    assert (err <= bound + slack).all(), float((err - bound - slack).max())
    assert err.max() > 0 and (err / bound).max() > 0.01  # not vacuous


def test_a_rows_answer_does_not_depend_on_the_batch(ops):
    """One scale per row: a row answers bit for bit the same alone, beside
    an outlier 1e4 times larger, or in a batch over two 512-row blocks."""
    layers = _layers(*STACK)
    x = RNG.standard_normal((700, 80)).astype(np.float32)
    x[3] *= 1e4
    whole = _mlp(ops, x, layers, int8_layers=[0, 1, 2])
    for r in (0, 5, 650):
        alone = _mlp(ops, x[r:r + 1], layers, int8_layers=[0, 1, 2])
        if INT8:
            np.testing.assert_array_equal(alone[0], whole[r])
        else:  # fp32: gemm="auto" may take another backend for one row
            np.testing.assert_allclose(alone[0], whole[r], rtol=1e-5, atol=1e-5)


def test_nan_inf_and_empty_fall_back_to_fp32(ops):
    """int8 cannot hold NaN or Inf: such a call runs in fp32 (NaN passes
    through as TensorFlow's ops pass it); an empty batch is empty."""
    layers = _layers([16, 32, 4], ["relu", "linear"])
    x = RNG.standard_normal((3, 16)).astype(np.float32)
    x[1, 5] = np.nan
    x[2, 0] = np.inf
    got = _mlp(ops, x, layers, int8_layers=[0, 1])
    want = reference.fused_mlp(x, *layers).numpy()
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert np.isnan(got[1]).all()
    np.testing.assert_array_equal(np.isnan(got[2]), np.isnan(want[2]))
    assert _mlp(ops, np.zeros((0, 16), np.float32), layers, int8_layers=[0]).shape == (0, 4)


def test_zero_rows_and_zero_weight_columns(ops):
    ws, bs, acts, alphas = _layers([32, 8], ["linear"])
    ws[0][:, 3] = 0.0
    x = RNG.standard_normal((4, 32)).astype(np.float32)
    x[2] = 0.0
    got = _mlp(ops, x, (ws, bs, acts, alphas), int8_layers=[0], gemm="onednn" if INT8 else "auto")
    np.testing.assert_allclose(got[2], bs[0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(got[:, 3], np.full(4, bs[0][3]), rtol=0, atol=1e-7)


def test_packed_runs_int8_layers_in_fp32(ops):
    layers = _layers([24, 40, 2], ["relu", "linear"])
    x = RNG.standard_normal((50, 24)).astype(np.float32)
    np.testing.assert_array_equal(_mlp(ops, x, layers, int8_layers=[0, 1], gemm="packed"),
                                  _mlp(ops, x, layers, gemm="packed"))


@pytest.mark.parametrize("attrs, message", [
    ({"int8_layers": [2]}, "int8_layers holds 2"),
    ({"int8_layers": [0, 0]}, "int8_layers holds 0"),
    ({"int8_layers": [0], "weights_bf16": True}, "int8_layers and weights_bf16 do not mix"),
])
def test_bad_int8_layers_are_rejected(ops, attrs, message):
    layers = _layers([4, 3, 2], ["relu", "linear"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _mlp(ops, np.ones((1, 4), np.float32), layers, **attrs)


_OTHER_PATH = """
import numpy as np, tensorflow as tf, tf_recopt
ops = tf_recopt.load_ops()
rng = np.random.default_rng(5)
ws = [rng.standard_normal((48, 64)).astype(np.float32), rng.standard_normal((64, 8)).astype(np.float32)]
bs = [np.zeros(64, np.float32), np.zeros(8, np.float32)]
x = rng.standard_normal((40, 48)).astype(np.float32)
y = ops.recopt_fused_mlp(x, ws, bs, activations=["relu", "linear"], alphas=[0., 0.], int8_layers=[0, 1]).numpy()
np.save({out!r}, y)
"""


@pytest.mark.parametrize("env", [{"RECOPT_ISA": "generic"}, {"RECOPT_ONEDNN": "0"}])
def test_other_paths(tmp_path, env):
    """RECOPT_ISA=generic rounds rows with the portable loop: the integers,
    and so the answer, are the AVX-512 loop's bit for bit. RECOPT_ONEDNN=0
    runs the int8 layers in fp32."""
    outs = {}
    for name, extra in (("default", {}), ("other", env)):
        out = str(tmp_path / f"{name}.npy")
        result = subprocess.run([sys.executable, "-c", _OTHER_PATH.format(out=out)], capture_output=True, text=True,
                                env={**os.environ, **extra})
        assert result.returncode == 0, result.stderr[-2000:]
        outs[name] = np.load(out)
    if "RECOPT_ISA" in env:
        if INT8:
            np.testing.assert_array_equal(outs["other"], outs["default"])
        else:  # fp32 hand kernels of two ISAs
            np.testing.assert_allclose(outs["other"], outs["default"], rtol=1e-4, atol=1e-4)
    else:
        rng = np.random.default_rng(5)
        ws = [rng.standard_normal((48, 64)).astype(np.float32), rng.standard_normal((64, 8)).astype(np.float32)]
        x = rng.standard_normal((40, 48)).astype(np.float32)
        fp32 = np.maximum(x @ ws[0], 0) @ ws[1]
        np.testing.assert_allclose(outs["other"], fp32, rtol=1e-4, atol=1e-3)
        if INT8:
            assert np.abs(outs["default"] - fp32).max() > 1e-3
