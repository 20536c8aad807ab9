"""Helpers for the serving tests: a model server in a subprocess on
loopback ports, an HTTP client, and a small tf.Example model with classify
and regress signatures (the zoo's Keras exports only have predict ones)."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import tensorflow as tf

from tests.conftest import REPO


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, raw=None):
    """(status, parsed JSON or text) for a request to the REST port."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            code, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        code, text = exc.code, exc.read().decode()
    try:
        return code, json.loads(text)
    except ValueError:
        return code, text


class Server:
    """`tf-recopt serve` in a subprocess; stops on exit."""

    def __init__(self, *flags, env=None):
        self.grpc_port, self.rest_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "tf_recopt.cli", "serve", f"--port={self.grpc_port}",
               f"--rest_api_port={self.rest_port}", *flags]
        self.log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"recopt_serve_{self.rest_port}.log")
        self._log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {})))

    @property
    def url(self):
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def target(self):
        return f"127.0.0.1:{self.grpc_port}"

    def log(self):
        self._log.flush()
        with open(self.log_path) as f:
            return f.read()

    def wait_version(self, model, version, state="AVAILABLE", timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                code, body = http("GET", f"{self.url}/v1/models/{model}")
            except OSError:
                code, body = None, None
            if code == 200:
                states = {int(v["version"]): v["state"] for v in body["model_version_status"]}
                if states.get(version) == state:
                    return body
            time.sleep(0.2)
        raise AssertionError(f"{model} version {version} not {state} after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def model_config(path, models, labels=None):
    """Writes a ModelServerConfig text proto: models is {name: base_path}."""
    entries = []
    for name, base in models.items():
        extra = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).get(name, {}).items())
        entries.append(f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"{extra} }}')
    with open(path, "w") as f:
        f.write("model_config_list { " + " ".join(entries) + " }\n")
    return path


class ExampleModel(tf.Module):
    """Reads tf.Examples with a float feature `x` [2] and an int feature
    `bucket`; classify gives two labelled scores, regress one value."""

    def __init__(self, shift=0.0):
        super().__init__()
        self.w = tf.Variable([[1.0, -1.0], [0.5, 2.0]])
        self.shift = tf.Variable(shift)

    def _parse(self, serialized):
        feats = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32),
                                                 "bucket": tf.io.FixedLenFeature([1], tf.int64, [0])})
        return feats["x"], tf.cast(feats["bucket"], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        x, bucket = self._parse(inputs)
        scores = tf.nn.softmax(tf.matmul(x, self.w) + bucket + self.shift)
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(inputs)[0], 1])
        return {"scores": scores, "classes": classes}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        x, bucket = self._parse(inputs)
        return {"outputs": tf.reduce_sum(x, axis=1, keepdims=True) + bucket + self.shift}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def predict(self, x):
        return {"y": tf.matmul(x, self.w) + self.shift, "total": tf.reduce_sum(x, keepdims=True)}


def export_example_model(path, shift=0.0):
    module = ExampleModel(shift)
    tf.saved_model.save(module, path, signatures={"serving_default": module.classify,
                                                  "classify_x": module.classify,
                                                  "regress_x": module.regress,
                                                  "predict_x": module.predict})
    return path


def example(x, bucket=None):
    ex = tf.train.Example()
    ex.features.feature["x"].float_list.value.extend(x)
    if bucket is not None:
        ex.features.feature["bucket"].int64_list.value.append(bucket)
    return ex


def array_feeds(arrays):
    return {k: np.asarray(v) for k, v in arrays.items()}
