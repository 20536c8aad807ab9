"""The batch scheduler on its own: merging, padding, splitting, limits."""
import threading
import time

import grpc
import numpy as np
import pytest

from tests.serving_util import concurrently
from tf_recopt.serving import status
from tf_recopt.serving.batching import BatchingParameters, BatchScheduler


class Recorder:
    """A 'model' returning 10*x and the batch row index; records batch sizes."""

    def __init__(self, delay=0.0):
        self.sizes = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, feeds):
        time.sleep(self.delay)
        with self.lock:
            self.sizes.append(len(feeds["x"]))
        return {"y": feeds["x"] * 10, "row": np.arange(len(feeds["x"]))}


def test_requests_are_merged_padded_and_split_back():
    params = BatchingParameters(max_batch_size=8, batch_timeout_micros=200_000, num_batch_threads=1,
                                allowed_batch_sizes=(4, 8))
    sched, model = BatchScheduler(params), Recorder()
    seen = []
    sched._on_batch = lambda label, rows, padded, waits: seen.append((rows, padded))
    try:
        inputs = [np.arange(i, i + n, dtype=np.float32).reshape(n, 1) for i, n in ((0, 1), (10, 2), (20, 2))]
        results, errors = concurrently(lambda x: sched.run(("k",), model, {"x": x}, len(x), "m"),
                                        [(x,) for x in inputs])
    finally:
        sched.stop()
    assert errors == [None] * 3
    for x, out in zip(inputs, results):
        np.testing.assert_array_equal(out["y"], x * 10)
    assert model.sizes == [8]          # 5 rows padded to the allowed size 8
    assert seen == [(5, 8)]


def test_padding_repeats_the_first_row_of_the_last_task():
    params = BatchingParameters(max_batch_size=4, allowed_batch_sizes=(4,), num_batch_threads=1)
    captured = []
    sched = BatchScheduler(params)
    try:
        sched.run(("k",), lambda f: captured.append(f["x"].copy()) or {"y": f["x"]},
                  {"x": np.array([[7.0], [8.0]])}, 2)
    finally:
        sched.stop()
    np.testing.assert_array_equal(captured[0][:, 0], [7, 8, 7, 7])


def test_batch_closes_when_full_without_waiting_for_the_timeout():
    params = BatchingParameters(max_batch_size=2, batch_timeout_micros=30_000_000, num_batch_threads=1)
    sched, model = BatchScheduler(params), Recorder()
    try:
        started = time.monotonic()
        results, errors = concurrently(lambda x: sched.run(("k",), model, {"x": x}, 1),
                                        [(np.ones((1, 1)),), (np.ones((1, 1)),)])
        assert time.monotonic() - started < 10
    finally:
        sched.stop()
    assert errors == [None, None] and model.sizes == [2]


def test_oversized_task_is_refused_or_split():
    x = np.arange(10, dtype=np.float32).reshape(10, 1)
    sched = BatchScheduler(BatchingParameters(max_batch_size=4, num_batch_threads=1))
    try:
        with pytest.raises(status.ServingError, match="Task size 10 is larger than maximum input batch size 4") as e:
            sched.run(("k",), Recorder(), {"x": x}, 10)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        sched.stop()
    model = Recorder()
    sched = BatchScheduler(BatchingParameters(max_batch_size=4, num_batch_threads=1,
                                              enable_large_batch_splitting=True))
    try:
        out = sched.run(("k",), model, {"x": x}, 10)
    finally:
        sched.stop()
    np.testing.assert_array_equal(out["y"], x * 10)
    assert sorted(model.sizes) == [2, 4, 4]


def test_full_queue_answers_unavailable():
    params = BatchingParameters(max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1)
    sched, model = BatchScheduler(params), Recorder(delay=0.5)
    try:
        results, errors = concurrently(lambda x: sched.run(("k",), model, {"x": x}, 1, "dlrm"),
                                        [(np.ones((1, 1)),)] * 6)
    finally:
        sched.stop()
    refused = [e for e in errors if e is not None]
    assert refused and all(e.code == grpc.StatusCode.UNAVAILABLE and "dlrm" in e.message for e in refused)
    assert any(r is not None for r in results)


def test_model_error_reaches_every_request_and_threads_survive():
    sched = BatchScheduler(BatchingParameters(max_batch_size=4, num_batch_threads=1))

    def broken(feeds):
        raise RuntimeError("kernel exploded")
    try:
        with pytest.raises(status.ServingError, match="kernel exploded"):
            sched.run(("a",), broken, {"x": np.ones((1, 1))}, 1)
        out = sched.run(("b",), Recorder(), {"x": np.ones((1, 1))}, 1)
        assert out["y"][0, 0] == 10
    finally:
        sched.stop()


def test_output_without_batch_dimension_is_reported():
    sched = BatchScheduler(BatchingParameters(max_batch_size=4, num_batch_threads=1))
    try:
        with pytest.raises(status.ServingError, match="`total`.*cannot be batched"):
            sched.run(("k",), lambda f: {"total": f["x"].sum(keepdims=True)[0]}, {"x": np.ones((3, 1))}, 3)
    finally:
        sched.stop()


@pytest.mark.parametrize("kwargs, field", [
    (dict(max_batch_size=0), "max_batch_size"),
    (dict(max_batch_size=8, allowed_batch_sizes=(4, 6)), "allowed_batch_sizes"),
    (dict(max_batch_size=8, allowed_batch_sizes=(8, 4)), "allowed_batch_sizes"),
    (dict(batch_timeout_micros=-1), "batch_timeout_micros"),
])
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BatchingParameters(**kwargs)
