"""Operating the server: a weight refresh under load, a broken new version,
server-side batching, op libraries given on the command line."""
import os
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import tf_recopt
from tests.conftest import REPO
from tests.serving_util import export_example_model
from tf_recopt.serving.launch import Server, free_port, http
from tests.test_serving_server import _feeds, _in_process, _predict_request

W = np.array([[1.0, -1.0], [0.5, 2.0]], np.float32)


def _publish(base, version, shift=None):
    """Writes a version next to the model and renames it into place, as a
    training pipeline should (a half-copied directory is never polled)."""
    staging = os.path.join(os.path.dirname(base), f".staging_{version}")
    if shift is None:
        os.makedirs(staging)
        with open(os.path.join(staging, "saved_model.pb"), "wb") as f:
            f.write(b"not a SavedModel")
    else:
        export_example_model(staging, shift)
    os.rename(staging, os.path.join(base, str(version)))


def _predict_x(stub, x):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.model_spec.signature_name = "predict_x"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    response = stub.Predict(request, timeout=30)
    return response.model_spec.version.value, tf.make_ndarray(response.outputs["y"])


def test_new_version_under_load_drops_no_request_and_a_broken_one_keeps_the_old(tmp_path):
    base = str(tmp_path / "m")
    os.makedirs(base)
    _publish(base, 1, shift=0.0)
    with Server("--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
                "--max_num_load_retries=0") as server:
        server.wait_version("m", 1)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.target))
        x = np.array([[1.0, 2.0]], np.float32)
        stop, seen, errors = threading.Event(), [], []

        def client():
            while not stop.is_set():
                try:
                    seen.append(_predict_x(stub, x))
                except grpc.RpcError as exc:
                    errors.append(exc)
        clients = [threading.Thread(target=client) for _ in range(4)]
        for c in clients:
            c.start()
        try:
            time.sleep(1.0)
            _publish(base, 2, shift=10.0)
            server.wait_version("m", 2)
            server.wait_version("m", 1, state="END")
            time.sleep(1.0)
        finally:
            stop.set()
            for c in clients:
                c.join(60)
        assert not errors, errors[:3]
        versions = [v for v, _ in seen]
        assert 1 in versions and 2 in versions
        assert versions.index(2) > versions.index(1) and versions[-1] == 2
        for version, y in seen:
            np.testing.assert_allclose(y, x @ W + (10.0 if version == 2 else 0.0), rtol=1e-6)

        _publish(base, 3)
        body = server.wait_version("m", 3, state="END")
        broken = next(v for v in body["model_version_status"] if v["version"] == "3")
        assert broken["status"]["error_code"] == "UNKNOWN"
        assert "version 3 of model m" in broken["status"]["error_message"]
        assert _predict_x(stub, x)[0] == 2
        assert http("GET", f"{server.url}/v1/models/m/versions/2")[1]["model_version_status"][0]["state"] == \
            "AVAILABLE"


@pytest.fixture(scope="module")
def optimized_dlrm(ops, zoo_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("batching") / "dlrm"
    src = zoo_dir("dlrm")
    assert tf_recopt.optimize(src, str(base / "1")).parity_ok
    return src, str(base)


def test_batching_merges_concurrent_requests_with_unchanged_answers(optimized_dlrm, tmp_path):
    src, base = optimized_dlrm
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 16 }\nbatch_timeout_micros { value: 100000 }\n"
                      "num_batch_threads { value: 1 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n")
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text("prometheus_config { enable: true }")
    # The recopt library given the way any other op library would be.
    with Server("--model_name=dlrm", f"--model_base_path={base}", "--enable_batching",
                f"--batching_parameters_file={params}", f"--monitoring_config_file={monitoring}",
                "--load_recopt_ops=false", f"--custom_op_paths={tf_recopt.library_path()}") as server:
        server.wait_version("dlrm", 1)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(server.target))
        # 21 rows in all: not a sum of allowed sizes, so some batch is padded.
        requests = [_feeds(src, 1 + i % 3, seed=i) for i in range(11)]
        results = [None] * len(requests)

        def call(i):
            response = stub.Predict(_predict_request("dlrm", requests[i]), timeout=60)
            results[i] = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for feeds, got in zip(requests, results):
            expected = _in_process(os.path.join(base, "1"), feeds)
            for k in expected:
                np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6)
        text = http("GET", f"{server.url}/monitoring/prometheus/metrics")[1]
        batches = _metric(text, ':tensorflow:serving:batching_session:processed_batch_size_count{model_name="dlrm"}')
        padding = _metric(text, ':tensorflow:serving:batching_session:padding_size_sum{model_name="dlrm"}')
        assert 1 <= batches < len(requests) and padding > 0, text
        big = _feeds(src, 20)
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(_predict_request("dlrm", big), timeout=60)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Task size 20 is larger than maximum input batch size 16" in e.value.details()


def _metric(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not in metrics")


def test_model_needing_an_unloaded_op_library_reports_why(optimized_dlrm):
    _, base = optimized_dlrm
    with Server("--model_name=dlrm", f"--model_base_path={base}", "--load_recopt_ops=false",
                "--max_num_load_retries=0") as server:
        body = server.wait_version("dlrm", 1, state="END")
        message = body["model_version_status"][0]["status"]["error_message"]
        assert "Recopt>" in message, message
        code, answer = http("POST", f"{server.url}/v1/models/dlrm:predict", {"instances": [1]})
        assert code == 404 and "Latest(dlrm)" in answer["error"]


@pytest.mark.parametrize("flags, fragment", [
    (["--custom_op_paths=/nonexistent/libfoo.so"], "no such op library: /nonexistent/libfoo.so"),
    (["--enable_batching", "--batching_parameters_file=/nonexistent/b.config"], "/nonexistent/b.config"),
    (["--port=0"], "both --port and --rest_api_port are disabled"),
    (["--model_config_file=/x.config"], "give exactly one of --model_base_path"),
])
def test_bad_start_flags_exit_with_the_fault_named(tmp_path, flags, fragment):
    cmd = [sys.executable, "-m", "tf_recopt.cli", "serve", f"--port={free_port()}", "--rest_api_port=0",
           f"--model_base_path={tmp_path}", *flags]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and fragment in result.stderr, result.stderr[-2000:]
