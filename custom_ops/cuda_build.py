"""Builds the GPU part of custom_ops/ (never needed for the CPU library).

Three uses:
  check        compile every CUDA source (custom_ops/gpu/*.cu with nvcc,
               the TensorFlow GPU kernels custom_ops/kernels/*.cu.cc with g++)
               without linking: CPU CI runs it whenever nvcc is present, so
               GPU code that no longer compiles fails `make test`.
  core OUT     the kernel core plus its C entry points as OUT/librecopt_gpu_core.so,
               for custom_ops/gpu_harness.py on a GPU machine (no TensorFlow).
  op library   custom_ops/build.py calls gpu_objects() when RECOPT_CUDA=1.

cuBLAS headers are looked up beside nvcc, in NVIDIA's pip wheels (nvidia-cublas*),
and last in the CUDA headers TensorFlow's wheel carries (third_party/gpus/cuda),
added after nvcc's own so that only what nvcc lacks comes from there.
"""
import argparse
import concurrent.futures
import glob
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig

ROOT = pathlib.Path(__file__).resolve().parent
GPU_DIR = ROOT / "gpu"
CORE_LIB = "librecopt_gpu_core.so"
# Ampere and Hopper; RECOPT_CUDA_ARCHS="80;90" style overrides.
DEFAULT_ARCHS = ("80", "90")


class CudaBuildError(RuntimeError):
    pass


def find_nvcc():
    nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
    if not nvcc:
        for cand in ["/usr/local/cuda/bin/nvcc"] + _site_globs("nvidia/cuda_nvcc/bin/nvcc", "nvidia/cu*/bin/nvcc"):
            if os.path.exists(cand):
                return cand
    return nvcc


def nvcc_version(nvcc):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    if not m:
        raise CudaBuildError(f"cannot read the CUDA release from `{nvcc} --version`:\n{out}")
    return int(m.group(1)), int(m.group(2))


def _site_globs(*patterns):
    found = []
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for pattern in patterns:
            found.extend(sorted(glob.glob(os.path.join(base, pattern))))
    return found


def _tf_include():
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf.sysconfig.get_include()


def include_flags(nvcc):
    """-I/-idirafter flags that make cublas_v2.h and cublasLt.h visible."""
    toolkit = pathlib.Path(nvcc).resolve().parent.parent / "include"
    if (toolkit / "cublas_v2.h").exists():
        return []
    for inc in _site_globs("nvidia/cublas/include", "nvidia/cu*/include"):
        if os.path.exists(os.path.join(inc, "cublas_v2.h")):
            return ["-I" + inc]
    tf_inc = _tf_include()
    fallback = os.path.join(tf_inc, "third_party", "gpus", "cuda", "include") if tf_inc else None
    if fallback and os.path.exists(os.path.join(fallback, "cublas_v2.h")):
        return ["-Xcompiler", "-idirafter", "-Xcompiler", fallback]
    raise CudaBuildError("no cuBLAS headers found (cublas_v2.h): install nvidia-cublas-cu12, or a full CUDA toolkit")


def library_dirs(nvcc):
    dirs = [str(pathlib.Path(nvcc).resolve().parent.parent / sub) for sub in ("lib64", "lib")]
    dirs += _site_globs("nvidia/cublas/lib", "nvidia/cuda_runtime/lib", "nvidia/cu*/lib")
    return [d for d in dirs if os.path.isdir(d)]


def archs():
    raw = os.environ.get("RECOPT_CUDA_ARCHS")
    return tuple(a for a in re.split(r"[;, ]+", raw) if a) if raw else DEFAULT_ARCHS


def _gencode():
    flags = []
    for a in archs():
        flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return flags


def cu_sources():
    return sorted(GPU_DIR.glob("*.cu"))


def kernel_sources():
    return sorted((ROOT / "kernels").glob("*.cu.cc"))


def _run(cmd, what):
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise CudaBuildError(f"{what} failed:\n{' '.join(cmd)}\n{result.stderr}")


def _nvcc_compile(nvcc, src, obj, includes):
    cmd = [nvcc, "-std=c++17", "-O3", "-c", str(src), "-o", str(obj), "-Xcompiler", "-fPIC",
           "-DNDEBUG"] + _gencode() + includes
    _run(cmd, f"nvcc {src.relative_to(ROOT.parent)}")
    return obj


