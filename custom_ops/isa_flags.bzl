# The compile flags of each ISA's kernel unit (custom_ops/core/isa_<isa>.cc),
# in one table read by both builds: Bazel loads it (custom_ops/recopt.bzl)
# and custom_ops/build.py executes it as Python, which this file also is.
# The generic unit takes no extra flag; cpu_dispatch.cc picks a unit from
# CPUID at load time, so a binary built with these runs on any x86-64 CPU.
ISA_COPTS = {
    "avx2": ["-mavx2", "-mfma", "-ffp-contract=fast"],
    "avx512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mfma", "-ffp-contract=fast"],
}
