"""tf-recopt: an inference optimizer for TensorFlow recommender SavedModels.

`pip install --no-build-isolation .` compiles custom_ops/ with the installed
TensorFlow's compile/link flags into tf_recopt/ops/_recopt_ops.so (the op
library must be built against the exact TensorFlow it will load into, which
is why the build is not isolated).
"""
import pathlib
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = pathlib.Path(__file__).resolve().parent


class BuildOpLibrary(build_ext):
    """Builds the op library with custom_ops/build.py instead of distutils."""

    def build_extension(self, ext):
        sys.path.insert(0, str(HERE))
        from custom_ops import build as ops_build

        target = pathlib.Path(self.get_ext_fullpath(ext.name))
        build = ops_build.build_serving if ext.name == "tf_recopt.serving.request_path" else ops_build.build
        built = build(target.parent, build_dir=HERE / "build" / "custom_ops")
        assert built.name == target.name, (built, target)


setup(
    name="tf-recopt",
    version="0.1.0",
    description="Inference optimizer for TensorFlow recommender and ads-ranking SavedModels",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # custom_ops.spec (op names, attrs, encodings) is the layer both others read;
    # custom_ops itself comes along as its parent package (build scripts only).
    packages=find_packages(include=["tf_recopt", "tf_recopt.*", "grappler_passes", "grappler_passes.*",
                                    "custom_ops", "custom_ops.spec"]),
    # The op library, and serving/native/ (the C++ request path of `tf-recopt serve`).
    ext_modules=[Extension("tf_recopt.ops._recopt_ops", sources=[]),
                 Extension("tf_recopt.serving.request_path", sources=[])],
    cmdclass={"build_ext": BuildOpLibrary},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorflow-serving-api>=2.21,<2.22",
        "tf_keras>=2.21,<2.22",
        "tensorflow-recommenders>=0.7.3",
        "numpy",
        "absl-py",
        "grpcio",
        # FusedMLP's GEMM backend (custom_ops/core/onednn_api.h): the CPU-only
        # GNU-OpenMP build; its headers must be present when the op library
        # is compiled (`pip install onednn-devel-cpu-gomp` first), else the
        # library builds without it and runs the hand kernels.
        "onednn-cpu-gomp==2023.2.0",
    ],
    extras_require={
        "test": ["pytest"],
        # tf_recopt.tfx.RecOptimizer; the pipeline image already has it.
        "tfx": ["tfx>=1.21,<1.22"],
        # Peers for `tf-recopt bench --peers` (ONNX Runtime via tf2onnx, OpenVINO, plots)
        # and bench/ (Faiss, the exact-search reference for retrieval).
        "bench": ["tf2onnx>=1.17", "onnx", "onnxruntime", "openvino>=2026.4", "matplotlib", "faiss-cpu"],
    },
    entry_points={"console_scripts": ["tf-recopt=tf_recopt.cli:run"]},
)
