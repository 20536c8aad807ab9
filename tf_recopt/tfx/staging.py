"""optimize() works on local directories (it stages its output next to the
target and renames it into place); Kubeflow and Vertex hand components
gs:// URIs. Remote models are copied to a local temp dir and back with
TFX's own io_utils.copy_dir (what Pusher uses)."""
import contextlib
import os
import re
import shutil
import tempfile

from tfx.utils import io_utils

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def is_remote(uri):
    return bool(_SCHEME.match(uri)) and not uri.startswith("file://")


def local_path(uri):
    return uri[len("file://"):] if uri.startswith("file://") else uri


@contextlib.contextmanager
def staged(src_uri, dst_uri):
    """Yields local (src, dst) paths; a remote dst is uploaded only when the
    block succeeds, so a failed optimization writes nothing there."""
    tmp = tempfile.mkdtemp(prefix="recopt_tfx_") if is_remote(src_uri) or is_remote(dst_uri) else None
    try:
        src = local_path(src_uri)
        if is_remote(src_uri):
            src = os.path.join(tmp, "input")
            io_utils.copy_dir(src_uri, src)
        dst = os.path.join(tmp, "output") if is_remote(dst_uri) else local_path(dst_uri)
        yield src, dst
        if is_remote(dst_uri):
            io_utils.copy_dir(dst, dst_uri)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
