"""lean_load: the signatures as tf.saved_model.load gives them, without
loading the functions and objects they never use."""
import gc
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.saved_model import loader_impl

from tests import savedmodel_flavours as flavours
from tf_recopt import lean_load, saved_model_io
from tf_recopt.options import OptimizeOptions


class _WithUnusedTraces(tf.Module):
    """A signature beside functions no signature calls, as Keras saves each
    layer's call traces next to the serving function."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3) / 10)
        self.unused = tf.Variable(np.ones([3], np.float32))

    @tf.function
    def helper(self, x):
        return tf.matmul(x, self.w) * self.unused

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x):
        return {"y": tf.nn.relu(tf.matmul(x, self.w) - 0.5)}


def _export_with_unused(path):
    module = _WithUnusedTraces()
    for n in (1, 2, 5):
        module.helper.get_concrete_function(tf.TensorSpec([n, 4], tf.float32))
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def _library_names(path):
    return {f.signature.name for f in loader_impl.parse_saved_model(path).meta_graphs[0].graph_def.library.function}


def test_prune_keeps_what_the_signatures_reach(tmp_path):
    path = _export_with_unused(str(tmp_path / "m"))
    before = _library_names(path)
    saved_model = loader_impl.parse_saved_model(path)
    filters = lean_load.prune(saved_model.meta_graphs[0])
    after = {f.signature.name for f in saved_model.meta_graphs[0].graph_def.library.function}
    assert any("helper" in n for n in before)
    assert not any("helper" in n for n in after), after
    assert any("signature_wrapper" in n for n in after) and any("serve" in n for n in after)
    assert "root.signatures" in filters
    assert "root.w" in filters and "root.unused" not in filters   # only what the signature captures
    assert set(saved_model.meta_graphs[0].object_graph_def.concrete_functions) <= after


@pytest.mark.parametrize("flavour", ["unused_traces", "multi_signature"])
def test_lean_load_gives_the_full_loads_outputs(tmp_path, flavour):
    if flavour == "unused_traces":
        path = _export_with_unused(str(tmp_path / "m"))
        feeds = {"serving_default": {"x": tf.constant(np.random.default_rng(0).normal(size=[6, 4]), tf.float32)}}
    else:
        path = flavours.export_multi_signature(str(tmp_path / "m"))
        feeds = {"serving_default": {"dense": tf.ones([3, 4]), "word": tf.constant(["apple", "zzz", "durian"]),
                                     "slot": tf.constant([0, 1, 2], tf.int32)},
                 "embed": {"item": tf.constant([0, 5, 63], tf.int64)}}
    signatures, trackables, holder = lean_load.load(path, ["serve"])
    assert holder is not None and os.path.isdir(holder.path)
    full = tf.saved_model.load(path)
    assert sorted(signatures.keys()) == sorted(full.signatures.keys())
    for name, feed in feeds.items():
        got, want = signatures[name](**feed), full.signatures[name](**feed)
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())


def test_the_lean_copy_goes_with_the_model(tmp_path):
    path = flavours.export_multi_signature(str(tmp_path / "m"))
    model = saved_model_io.load(path, OptimizeOptions())
    scratch = model.keep_alive[1].path
    assert os.path.isfile(os.path.join(scratch, "saved_model.pb"))
    assert os.path.islink(os.path.join(scratch, "assets"))
    del model
    gc.collect()
    assert not os.path.exists(scratch)


def test_a_failed_lean_load_falls_back_to_the_full_load(tmp_path, monkeypatch, caplog):
    path = _export_with_unused(str(tmp_path / "m"))
    scratch_root = tmp_path / "scratch"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))

    def broken(*args, **kwargs):
        raise ValueError("sabotaged partial load")
    monkeypatch.setattr(tf.__internal__.saved_model, "load_partial", broken)
    signatures, trackables, holder = lean_load.load(path, ["serve"])
    assert holder is None
    assert "sabotaged partial load" in caplog.text
    assert list(scratch_root.iterdir()) == []     # the failed copy was removed
    y = signatures["serving_default"](x=tf.ones([2, 4]))["y"].numpy()
    np.testing.assert_allclose(y, np.maximum(np.ones([2, 4]) @ (np.arange(12).reshape(4, 3) / 10) - 0.5, 0),
                               rtol=1e-6)


def test_tf1_savedmodels_load_as_before(tmp_path):
    path = flavours.export_tf1_builder(str(tmp_path / "tf1"))
    assert lean_load._lean_copy(path) is None
    signatures, _, holder = lean_load.load(path, ["serve"])
    assert holder is None and list(signatures.keys())


def test_optimize_through_the_lean_load_keeps_assets(tmp_path):
    import tf_recopt
    path = flavours.export_multi_signature(str(tmp_path / "m"))
    out = str(tmp_path / "out")
    tf_recopt.optimize(path, out)
    assert os.path.isfile(os.path.join(out, "assets", "vocab.txt"))
    assert not os.path.islink(os.path.join(out, "assets", "vocab.txt"))
    fn = tf.saved_model.load(out).signatures["serving_default"]
    ids = fn(dense=tf.ones([2, 4]), word=tf.constant(["banana", "nope"]), slot=tf.constant([1, 0], tf.int32))["ids"]
    np.testing.assert_array_equal(ids.numpy(), [3, 0])
