"""Shared fixtures: the op library, small zoo exports (built once per session)."""
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Every pass's view checks its incrementally kept index against a fresh one.
os.environ.setdefault("RECOPT_CHECK_INDEX", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_recopt  # noqa: E402
from tf_recopt import zoo  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def ops():
    return tf_recopt.load_ops()


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory):
    """zoo_dir(name) -> path of a small exported zoo model (exported once)."""
    root = tmp_path_factory.mktemp("zoo")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = zoo.export(name, str(root / name), size="small")
        return cache[name]
    return get


def run_cli(*args, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "tf_recopt.cli", *args], capture_output=True, text=True,
                          env=full_env, cwd=REPO)


def run_signature(path, feeds, signature="serving_default"):
    fn = tf.saved_model.load(path).signatures[signature]
    return {k: v.numpy() for k, v in fn(**feeds).items()}


def assert_outputs_close(a, b, rtol=1e-5, atol=1e-6):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        if a[k].dtype.kind in "OSU":  # strings (ids): exact
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


def saved_model_nodes(path, op):
    """NodeDefs of `op` anywhere in a SavedModel (main graph and function library)."""
    from tensorflow.core.protobuf import saved_model_pb2
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    nodes = []
    for meta in proto.meta_graphs:
        nodes += [n for n in meta.graph_def.node if n.op == op]
        for fn in meta.graph_def.library.function:
            nodes += [n for n in fn.node_def if n.op == op]
    return nodes
