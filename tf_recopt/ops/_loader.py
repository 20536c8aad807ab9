"""Loads _recopt_ops.so once, after checking it matches this TensorFlow."""
import os
import re
import sys
import sysconfig
import threading

from tf_recopt.errors import OpLibraryError

_HERE = os.path.dirname(os.path.abspath(__file__))
_LIB = "_recopt_ops" + sysconfig.get_config_var("EXT_SUFFIX")
_MARKER = re.compile(rb"RECOPT_BUILT_FOR_TF=([^;\x00]+);")
_lock = threading.Lock()
_library = None


def library_path():
    """Path of the op library: $TF_RECOPT_OPS_LIBRARY (a Bazel-built
    recopt_ops.so, say) or the one pip built into this package."""
    return os.environ.get("TF_RECOPT_OPS_LIBRARY") or os.path.join(_HERE, _LIB)


def built_for_tensorflow(path=None):
    """The TensorFlow version recorded in the library (custom_ops/ops/build_info.cc)."""
    path = path or library_path()
    with open(path, "rb") as f:
        found = _MARKER.search(f.read())
    return found.group(1).decode() if found else None


def _point_at_onednn():
    """FusedMLP opens oneDNN at run time (custom_ops/core/onednn_api.h):
    the libdnnl.so.3 that the onednn-cpu-gomp wheel put under this
    environment's lib/, unless $RECOPT_ONEDNN_LIBRARY names another."""
    if os.environ.get("RECOPT_ONEDNN_LIBRARY"):
        return
    for prefix in (sysconfig.get_paths()["data"], sys.prefix):
        path = os.path.join(prefix, "lib", "libdnnl.so.3")
        if os.path.exists(path):
            os.environ["RECOPT_ONEDNN_LIBRARY"] = path
            return


def _check_build(tf_version):
    if not os.path.exists(library_path()):
        raise OpLibraryError(
            f"tf-recopt op library not found at {library_path()}: build it with "
            "`pip install --no-build-isolation -e .` or `make ops`")
    built_for = built_for_tensorflow()
    if built_for is None:
        raise OpLibraryError(f"{library_path()} carries no build marker; rebuild with `make ops`")
    if built_for != tf_version:
        raise OpLibraryError(
            f"tf-recopt op library was built for TensorFlow {built_for} but TensorFlow {tf_version} "
            "is installed; custom ops are ABI-bound to one release: rebuild with `make ops`")


def load_ops():
    """Registers the Recopt>* ops in this process (idempotent, thread-safe).

    Call before tf.saved_model.load() of a model optimized with custom ops.
    Returns the loaded op module.
    """
    global _library
    with _lock:
        if _library is None:
            import tensorflow as tf
            _check_build(tf.__version__)
            _point_at_onednn()
            try:
                _library = tf.load_op_library(library_path())
            except tf.errors.NotFoundError as exc:
                raise OpLibraryError(f"cannot load {library_path()}: {exc}") from exc
        return _library
