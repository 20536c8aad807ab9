"""The C++ request path (tf_recopt.serving.request_path): PredictRequest bytes
decoded, run and answered in C++, checked against the Python path on the
same requests; and the C++ batcher against the semantics the Python
BatchScheduler's tests pin down (test_serving_batching.py)."""
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from tests.serving_util import concurrently, example, export_example_model
from tf_recopt.serving import native, status
from tf_recopt.serving.batching import BatchingParameters
from tf_recopt.serving.servable import Servable
from tf_recopt.serving.service import ServingCore

pytestmark = pytest.mark.skipif(not native.available(), reason=f"request_path not built: {native.IMPORT_ERROR}")


class Rows(tf.Module):
    """Each row reports what the batch it ran in looked like: `n` its size,
    `row` its index, `last` the batch's last x (the padding's source);
    `spin` makes a call take time."""

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x"),
                                  tf.TensorSpec([None], tf.int32, name="spin")])
    def rows(self, x, spin):
        _, acc = tf.while_loop(lambda i, a: i < tf.reduce_max(spin), lambda i, a: (i + 1, tf.matmul(a, a) * 1e-3),
                               [0, tf.ones([128, 128])])
        batch = tf.shape(x)[0]
        return {"y": x * 10 + 0 * acc[0, 0], "n": tf.fill([batch], batch), "row": tf.range(batch),
                "last": tf.fill([batch], x[-1, 0])}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def total(self, x):
        return {"total": tf.reduce_sum(x)}


@pytest.fixture(scope="module")
def rows_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("rows") / "1")
    module = Rows()
    tf.saved_model.save(module, path, signatures={"serving_default": module.rows, "total": module.total})
    servable = Servable("rows", 1, path, use_native=True)
    yield servable
    servable.close()


@pytest.fixture(scope="module")
def example_paths(tmp_path_factory):
    path = export_example_model(str(tmp_path_factory.mktemp("ex") / "1"))
    both = {kind: Servable("ex", 1, path, use_native=kind == "native") for kind in ("native", "python")}
    yield both
    for s in both.values():
        s.close()


def _feeds(x, spin=0):
    x = np.asarray(x, np.float32).reshape(-1, 1)
    return {"x": x, "spin": np.full(len(x), spin, np.int32)}


def _batcher(seen=None, **kwargs):
    observer = None if seen is None else (lambda label, rows, padded, waits: seen.append((label, rows, padded,
                                                                                          len(waits))))
    return native.NativeBatcher(BatchingParameters(**kwargs), observer)


# ---- the batcher ---------------------------------------------------------------

def test_requests_are_merged_padded_and_split_back(rows_model):
    seen = []
    batcher = _batcher(seen, max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=1,
                       allowed_batch_sizes=(4, 8))
    sig = rows_model.signature("serving_default")
    inputs = [np.arange(i, i + n, dtype=np.float32) for i, n in ((0, 1), (10, 2), (20, 2))]
    try:
        results, errors = concurrently(lambda x: sig.run(_feeds(x), batcher), [(x,) for x in inputs])
    finally:
        batcher.stop()
    assert errors == [None] * 3
    for x, out in zip(inputs, results):
        np.testing.assert_array_equal(out["y"][:, 0], x * 10)
        assert list(out["n"]) == [8] * len(x)  # 5 rows padded to the allowed size 8
    # Padding repeats the first row of the last task to join.
    assert results[0]["last"][0] in {x[0] for x in inputs}
    assert seen == [("rows", 5, 8, 3)]


def test_batch_closes_when_full_without_waiting_for_the_timeout(rows_model):
    batcher = _batcher(max_batch_size=2, batch_timeout_micros=30_000_000, num_batch_threads=1)
    sig = rows_model.signature("serving_default")
    try:
        started = time.monotonic()
        results, errors = concurrently(lambda x: sig.run(_feeds(x), batcher), [([1.0],), ([2.0],)])
        assert time.monotonic() - started < 10
    finally:
        batcher.stop()
    assert errors == [None, None] and [r["n"][0] for r in results] == [2, 2]


