"""The op library loader: loads once, and refuses a library built for another TensorFlow."""
import pytest
import tensorflow as tf

import tf_recopt
from tf_recopt.ops import _loader


def test_loads_once_and_registers_ops():
    first = tf_recopt.load_ops()
    assert tf_recopt.load_ops() is first
    assert tf_recopt.register_all() is first
    assert hasattr(first, "recopt_fused_mlp")


def test_library_records_this_tensorflow():
    assert _loader.built_for_tensorflow() == tf.__version__


def test_version_mismatch_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(_loader, "_library", None)
    monkeypatch.setattr(_loader, "built_for_tensorflow", lambda path=None: "2.0.0")
    with pytest.raises(tf_recopt.OpLibraryError, match="built for TensorFlow 2.0.0 but TensorFlow .* is installed"):
        tf_recopt.load_ops()


def test_missing_library_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(_loader, "_library", None)
    monkeypatch.setattr(_loader, "_HERE", str(tmp_path))
    with pytest.raises(tf_recopt.OpLibraryError, match="not found at .*make ops"):
        tf_recopt.load_ops()
