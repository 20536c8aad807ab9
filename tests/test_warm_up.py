"""verify.warm_up: the original signature's first call overlaps the passes,
and never when that call could change what optimize() saves."""
import threading

import numpy as np
import tensorflow as tf

import tf_recopt
from tf_recopt import saved_model_io, verify
from tf_recopt.options import OptimizeOptions


class _Reader(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.ones([3, 2], np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.matmul(x, self.w)}


class _Counter(tf.Module):
    """A signature that writes state: serving it counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = tf.Variable(0, dtype=tf.int64)
        self.w = tf.Variable(np.ones([3, 2], np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(self, x):
        self.calls.assign_add(1)
        return {"y": tf.matmul(x, self.w)}


def _export(module, path):
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def test_a_read_only_signature_is_called_once_on_one_example(tmp_path):
    path = _export(_Reader(), str(tmp_path / "m"))
    sig = saved_model_io.load(path, OptimizeOptions()).signatures["serving_default"]
    seen = []
    original = sig.function
    sig.function = lambda **feeds: seen.append({k: v.shape.as_list() for k, v in feeds.items()}) or original(**feeds)
    thread = verify.warm_up(sig, path)
    assert thread is not None
    thread.join()
    assert seen == [{"x": [1, 3]}]


def test_a_signature_that_writes_state_is_not_warmed_up(tmp_path):
    path = _export(_Counter(), str(tmp_path / "m"))
    sig = saved_model_io.load(path, OptimizeOptions(freeze_max_bytes=0)).signatures["serving_default"]
    assert verify.warm_up(sig, path) is None


def test_a_failing_warm_up_leaves_the_error_to_the_parity_check(tmp_path, monkeypatch):
    escaped = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    path = _export(_Reader(), str(tmp_path / "m"))
    sig = saved_model_io.load(path, OptimizeOptions()).signatures["serving_default"]

    def broken(**feeds):
        raise tf.errors.InvalidArgumentError(None, None, "sabotaged first call")
    sig.function = broken
    thread = verify.warm_up(sig, path)
    thread.join()
    assert escaped == []


def test_optimize_with_the_warm_up_matches_the_original(tmp_path):
    path = _export(_Reader(), str(tmp_path / "m"))
    report = tf_recopt.optimize(path, str(tmp_path / "out"))
    assert report.parity_ok
    x = tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3))
    got = tf.saved_model.load(str(tmp_path / "out")).signatures["serving_default"](x=x)["y"].numpy()
    np.testing.assert_allclose(got, x.numpy() @ np.ones([3, 2], np.float32), rtol=1e-6)