def _gxx_kernel(src, obj, tf_cflags, syntax_only):
    cxx = os.environ.get("CXX", "g++")
    out = ["-fsyntax-only"] if syntax_only else ["-c", "-o", str(obj)]
    cmd = [cxx, "-x", "c++", str(src)] + out + tf_cflags + [
        "-O3", "-fPIC", "-Wall", "-Wno-sign-compare", "-Wno-deprecated-declarations", "-DNDEBUG"]
    _run(cmd, f"g++ {src.relative_to(ROOT.parent)}")
    return obj


def _tf_cflags():
    import tensorflow as tf
    return tf.sysconfig.get_compile_flags()


def _compile_all(nvcc, build_dir, tf_cflags, syntax_only, extra_cc=()):
    build_dir.mkdir(parents=True, exist_ok=True)
    includes = include_flags(nvcc)  # once: the lookup may import TensorFlow
    jobs = []
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for src in cu_sources():
            jobs.append(pool.submit(_nvcc_compile, nvcc, src, build_dir / (src.stem + ".cu.o"), includes))
        for src in extra_cc:
            jobs.append(pool.submit(_nvcc_compile, nvcc, src, build_dir / (src.stem + ".o"), includes))
        if tf_cflags is not None:
            for src in kernel_sources():
                jobs.append(pool.submit(_gxx_kernel, src, build_dir / (src.name + ".o"), tf_cflags, syntax_only))
        return [j.result() for j in jobs]


def check(build_dir=None):
    """Compiles every CUDA source; returns the files checked."""
    nvcc = find_nvcc()
    if not nvcc:
        raise CudaBuildError("nvcc not found (set NVCC or put it on PATH)")
    build_dir = pathlib.Path(build_dir or ROOT.parent / "build" / "cuda_check")
    _compile_all(nvcc, build_dir, _tf_cflags(), syntax_only=True, extra_cc=[GPU_DIR / "capi.cc"])
    return cu_sources() + [GPU_DIR / "capi.cc"] + kernel_sources()


def build_core(out_dir, build_dir=None):
    """librecopt_gpu_core.so: the kernel core and capi.cc, linked with cudart and cuBLAS."""
    nvcc = find_nvcc()
    if not nvcc:
        raise CudaBuildError("nvcc not found (set NVCC or put it on PATH)")
    build_dir = pathlib.Path(build_dir or ROOT.parent / "build" / "gpu_core")
    objs = _compile_all(nvcc, build_dir, None, syntax_only=False, extra_cc=[GPU_DIR / "capi.cc"])
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lib = out / CORE_LIB
    link = [f"-L{d}" for d in library_dirs(nvcc)] + [f"-Xlinker=-rpath={d}" for d in library_dirs(nvcc)]
    _run([nvcc, "-shared", "-o", str(lib)] + [str(o) for o in objs] + _gencode() + link +
         ["-lcublasLt", "-lcublas", "-lcudart"], "linking the GPU core")
    return lib


def gpu_objects(build_dir, tf_cflags, tf_cuda_version):
    """Objects and link flags for the op library's GPU kernels (RECOPT_CUDA=1).

    The toolkit must be the CUDA major release TensorFlow was built with: the
    library shares TensorFlow's process, streams and CUDA runtime.
    """
    nvcc = find_nvcc()
    if not nvcc:
        raise CudaBuildError("RECOPT_CUDA=1 but nvcc was not found (pip install nvidia-cuda-nvcc-cu12, or set NVCC)")
    have = nvcc_version(nvcc)
    want = tuple(int(x) for x in str(tf_cuda_version).split(".")[:2])
    if have[0] != want[0]:
        raise CudaBuildError(f"RECOPT_CUDA=1: nvcc is CUDA {have[0]}.{have[1]} but TensorFlow was built with "
                             f"CUDA {tf_cuda_version}; use a CUDA {want[0]}.x toolkit (NVIDIA's -cu{want[0]} wheels)")
    objs = _compile_all(nvcc, pathlib.Path(build_dir) / "gpu", tf_cflags, syntax_only=False)
    dirs = library_dirs(nvcc)
    link = [f"-L{d}" for d in dirs] + [f"-Wl,-rpath,{d}" for d in dirs] + ["-lcublasLt", "-lcublas", "-lcudart"]
    return objs, link


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("check", help="compile-check every CUDA source")
    core = sub.add_parser("core", help="build librecopt_gpu_core.so for the harness")
    core.add_argument("out_dir")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "check":
            files = check()
            print(f"compiled {len(files)} CUDA sources for sm_{', sm_'.join(archs())}", file=sys.stderr)
        else:
            print(build_core(args.out_dir), file=sys.stderr)
    except CudaBuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
