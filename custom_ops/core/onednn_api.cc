#include "onednn_api.h"

#include <dlfcn.h>

#include <cstdlib>
#include <cstring>

namespace recopt {
namespace {

struct Loaded {
  OnednnApi api;
  bool ok = false;
  std::string reason;
};

Loaded Load() {
  Loaded out;
  const char* off = std::getenv("RECOPT_ONEDNN");
  if (off != nullptr && std::strcmp(off, "0") == 0) {
    out.reason = "RECOPT_ONEDNN=0";
    return out;
  }
  const char* env = std::getenv("RECOPT_ONEDNN_LIBRARY");
  const std::string path = env != nullptr && *env != '\0' ? env : "libdnnl.so.3";
  // RTLD_LOCAL: its symbols stay out of the global scope, where they could
  // meet TensorFlow's own oneDNN.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = dlerror();
    out.reason = "cannot open " + path + ": " + (err ? err : "unknown error");
    return out;
  }
  OnednnApi& api = out.api;
  api.library = path;
#define RECOPT_ONEDNN_RESOLVE(f)                                              \
  api.f = reinterpret_cast<decltype(api.f)>(dlsym(handle, #f));              \
  if (api.f == nullptr) {                                                     \
    out.reason = path + " has no " #f;                                        \
    return out;                                                               \
  }
  RECOPT_ONEDNN_FUNCS(RECOPT_ONEDNN_RESOLVE)
#undef RECOPT_ONEDNN_RESOLVE
  api.omp_set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(handle, "omp_set_num_threads"));
  const dnnl_version_t* v = api.dnnl_version();
  if (v == nullptr || v->major != 3) {
    out.reason = path + " is not oneDNN 3.x";
    return out;
  }
  if (api.dnnl_engine_create(&api.engine, dnnl_cpu, 0) != dnnl_success) {
    out.reason = "oneDNN could not create a CPU engine";
    return out;
  }
  out.ok = true;
  return out;
}

const Loaded& Get() {
  static const Loaded loaded = Load();
  return loaded;
}

}  // namespace

const OnednnApi* Onednn() { return Get().ok ? &Get().api : nullptr; }

const std::string& OnednnUnavailableReason() { return Get().reason; }

}  // namespace recopt
