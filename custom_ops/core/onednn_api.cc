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

dnnl_memory_desc_t OnednnDesc(int64_t rows, int64_t cols, dnnl_data_type_t dt, dnnl_format_tag_t tag) {
  dnnl_dims_t dims = {rows, cols};
  dnnl_memory_desc_t md = nullptr;
  return OnednnOk(Onednn()->dnnl_memory_desc_create_with_tag(&md, 2, dims, dt, tag)) ? md : nullptr;
}

std::string OnednnImplName(const_dnnl_primitive_desc_t pd) {
  const char* name = nullptr;
  Onednn()->dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
  return name ? name : "";
}

dnnl_stream_t OnednnThreadStream() {
  thread_local dnnl_stream_t stream = [] {
    const OnednnApi& api = *Onednn();
    if (api.omp_set_num_threads) api.omp_set_num_threads(1);
    dnnl_stream_t s = nullptr;
    api.dnnl_stream_create(&s, api.engine, dnnl_stream_default_flags);
    return s;
  }();
  return stream;
}

namespace {
struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
}  // namespace

std::shared_ptr<void> AlignedBuffer(size_t bytes) {
  return std::shared_ptr<void>(std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64), AlignedFree());
}

OnednnHandles::~OnednnHandles() {
  const OnednnApi& api = *Onednn();
  for (auto m : mems) api.dnnl_memory_destroy(m);
  for (auto p : pds) api.dnnl_primitive_desc_destroy(p);
  for (auto m : mds) if (m) api.dnnl_memory_desc_destroy(m);
  if (attr) api.dnnl_primitive_attr_destroy(attr);
  if (po) api.dnnl_post_ops_destroy(po);
}

dnnl_memory_t OnednnHandles::mem(const_dnnl_memory_desc_t md, const void* p) {
  dnnl_memory_t m = nullptr;
  Onednn()->dnnl_memory_create(&m, md, Onednn()->engine, const_cast<void*>(p));
  mems.push_back(m);
  return m;
}

}  // namespace recopt