def test_oversized_task_is_refused_or_split(rows_model):
    sig = rows_model.signature("serving_default")
    x = np.arange(10, dtype=np.float32)
    batcher = _batcher(max_batch_size=4, num_batch_threads=1)
    try:
        with pytest.raises(status.ServingError, match="Task size 10 is larger than maximum input batch size 4") as e:
            sig.run(_feeds(x), batcher)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        batcher.stop()
    batcher = _batcher(max_batch_size=4, num_batch_threads=1, enable_large_batch_splitting=True)
    try:
        out = sig.run(_feeds(x), batcher)
    finally:
        batcher.stop()
    np.testing.assert_array_equal(out["y"][:, 0], x * 10)
    assert list(out["n"]) == [4] * 8 + [2] * 2 and list(out["row"]) == [0, 1, 2, 3] * 2 + [0, 1]


def test_full_queue_answers_unavailable(rows_model):
    sig = rows_model.signature("serving_default")
    batcher = _batcher(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    try:
        results, errors = concurrently(lambda: sig.run(_feeds([1.0], spin=300), batcher), [()] * 6)
    finally:
        batcher.stop()
    refused = [e for e in errors if e is not None]
    assert refused and all(e.code == grpc.StatusCode.UNAVAILABLE and "rows" in e.message for e in refused)
    assert any(r is not None for r in results)


def test_output_without_batch_dimension_is_reported(rows_model):
    batcher = _batcher(max_batch_size=4, num_batch_threads=1)
    try:
        with pytest.raises(status.ServingError, match="`total`.*cannot be batched") as e:
            rows_model.signature("total").run({"x": np.ones((3, 1), np.float32)}, batcher)
        assert e.value.code == grpc.StatusCode.INTERNAL
        # The batch thread survives a failed batch.
        out = rows_model.signature("serving_default").run(_feeds([3.0]), batcher)
        assert out["y"][0, 0] == 30
    finally:
        batcher.stop()


def test_empty_request_runs_unbatched(rows_model):
    # Batched, `total` (no batch dimension) would be refused; alone it runs.
    batcher = _batcher(max_batch_size=4, num_batch_threads=1)
    try:
        out = rows_model.signature("total").run({"x": np.zeros((0, 1), np.float32)}, batcher)
        assert out["total"].shape == () and out["total"] == 0
    finally:
        batcher.stop()


def test_stopped_batcher_refuses_with_unavailable(rows_model):
    batcher = _batcher(max_batch_size=4, num_batch_threads=1)
    batcher.stop()
    with pytest.raises(status.ServingError, match="shutting down") as e:
        rows_model.signature("serving_default").run(_feeds([1.0]), batcher)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_batching_under_load_answers_every_request_its_own_rows(rows_model):
    seen = []
    batcher = _batcher(seen, max_batch_size=16, batch_timeout_micros=2000, num_batch_threads=2)
    sig = rows_model.signature("serving_default")
    inputs = [(np.arange(k % 3 + 1, dtype=np.float32) + 100 * k,) for k in range(64)]
    try:
        results, errors = concurrently(lambda x: sig.run(_feeds(x), batcher), inputs)
    finally:
        batcher.stop()
    assert errors == [None] * 64
    for (x,), out in zip(inputs, results):
        np.testing.assert_array_equal(out["y"][:, 0], x * 10)
    assert sum(rows for _, rows, _, _ in seen) == sum(len(x) for (x,) in inputs)
    assert max(n for _, _, n, _ in seen) > 1  # something was merged


# ---- Predict bytes against the Python path -----------------------------------------

class _Manager:
    def __init__(self, servable):
        self._servable = servable

    def servable(self, *_):
        servable = self._servable

        class Held:
            def __enter__(self):
                return servable

            def __exit__(self, *exc):
                return False
        return Held()


def _request(inputs, signature="predict_x", output_filter=()):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ex"
    request.model_spec.signature_name = signature
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value if isinstance(value, tensor_pb2.TensorProto)
                                     else tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def _both(example_paths, request):
    """(native response, python response) or their errors."""
    out = {}
    for kind, servable in example_paths.items():
        core = ServingCore(_Manager(servable))
        try:
            out[kind] = predict_pb2.PredictResponse.FromString(
                core.predict_bytes(request, request.SerializeToString()))
        except status.ServingError as exc:
            out[kind] = exc
    return out["native"], out["python"]


@pytest.mark.parametrize("inputs, signature, output_filter", [
    ({"x": np.array([[1.0, 2.0], [3.0, np.nan]], np.float32)}, "predict_x", ()),
    ({"x": np.array([[1.0, 2.0]], np.float32)}, "predict_x", ("y",)),
    ({"x": np.zeros((0, 2), np.float32)}, "predict_x", ("y",)),
    ({"x": np.random.default_rng(0).normal(size=(1000, 2)).astype(np.float32)}, "predict_x", ("y", "y")),
    ({"inputs": np.array([example([1.0, 2.0], 3).SerializeToString(), example([0.5, -1.0]).SerializeToString()],
                         dtype=object)}, "classify_x", ()),
])
def test_predict_bytes_equal_the_python_path(example_paths, inputs, signature, output_filter):
    got, expected = _both(example_paths, _request(inputs, signature, output_filter))
    assert not isinstance(got, Exception), got
    assert got.model_spec == expected.model_spec
    assert sorted(got.outputs) == sorted(expected.outputs)  # a map: order carries no meaning
    for key in expected.outputs:
        a, b = tf.make_ndarray(got.outputs[key]), tf.make_ndarray(expected.outputs[key])
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def _typed(dtype, values, shape):
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    getattr(proto, {tf.float32: "float_val", tf.int64: "int64_val"}[dtype]).extend(values)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


@pytest.mark.parametrize("inputs, output_filter, fragment", [
    ({"x": np.ones((2, 2), np.float64)}, (), "input `x` of signature `predict_x` expects dtype float32, got float64"),
    ({"x": np.ones((2, 3), np.float32)}, (), "input `x` of signature `predict_x` expects shape [?, 2], got [2, 3]"),
    ({"x": np.ones((2,), np.float32)}, (), "expects shape [?, 2], got [2]"),
    ({"x": _typed(tf.float32, [1, 2, 3], [1, 2])}, (), "input `x`: malformed TensorProto"),
    ({"x": _typed(tf.float32, [1, 2, 3], [2, 2])}, (), "input `x`: malformed TensorProto"),
    ({"x": _typed(tf.float32, [1, 2], [-1, 2])}, (), "input `x`: malformed TensorProto"),
    ({"x": np.ones((1, 2), np.float32), "z": np.ones(1)}, (), "Send extra: {z}"),
    ({}, (), "Missing but required: {x}"),
    ({"x": np.ones((1, 2), np.float32)}, ("nope",), "output tensor alias not found in signature: nope"),
])
def test_bad_requests_get_the_python_paths_invalid_argument(example_paths, inputs, output_filter, fragment):
    got, expected = _both(example_paths, _request(inputs, output_filter=output_filter))
    for err in (got, expected):
        assert isinstance(err, status.ServingError), err
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and fragment in err.message, err.message


def test_short_typed_values_follow_the_padding_rule(example_paths):
    got, expected = _both(example_paths, _request({"x": _typed(tf.float32, [2.5], [3, 2])}))
    np.testing.assert_array_equal(tf.make_ndarray(got.outputs["y"]), tf.make_ndarray(expected.outputs["y"]))


def test_unloaded_version_refuses_calls(tmp_path):
    path = export_example_model(str(tmp_path / "1"))
    servable = Servable("ex", 1, path, use_native=True)
    sig = servable.signature("predict_x")
    servable.close()
    with pytest.raises(ValueError, match="unloaded"):
        sig.run({"x": np.ones((1, 2), np.float32)})


def test_load_errors_name_the_directory(tmp_path):
    with pytest.raises(RuntimeError, match=str(tmp_path)):
        Servable("ex", 1, str(tmp_path), use_native=True)
