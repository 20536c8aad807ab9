"""`tf-recopt bench --peers`: each model against what users already have,
side by side in one run: stock TensorFlow, TensorFlow + XLA
(jit_compile=True), ONNX Runtime on the tf2onnx conversion (CPU provider),
OpenVINO on its own conversion (`ov.convert_model` of the SavedModel;
`openvino` forces f32, `openvino_bf16` asks for bf16, its default on CPUs
with AVX512_BF16 or AMX), and tf-recopt's output with and without custom
ops; `recopt_bf16_session` and `recopt_int8_session` are optimize()'s
precision="bf16" and "int8" outputs on the Session path. TF peers are called as
Python users call them (the loaded signature); `stock_session` and
`recopt_session` run the same SavedModels through a v1 Session callable, the
path TF Serving and `tf-recopt serve` take, without TF's Python function-call
overhead.

Modules: prepare.py (optimized copies and the ONNX conversion, once per
model), runners.py (one callable per peer), measure.py (parity, interleaved
timing and the SLA search for one model in one threading mode; run in its
own process because TensorFlow fixes its thread pools at start-up),
suite.py (orchestration, JSON, terminal table), plots.py (PNGs).
Optional peers come from `pip install tf-recopt[bench]`; a missing or
failing peer is reported with its error, never dropped.
"""
PEERS = ("stock", "xla", "onnxruntime", "openvino", "openvino_bf16", "recopt", "recopt_stock", "stock_session",
         "recopt_session", "recopt_bf16_session", "recopt_int8_session")
# Parity a reduced-precision peer is held to: (rtol, atol) as optimize()'s
# default tolerances for that precision (tf_recopt.options.DEFAULT_TOLERANCE).
REDUCED_PRECISION_TOLERANCE = {"openvino_bf16": (2e-2, 5e-3), "recopt_bf16_session": (2e-2, 5e-3),
                               "recopt_int8_session": (5e-2, 5e-2)}
BASELINE = "stock"


def describe_error(e, limit=400):
    """'Type: first line of the message', how a peer that cannot run is reported."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: " + (lines[0] if lines else repr(e))[:limit]
