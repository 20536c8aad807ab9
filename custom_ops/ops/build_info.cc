// Records the TensorFlow release this library was compiled against, as a
// string the Python loader finds in the file without loading it (loading a
// mismatched library can fail with unresolved symbols or worse).
#ifndef RECOPT_TF_VERSION
#error "RECOPT_TF_VERSION must be defined by the build (custom_ops/build.py or BUILD)"
#endif

extern "C" __attribute__((used, visibility("default")))
const char recopt_build_info[] = "RECOPT_BUILT_FOR_TF=" RECOPT_TF_VERSION ";";
