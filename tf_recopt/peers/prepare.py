"""What each peer needs on disk, made once per model: tf-recopt's outputs
(custom ops and stock-ops only) and the tf2onnx conversion."""
import importlib.util
import os
import shutil
import subprocess
import sys
import time

from absl import logging

from tf_recopt.peers import describe_error

ONNX_OPSET = 17
# tf2onnx folds constants through TensorFlow and keeps copies: on a 0.7 GB
# model it takes minutes and ~15 GB. Past this, ONNX Runtime is reported as
# unable to run the model rather than holding up the whole suite.
CONVERT_TIMEOUT_S = 600


def prepare(src, workdir, label, peers):
    """label -> {"path": ..., "seconds": ...} or {"error": ...} per peer."""
    os.makedirs(workdir, exist_ok=True)
    out = {}
    for peer in peers:
        if _SAME_FILES.get(peer) in out:
            out[peer] = out[_SAME_FILES[peer]]
            continue
        logging.info("bench --peers: preparing %s for %s", peer, label)
        t0 = time.perf_counter()
        try:
            path = _MAKERS[peer](src, os.path.join(workdir, f"{label}_{peer}"))
            out[peer] = {"path": path, "seconds": round(time.perf_counter() - t0, 2)}
        except Exception as e:  # noqa: BLE001 - any failure is reported for this peer only
            out[peer] = {"error": describe_error(e)}
    return out


def _as_is(src, _dst):
    return src


def _optimized(custom_ops, precision="fp32"):
    def make(src, dst):
        import tf_recopt
        shutil.rmtree(dst, ignore_errors=True)
        tf_recopt.optimize(src, dst, custom_ops=custom_ops, precision=precision)
        return dst
    return make


def _onnx(src, dst):
    """tf2onnx in a subprocess: its converter imports and configures
    TensorFlow its own way, and a crash there must not end the run."""
    _require("onnxruntime", "tf2onnx")
    path = dst + ".onnx"
    return _convert("tf2onnx", [sys.executable, "-m", "tf2onnx.convert", "--saved-model", src, "--output", path,
                                "--opset", str(ONNX_OPSET), "--signature_def", "serving_default"],
                    path, ("Error", "error"))


def _openvino(src, dst):
    """ov.convert_model in a subprocess, saved as IR: the converter (and the
    telemetry it starts, which lingers seconds after a failed conversion)
    stays out of the process that times the peers."""
    _require("openvino")
    path = dst + ".xml"
    code = ("import sys, openvino as ov; "
            "ov.save_model(ov.convert_model(sys.argv[1]), sys.argv[2], compress_to_fp16=False)")
    return _convert("openvino convert_model", [sys.executable, "-c", code, src, path], path,
                    ("conversion rule", "Error"))


def _require(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(f"not installed ({', '.join(missing)}): pip install 'tf-recopt[bench]'")


def _convert(what, cmd, path, markers):
    """Runs a converter; its last stderr line holding one of `markers` names a failure."""
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{what} did not finish in {CONVERT_TIMEOUT_S} s") from e
    if result.returncode != 0:
        lines = [l for l in result.stderr.splitlines() if any(m in l for m in markers)]
        raise RuntimeError(f"{what} failed: " + (lines[-1] if lines else result.stderr[-400:]).strip())
    return path


_MAKERS = {"stock": _as_is, "xla": _as_is, "recopt": _optimized(True), "recopt_stock": _optimized(False),
           "onnxruntime": _onnx, "openvino": _openvino, "stock_session": _as_is, "recopt_session": _optimized(True),
           "recopt_bf16_session": _optimized(True, "bf16"), "recopt_int8_session": _optimized(True, "int8")}
# Peers that differ only in how they call a model another peer already made.
_SAME_FILES = {"recopt_session": "recopt", "openvino_bf16": "openvino"}
