"""`tf-recopt serve` end to end: a server subprocess on loopback serving
optimized zoo models, driven with TF Serving's own gRPC stubs and over
HTTP; answers must equal the in-process SavedModel's."""
import base64
import os
import shutil

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_service_pb2_grpc, predict_pb2, prediction_log_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

import tf_recopt
from tf_recopt import verify
from tf_recopt.benchmark import sample_feeds
from tests.conftest import assert_outputs_close
from tests.serving_util import example, export_example_model, model_config
from tf_recopt.serving.launch import Server, http

ZOO = ["dlrm", "wdl", "tfrs_retrieval"]


def _write_warmup(version_dir):
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "predict_x"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((3, 2), np.float32)))
    os.makedirs(os.path.join(version_dir, "assets.extra"), exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")) as w:
        w.write(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                .SerializeToString())


@pytest.fixture(scope="module")
def served_models(ops, zoo_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    models, sources = {}, {}
    for name in ZOO:
        sources[name] = zoo_dir(name)
        report = tf_recopt.optimize(sources[name], str(root / name / "1"))
        assert report.parity_ok
        models[name] = str(root / name)
    export_example_model(str(root / "examples" / "1"))
    _write_warmup(str(root / "examples" / "1"))
    models["examples"] = str(root / "examples")
    cfg = model_config(str(root / "models.config"), models, labels={"dlrm": {"stable": 1}})
    (root / "monitoring.config").write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
    return root, models, sources, cfg


# Every test runs on the C++ request path (the default) and on the Python one.
@pytest.fixture(scope="module", params=["native", "python"])
def served(served_models, request):
    root, models, sources, cfg = served_models
    server = Server(f"--model_config_file={cfg}", f"--monitoring_config_file={root / 'monitoring.config'}",
                    "--file_system_poll_wait_seconds=0", f"--native_request_path={request.param == 'native'}")
    try:
        for name in models:
            server.wait_version(name, 1)
        server.sources, server.root = sources, root
        server.channel = grpc.insecure_channel(server.target)
        server.predict = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
        server.models = model_service_pb2_grpc.ModelServiceStub(server.channel)
        yield server
    finally:
        server.stop()


def _feeds(src, batch, seed=3):
    return {k: np.asarray(v) for k, v in sample_feeds(src, "serving_default", batch, seed).items()}


def _in_process(path, feeds, signature="serving_default"):
    fn = tf.saved_model.load(path).signatures[signature]
    return verify.run_signature(fn, feeds)


def _predict_request(model, feeds, **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for k, v in spec.items():
        if k == "version":
            request.model_spec.version.value = v
        else:
            setattr(request.model_spec, k, v)
    for k, v in feeds.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    return request


@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("batch", [1, 17])
def test_grpc_predict_equals_in_process(served, name, batch):
    feeds = _feeds(served.sources[name], batch)
    response = served.predict.Predict(_predict_request(name, feeds), timeout=60)
    got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert_outputs_close(got, _in_process(str(served.root / name / "1"), feeds), rtol=1e-6, atol=1e-7)
    assert response.model_spec.name == name and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def _json_value(array):
    array = np.asarray(array)
    if array.dtype.kind in "OS":
        return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(array).tolist()
    return array.tolist()


def _from_json(value, like):
    if like.dtype.kind in "OS":
        return np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(np.array(value, dtype=object))
    return np.asarray(value, dtype=like.dtype)


@pytest.mark.parametrize("name", ZOO)
def test_rest_row_and_columnar_formats_equal_in_process(served, name):
    feeds = _feeds(served.sources[name], 5)
    expected = _in_process(str(served.root / name / "1"), feeds)
    code, body = http("POST", f"{served.url}/v1/models/{name}:predict",
                      {"inputs": {k: _json_value(v) for k, v in feeds.items()}})
    assert code == 200, body
    outputs = body["outputs"] if len(expected) > 1 else {next(iter(expected)): body["outputs"]}
    assert_outputs_close({k: _from_json(v, expected[k]) for k, v in outputs.items()}, expected, rtol=0, atol=0)
    instances = [{k: _json_value(v[i]) for k, v in feeds.items()} for i in range(5)]
    code, body = http("POST", f"{served.url}/v1/models/{name}/versions/1:predict", {"instances": instances})
    assert code == 200, body
    rows = body["predictions"]
    if len(expected) == 1:
        (key, value), = expected.items()
        got = {key: _from_json(rows, value)}
    else:
        got = {k: _from_json([r[k] for r in rows], expected[k]) for k in expected}
    assert_outputs_close(got, expected, rtol=0, atol=0)


def test_rest_bytes_as_b64(served):
    feeds = _feeds(served.sources["wdl"], 2)
    expected = _in_process(str(served.root / "wdl" / "1"), feeds)
    inputs = {k: ([{"b64": base64.b64encode(b).decode()} for b in v] if v.dtype.kind in "OS" else v.tolist())
              for k, v in feeds.items()}
    code, body = http("POST", f"{served.url}/v1/models/wdl:predict", {"inputs": inputs})
    assert code == 200, body
    (key, value), = expected.items()
    np.testing.assert_array_equal(np.asarray(body["outputs"], value.dtype), value)


def test_model_status_and_metadata(served):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "dlrm"
    request.model_spec.version_label = "stable"
    (status,) = served.models.GetModelStatus(request).model_version_status
    assert status.version == 1 and status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    code, body = http("GET", f"{served.url}/v1/models/dlrm/labels/stable")
    assert code == 200 and body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "dlrm"
    response = served.predict.GetModelMetadata(request)
    defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(defs)
    serving = defs.signature_def["serving_default"]
    assert set(serving.inputs) == set(_feeds(served.sources["dlrm"], 1))
    assert serving.method_name == "tensorflow/serving/predict"
    code, body = http("GET", f"{served.url}/v1/models/dlrm/versions/1/metadata")
    assert code == 200 and body["model_spec"]["version"] == "1"
    assert set(body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]) == set(serving.inputs)


def _in_process_signature(served, signature, serialized):
    fn = tf.saved_model.load(str(served.root / "examples" / "1")).signatures[signature]
    return {k: v.numpy() for k, v in fn(inputs=tf.constant(serialized)).items()}


def test_classify_regress_and_multi_inference(served):
    context = example([], bucket=2)
    items = [example([0.5, -1.0]), example([2.0, 3.0], bucket=1)]
    merged = [(context.SerializeToString() + e.SerializeToString()) for e in items]

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "examples"
    request.model_spec.signature_name = "classify_x"
    request.input.example_list_with_context.context.CopyFrom(context)
    request.input.example_list_with_context.examples.extend(items)
    result = served.predict.Classify(request).result
    expected = _in_process_signature(served, "classify_x", merged)
    got = np.array([[c.score for c in row.classes] for row in result.classifications])
    np.testing.assert_allclose(got, expected["scores"], rtol=1e-6)
    assert [[c.label for c in row.classes] for row in result.classifications] == [["neg", "pos"]] * 2

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "examples"
    request.model_spec.signature_name = "regress_x"
    request.input.example_list.examples.extend(items)
    result = served.predict.Regress(request).result
    expected = _in_process_signature(served, "regress_x", [e.SerializeToString() for e in items])["outputs"][:, 0]
    np.testing.assert_allclose([r.value for r in result.regressions], expected, rtol=1e-6)

    multi = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify_x", "classify"), ("regress_x", "regress")):
        task = multi.tasks.add()
        task.model_spec.name = "examples"
        task.model_spec.signature_name = sig
        task.method_name = f"tensorflow/serving/{method}"
    multi.input.example_list.examples.extend(items)
    results = served.predict.MultiInference(multi).results
    assert [r.WhichOneof("result") for r in results] == ["classification_result", "regression_result"]
    np.testing.assert_allclose([r.value for r in results[1].regression_result.regressions], expected, rtol=1e-6)

    code, body = http("POST", f"{served.url}/v1/models/examples:classify",
                      {"signature_name": "classify_x", "context": {"bucket": 2},
                       "examples": [{"x": [0.5, -1.0]}, {"x": [2.0, 3.0], "bucket": 1}]})
    assert code == 200, body
    scores = _in_process_signature(served, "classify_x", merged)["scores"]
    assert [[label for label, _ in row] for row in body["results"]] == [["neg", "pos"]] * 2
    np.testing.assert_allclose([[s for _, s in row] for row in body["results"]], scores, rtol=1e-6)
    code, body = http("POST", f"{served.url}/v1/models/examples:regress",
                      {"signature_name": "regress_x", "examples": [{"x": [0.5, -1.0]}, {"x": [2.0, 3.0], "bucket": 1}]})
    assert code == 200 and np.allclose(body["results"], expected, rtol=1e-6)


def _grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=60)
    return e.value.code(), e.value.details()


def test_bad_grpc_requests_are_refused_with_the_fault_named(served):
    good = _feeds(served.sources["dlrm"], 2)
    predict = served.predict.Predict
    some_int = next(k for k, v in good.items() if v.dtype == np.int64)
    dense = next(k for k, v in good.items() if v.dtype == np.float32)
    cases = [
        (_predict_request("nope", good), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
        (_predict_request("dlrm", good, version=9), grpc.StatusCode.NOT_FOUND, "Specific(dlrm, 9)"),
        (_predict_request("dlrm", good, signature_name="nope"), grpc.StatusCode.FAILED_PRECONDITION, '"nope"'),
        (_predict_request("dlrm", dict(good, extra=np.ones(2, np.float32))), grpc.StatusCode.INVALID_ARGUMENT,
         "Send extra: {extra}"),
        (_predict_request("dlrm", {k: v for k, v in good.items() if k != dense}), grpc.StatusCode.INVALID_ARGUMENT,
         f"Missing but required: {{{dense}}}"),
        (_predict_request("dlrm", dict(good, **{some_int: good[some_int].astype(np.int32)})),
         grpc.StatusCode.INVALID_ARGUMENT, f"`{some_int}`"),
        (_predict_request("dlrm", dict(good, **{dense: good[dense][:, :3]})), grpc.StatusCode.INVALID_ARGUMENT,
         f"`{dense}`"),
        (_predict_request("dlrm", dict(good, **{some_int: np.full(2, 10**9, np.int64)})),
         grpc.StatusCode.INVALID_ARGUMENT, "is not in"),
    ]
    for request, code, fragment in cases:
        got_code, details = _grpc_error(predict, request)
        assert got_code == code and fragment in details, (code, fragment, got_code, details)
    broken = _predict_request("dlrm", good)
    broken.inputs[dense].tensor_content = b"\x00" * 3
    code, details = _grpc_error(predict, broken)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and dense in details
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "dlrm"
    classify.input.example_list.examples.add()
    code, details = _grpc_error(served.predict.Classify, classify)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "inputs" in details
    # Still serving after all of that.
    assert served.predict.Predict(_predict_request("dlrm", good), timeout=60).outputs


def test_bad_rest_requests_get_tf_serving_error_json(served):
    url = f"{served.url}/v1/models"
    cases = [
        ("POST", f"{url}/dlrm:predict", None, b"{not json", 400, "JSON Parse error"),
        ("POST", f"{url}/dlrm:predict", {"instances": [1], "inputs": [1]}, None, 400, "exactly one of"),
        ("POST", f"{url}/dlrm:predict", {"inputs": {"bogus": [1]}}, None, 400, "bogus"),
        ("POST", f"{url}/dlrm:predict", {"instances": [{"a": 1}, {"b": 2}]}, None, 400, "instance 1"),
        ("POST", f"{url}/wdl:predict", {"inputs": {"c0": [{"b64": "***"}]}}, None, 400, "malformed base64"),
        ("POST", f"{url}/nope:predict", {"instances": [1]}, None, 404, "Latest(nope)"),
        ("POST", f"{url}/dlrm/labels/beta:predict", {"instances": [1]}, None, 400, "label: beta"),
        ("GET", f"{url}/dlrm/versions/3", None, None, 404, "version 3 of model dlrm"),
        ("POST", f"{url}/dlrm:explode", {}, None, 404, "Malformed request"),
        ("POST", f"{url}/examples:classify", {"examples": [{"x": [1.0, "a"]}]}, None, 400, "examples[0].x"),
    ]
    for method, target, body, raw, code, fragment in cases:
        got, answer = http(method, target, body, raw)
        assert got == code and fragment in answer["error"], (target, body, got, answer)
    feeds = _feeds(served.sources["dlrm"], 1)
    dense = next(k for k, v in feeds.items() if v.dtype == np.float32)
    inputs = {k: v.tolist() for k, v in feeds.items()}
    for bad, fragment in ((1.5, "expects int64"), ("x", "expects int64"), ([[1, 2], [3]], "ragged")):
        key = next(k for k, v in feeds.items() if v.dtype == np.int64)
        got, answer = http("POST", f"{url}/dlrm:predict", {"inputs": dict(inputs, **{key: bad})})
        assert got == 400 and fragment in answer["error"] and key in answer["error"], answer
    got, answer = http("POST", f"{url}/dlrm:predict", {"inputs": dict(inputs, **{dense: [[1.0]]})})
    assert got == 400 and dense in answer["error"] and "shape" in answer["error"]
    got, answer = http("POST", f"{url}/dlrm:predict", raw=b"{" + b" " * (65 << 20) + b"}")
    assert got == 400 and "max_request_bytes" in answer["error"]
    assert http("POST", f"{url}/dlrm:predict", {"inputs": inputs})[0] == 200


def test_warmup_records_ran_before_serving(served):
    assert "Finished reading warmup data for model examples version 1: 1 requests" in served.log()


def test_prometheus_metrics(served):
    http("GET", f"{served.url}/v1/models/nope")
    feeds = _feeds(served.sources["dlrm"], 1)
    served.predict.Predict(_predict_request("dlrm", feeds), timeout=60)
    code, text = http("GET", f"{served.url}/monitoring/prometheus/metrics")
    assert code == 200
    assert ':tensorflow:serving:request_count{model_name="dlrm",status="OK"}' in text
    assert ':tensorflow:serving:request_count{model_name="nope",status="NOT_FOUND"}' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="dlrm",API="predict",entrypoint="GRPC",le="+Inf"}' \
        in text
    assert "# TYPE :tensorflow:cc:saved_model:load_latency histogram" in text


def test_reload_config_over_grpc(served, tmp_path):
    from tensorflow_serving.apis import model_management_pb2
    from tensorflow_serving.config import model_server_config_pb2
    shutil.copytree(served.root / "examples", tmp_path / "examples2")
    config = model_server_config_pb2.ModelServerConfig()
    for name in list(ZOO) + ["examples", "examples2"]:
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = str(served.root / name) if name != "examples2" else str(tmp_path / "examples2")
        entry.model_platform = "tensorflow"
    served.models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config), timeout=60)
    served.wait_version("examples2", 1)
    bad = model_server_config_pb2.ModelServerConfig()
    bad.model_config_list.config.add(name="x")
    with pytest.raises(grpc.RpcError) as e:
        served.models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=bad), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "base_path" in e.value.details()
    served.wait_version("dlrm", 1)  # the bad config changed nothing
