"""serving/link_into_tf_serving.sh on a stand-in TF Serving tree (the real
build needs Bazel and TF Serving's toolchain, which CI does not have)."""
import os
import subprocess

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, "serving", "link_into_tf_serving.sh")
RECENT_FORM = """SUPPORTED_TENSORFLOW_OPS = if_v2([]) + if_not_v2([
    "@org_tensorflow//tensorflow/contrib:contrib_kernels",
]) + [
    "@org_tensorflow_text//tensorflow_text:ops_lib",
]
"""


def _fake_checkout(root):
    build = root / "tensorflow_serving" / "model_servers" / "BUILD"
    build.parent.mkdir(parents=True)
    build.write_text(RECENT_FORM)
    return build


def test_links_once_and_copies_sources(tmp_path):
    build = _fake_checkout(tmp_path)
    for _ in range(2):  # idempotent
        subprocess.run([SCRIPT, str(tmp_path)], check=True, capture_output=True)
    text = build.read_text()
    assert text.count("//tensorflow_serving/custom_ops/recopt:recopt_ops") == 1
    assert text.startswith('SUPPORTED_TENSORFLOW_OPS = ["//tensorflow_serving/custom_ops/recopt:recopt_ops"] + if_v2')
    dest = tmp_path / "tensorflow_serving" / "custom_ops" / "recopt"
    assert (dest / "custom_ops" / "kernels" / "fused_mlp_kernel.cc").exists()
    assert (dest / "custom_ops" / "recopt.bzl").exists()
    copied = (dest / "BUILD").read_text()
    assert "recopt_op_library(" in copied and "py_library" not in copied


def test_refuses_a_directory_that_is_not_tf_serving(tmp_path):
    result = subprocess.run([SCRIPT, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "TF Serving checkout" in result.stderr
