"""One macro, two products (design rule 9):

  <name>        cc_library, alwayslink: linked statically into
                tensorflow_model_server (add it to SUPPORTED_TENSORFLOW_OPS).
  <name>.so     the shared op library Python loads with tf.load_op_library.

Inside a TensorFlow Serving checkout the TensorFlow targets are
@org_tensorflow//tensorflow/core:framework and :lib (the defaults here);
in a standalone workspace set up like tensorflow/custom-op, pass
tf_deps = ["@local_config_tf//:libtensorflow_framework", "@local_config_tf//:tf_header_lib"].

The dense kernels are compiled once per ISA with their own -m flags and
picked at load time (custom_ops/core/cpu_dispatch.cc), so the binary runs
on machines with and without AVX-512 whatever --copt the server uses.
"""

load(":custom_ops/isa_flags.bzl", "ISA_COPTS")

_TF_DEPS = [
    "@org_tensorflow//tensorflow/core:framework",
    "@org_tensorflow//tensorflow/core:lib",
]

_COPTS = ["-O3", "-DNDEBUG", "-DRECOPT_HAVE_X86_ISAS"]

def recopt_op_library(name, tf_version, tf_deps = _TF_DEPS, visibility = None):
    # FusedMLP's oneDNN backend is left out of the server build: it opens a
    # pip-installed libdnnl at run time (custom_ops/core/onednn_api.h), so
    # the statically linked ops run the hand kernels (gemm="auto" falls back).
    onednn = ["custom_ops/core/onednn_api.h", "custom_ops/core/onednn_mlp.h"]
    core_hdrs = native.glob(["custom_ops/core/*.h", "custom_ops/core/*.inc"], exclude = onednn)
    isa_libs = []
    for isa, copts in ISA_COPTS.items():
        native.cc_library(
            name = name + "_core_" + isa,
            srcs = ["custom_ops/core/isa_%s.cc" % isa],
            hdrs = core_hdrs,
            copts = _COPTS + copts,
            alwayslink = 1,
        )
        isa_libs.append(":" + name + "_core_" + isa)

    native.cc_library(
        name = name + "_core",
        srcs = native.glob(
            ["custom_ops/core/*.cc"],
            exclude = ["custom_ops/core/isa_%s.cc" % isa for isa in ISA_COPTS] +
                      ["custom_ops/core/onednn_api.cc", "custom_ops/core/onednn_mlp.cc"],
        ),
        hdrs = core_hdrs,
        copts = _COPTS,
        deps = isa_libs,
        alwayslink = 1,
    )

    native.cc_library(
        name = name,
        srcs = native.glob(["custom_ops/kernels/*.cc", "custom_ops/kernels/*.h", "custom_ops/ops/*.cc"], exclude = ["**/*.cu.cc"]),
        copts = _COPTS,
        local_defines = ['RECOPT_TF_VERSION=\\"%s\\"' % tf_version],
        deps = [":" + name + "_core"] + tf_deps,
        alwayslink = 1,
        visibility = visibility,
    )

    native.cc_binary(
        name = name + ".so",
        linkshared = 1,
        deps = [":" + name],
        visibility = visibility,
    )

_CUDA_DEPS = [
    "@local_config_cuda//cuda:cuda_headers",
    "@local_config_cuda//cuda:cudart",
    "@local_config_cuda//cuda:cublas",
]

def recopt_gpu_library(name, cuda_library, cuda_deps = _CUDA_DEPS, tf_deps = _TF_DEPS, visibility = None):
    """The GPU kernels, for a CUDA build of tensorflow_model_server.

    <name>_gpu: cc_library, alwayslink; add it next to the CPU target in
    SUPPORTED_TENSORFLOW_OPS. `cuda_library` is the CUDA rule of the
    workspace (TensorFlow's: load("@local_config_cuda//cuda:build_defs.bzl",
    "cuda_library")), passed in so this file loads without CUDA configured.
    The device code (custom_ops/gpu/*.cu) has no TensorFlow include; the
    OpKernels (kernels/*.cu.cc) are plain C++ over it.
    """
    cuda_library(
        name = name + "_gpu_core",
        srcs = native.glob(["custom_ops/gpu/*.cu"]),
        hdrs = native.glob(["custom_ops/gpu/*.h", "custom_ops/gpu/*.cuh", "custom_ops/core/activation.h"]),
        copts = ["-O3", "-DNDEBUG"],
        deps = cuda_deps,
    )
    native.cc_library(
        name = name + "_gpu",
        # Every kernels/ header: the GPU kernels share topk_inputs.h and mlp_attrs.h with the CPU ones.
        srcs = native.glob(["custom_ops/kernels/*.cu.cc", "custom_ops/kernels/*.h"]),
        copts = _COPTS,
        deps = [":" + name + "_gpu_core", ":" + name] + tf_deps,
        alwayslink = 1,
        visibility = visibility,
    )
