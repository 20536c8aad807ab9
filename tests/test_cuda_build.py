"""The GPU sources build, where they can be built without a GPU.

CI has nvcc but no GPU and no cuBLAS libraries: it compiles every CUDA
source (custom_ops.cuda_build check) and runs the host-side checks of the
select's key arithmetic. The kernels themselves run in tests/test_gpu_core.py
on a GPU machine.
"""
import subprocess

import pytest

from custom_ops import build, cuda_build

NVCC = cuda_build.find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")


def test_cpu_library_has_no_cuda_sources():
    srcs, _ = build.sources()
    assert srcs and not any(s.name.endswith((".cu", ".cu.cc")) for s in srcs)
    assert cuda_build.kernel_sources(), "the GPU OpKernels should exist"
    assert {s.name for s in cuda_build.cu_sources()} == {"topk_gpu.cu", "score_topk_gpu.cu", "dense_gpu.cu"}


@needs_nvcc
def test_every_cuda_source_compiles(tmp_path):
    checked = cuda_build.check(tmp_path)
    names = {p.name for p in checked}
    assert {"topk_gpu.cu", "score_topk_gpu.cu", "dense_gpu.cu", "capi.cc", "topk_kernel.cu.cc",
            "score_topk_kernel.cu.cc", "fused_mlp_kernel.cu.cc"} <= names
    assert len(list(tmp_path.glob("*.o"))) == len(cuda_build.cu_sources()) + 1


@needs_nvcc
def test_select_key_arithmetic_on_host(tmp_path):
    exe = tmp_path / "select_keys_test"
    src = build.ROOT.parent / "tests" / "cuda" / "select_keys_test.cu"
    subprocess.run([NVCC, "-std=c++17", "-O1", "-o", str(exe), str(src)], check=True, capture_output=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "all checks passed" in result.stdout


@needs_nvcc
def test_op_library_refuses_a_toolkit_tensorflow_was_not_built_with(tmp_path):
    major, _ = cuda_build.nvcc_version(NVCC)
    with pytest.raises(cuda_build.CudaBuildError, match=rf"nvcc is CUDA {major}\.\d+ but TensorFlow was built with CUDA {major + 1}\.2"):
        cuda_build.gpu_objects(tmp_path, [], f"{major + 1}.2")


def test_archs_override(monkeypatch):
    monkeypatch.setenv("RECOPT_CUDA_ARCHS", "75;90")
    assert cuda_build.archs() == ("75", "90")
    monkeypatch.delenv("RECOPT_CUDA_ARCHS")
    assert cuda_build.archs() == cuda_build.DEFAULT_ARCHS
