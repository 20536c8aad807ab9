"""Compiles custom_ops/ into the one op library shipped inside tf_recopt.

Plain g++ with TensorFlow's own compile and link flags (the custom-op
convention), -O3, and one object per ISA for the dense kernels so the CPU
path is chosen at load time. Objects are cached by mtime under build/ so a
rebuild after a one-file change takes seconds. Used by setup.py and by
`python -m custom_ops.build` (the Makefile's `ops` target).
"""
import concurrent.futures
import os
import pathlib
import platform
import subprocess
import sys
import sysconfig

ROOT = pathlib.Path(__file__).resolve().parent
LIB_STEM = "_recopt_ops"



def _isa_copts():
    """isa -> compile flags, from isa_flags.bzl: the table Bazel's
    recopt.bzl loads too, written so that it is also plain Python."""
    scope = {}
    exec((ROOT / "isa_flags.bzl").read_text(encoding="utf-8"), scope)
    return scope["ISA_COPTS"]


# Per-file flags for the ISA-specific kernel units (see core/isa_kernels.h).
ISA_FLAGS = {f"isa_{isa}.cc": flags for isa, flags in _isa_copts().items()}
X86_ONLY = set(ISA_FLAGS)
# Compiled only where oneDNN's headers are (the onednn-devel-cpu-gomp wheel);
# the library itself is opened at run time (core/onednn_api.h says why).
ONEDNN_SOURCES = {"onednn_api.cc", "onednn_mlp.cc"}


def library_name():
    """Same name as a setuptools extension module, so `make ops` and pip agree."""
    return LIB_STEM + sysconfig.get_config_var("EXT_SUFFIX")


def _tf_flags():
    import tensorflow as tf  # imported late: setup.py must parse without TF
    return tf.__version__, tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()


def _tf_cuda_version():
    import tensorflow as tf
    version = tf.sysconfig.get_build_info().get("cuda_version")
    if not version:
        raise RuntimeError("RECOPT_CUDA=1 needs a CUDA build of TensorFlow (tf.sysconfig reports no cuda_version)")
    return version


def onednn_include():
    """The folder holding oneapi/dnnl/dnnl.h: $ONEDNN_INCLUDE, or where pip put
    onednn-devel-cpu-gomp's headers (<prefix>/include); None if neither has it."""
    for folder in (os.environ.get("ONEDNN_INCLUDE"), sysconfig.get_paths()["data"] + "/include",
                   sys.prefix + "/include"):
        if folder and (pathlib.Path(folder) / "oneapi" / "dnnl" / "dnnl.h").exists():
            return folder
    return None


def sources():
    is_x86 = platform.machine() in ("x86_64", "AMD64")
    have_onednn = onednn_include() is not None
    found = []
    for sub in ("core", "kernels", "ops"):
        for path in sorted((ROOT / sub).glob("*.cc")):
            if path.name.endswith(".cu.cc"):
                continue  # GPU kernels: only with RECOPT_CUDA=1 (custom_ops/cuda_build.py)
            if path.name in X86_ONLY and not is_x86:
                continue
            if path.name in ONEDNN_SOURCES and not have_onednn:
                continue
            found.append(path)
    return found, is_x86


def _compile(cxx, src, obj, flags):
    deps = [src] + list(ROOT.glob("core/*.h")) + list(ROOT.glob("core/*.inc")) + list(ROOT.glob("kernels/*.h"))
    if obj.exists() and obj.stat().st_mtime >= max(p.stat().st_mtime for p in deps):
        return obj
    cmd = [cxx, "-c", str(src), "-o", str(obj)] + flags + ISA_FLAGS.get(src.name, [])
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {src.relative_to(ROOT.parent)} failed:\n{result.stderr}")
    return obj


def _setup(build_dir):
    """(TensorFlow version, compile flags, link flags, object folder, TensorFlow's own compile flags)."""
    tf_version, cflags, lflags = _tf_flags()
    # Objects depend on the TensorFlow headers: one cache per release.
    build_dir = pathlib.Path(build_dir or ROOT.parent / "build" / "custom_ops") / f"tf-{tf_version}"
    build_dir.mkdir(parents=True, exist_ok=True)
    flags = cflags + ["-O3", "-fPIC", "-Wall", "-Wno-sign-compare", "-DNDEBUG",
                      f'-DRECOPT_TF_VERSION="{tf_version}"']
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-DRECOPT_HAVE_X86_ISAS")
    if onednn_include():
        flags += ["-DRECOPT_HAVE_ONEDNN", "-isystem", onednn_include()]
    return tf_version, flags, lflags, build_dir, cflags


def _compile_all(cxx, srcs, build_dir, flags):
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        futures = [pool.submit(_compile, cxx, s, build_dir / (s.parent.name + "_" + s.stem + ".o"), flags)
                   for s in srcs]
        return [f.result() for f in futures]


def build_core_tests(build_dir=None):
    """Links custom_ops/core_tests/*.cc with the core objects (no TensorFlow
    library: core/ has no TensorFlow include) into one test binary, reusing
    the op build's cached objects; returns its path."""
    _, flags, _, build_dir, _ = _setup(build_dir)
    cxx = os.environ.get("CXX", "g++")
    core = [s for s in sources()[0] if s.parent.name == "core"]
    tests = sorted((ROOT / "core_tests").glob("*.cc"))
    objs = _compile_all(cxx, core + tests, build_dir, flags)
    binary = build_dir / "core_tests"
    subprocess.run([cxx, "-o", str(binary)] + [str(o) for o in objs] + ["-ldl", "-lpthread"], check=True)
    return binary


def build(out_dir, build_dir=None, verbose=True):
    """Builds the op library into out_dir; returns its path."""
    out_dir = pathlib.Path(out_dir)
    tf_version, flags, lflags, build_dir, cflags = _setup(build_dir)
    srcs, _ = sources()
    cxx = os.environ.get("CXX", "g++")
    objs = _compile_all(cxx, srcs, build_dir, flags)
    gpu_link = []
    if os.environ.get("RECOPT_CUDA") == "1":
        from custom_ops import cuda_build
        gpu_objs, gpu_link = cuda_build.gpu_objects(build_dir, cflags, _tf_cuda_version())
        objs += gpu_objs
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / library_name()
    tmp = lib.with_suffix(".so.tmp")
    subprocess.run([cxx, "-shared", "-o", str(tmp)] + [str(o) for o in objs] + lflags + gpu_link + ["-ldl", "-O3"],
                   check=True)
    os.replace(tmp, lib)
    if verbose:
        print(f"built {lib} ({len(objs)} objects, TensorFlow {tf_version})", file=sys.stderr)
    return lib


SERVING_NATIVE = ROOT.parent / "serving" / "native"


def serving_library_name():
    return "request_path" + sysconfig.get_config_var("EXT_SUFFIX")


def build_serving(out_dir, build_dir=None, verbose=True):
    """serving/native/ (the C++ request path of `tf-recopt serve`) as the
    Python extension tf_recopt.serving.request_path; returns its path. Same
    TensorFlow flags as the op library, plus Python's headers."""
    out_dir = pathlib.Path(out_dir)
    tf_version, flags, lflags, build_dir, _ = _setup(build_dir)
    flags = flags + ["-fvisibility=hidden", "-I" + sysconfig.get_paths()["include"]]
    cxx = os.environ.get("CXX", "g++")
    srcs = sorted(SERVING_NATIVE.glob("*.cc"))
    newest_header = max(p.stat().st_mtime for p in SERVING_NATIVE.glob("*.h"))

    def compile_one(src):
        obj = build_dir / ("serving_" + src.stem + ".o")
        if obj.exists() and obj.stat().st_mtime >= max(src.stat().st_mtime, newest_header):
            return obj
        result = subprocess.run([cxx, "-c", str(src), "-o", str(obj)] + flags, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {src.relative_to(ROOT.parent)} failed:\n{result.stderr}")
        return obj
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        objs = list(pool.map(compile_one, srcs))
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / serving_library_name()
    tmp = lib.with_suffix(".so.tmp")
    subprocess.run([cxx, "-shared", "-o", str(tmp)] + [str(o) for o in objs] + lflags + ["-lpthread"], check=True)
    os.replace(tmp, lib)
    if verbose:
        print(f"built {lib} ({len(objs)} objects, TensorFlow {tf_version})", file=sys.stderr)
    return lib


if __name__ == "__main__":
    build(ROOT.parent / "tf_recopt" / "ops")
    build_serving(ROOT.parent / "tf_recopt" / "serving")
