// oneDNN's C API, resolved at run time from libdnnl.so.3 (PyPI onednn-cpu-gomp).
//
// Why dlopen and the C API, not the C++ header and a link-time dependency:
// - TensorFlow's libtensorflow_cc exports ~700 `dnnl::` C++ symbols of its
//   own bundled oneDNN into the global scope (TF loads its pywrap with
//   RTLD_GLOBAL). Inline C++ wrappers compiled here could bind to those at
//   load time and call into a different oneDNN release. The C entry points
//   (`dnnl_*`) are not exported by TensorFlow, so they always reach the
//   library opened here.
// - A missing libdnnl must not stop the op library from loading (TF Serving
//   builds, a user without the wheel): FusedMLP then runs its own kernels.
#ifndef RECOPT_CORE_ONEDNN_API_H_
#define RECOPT_CORE_ONEDNN_API_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.h"

namespace recopt {

#define RECOPT_ONEDNN_FUNCS(X)                                                                    \
  X(dnnl_version) X(dnnl_engine_create) X(dnnl_stream_create) X(dnnl_memory_desc_create_with_tag) \
  X(dnnl_memory_desc_destroy) X(dnnl_memory_desc_clone) X(dnnl_memory_desc_equal)                 \
  X(dnnl_memory_desc_get_size) X(dnnl_primitive_attr_create) X(dnnl_primitive_attr_destroy)       \
  X(dnnl_primitive_attr_set_post_ops) X(dnnl_primitive_attr_set_scratchpad_mode)                  \
  X(dnnl_primitive_attr_set_scales_mask) X(dnnl_post_ops_append_binary) X(dnnl_binary_primitive_desc_create)                  \
  X(dnnl_post_ops_create) X(dnnl_post_ops_destroy) X(dnnl_post_ops_append_eltwise)                \
  X(dnnl_matmul_primitive_desc_create) X(dnnl_reorder_primitive_desc_create)                      \
  X(dnnl_primitive_desc_query) X(dnnl_primitive_desc_query_md) X(dnnl_primitive_desc_destroy)     \
  X(dnnl_primitive_create) X(dnnl_primitive_destroy) X(dnnl_primitive_get_primitive_desc) X(dnnl_primitive_execute)                    \
  X(dnnl_memory_create) X(dnnl_memory_destroy) X(dnnl_stream_wait)

struct OnednnApi {
#define RECOPT_ONEDNN_DECLARE(f) decltype(&::f) f = nullptr;
  RECOPT_ONEDNN_FUNCS(RECOPT_ONEDNN_DECLARE)
#undef RECOPT_ONEDNN_DECLARE
  // libgomp's, reached through libdnnl's own dependency: oneDNN runs one
  // thread per call here, the caller's; FusedMLP shards rows itself.
  void (*omp_set_num_threads)(int) = nullptr;
  dnnl_engine_t engine = nullptr;
  std::string library;  // the path that was opened
};

// The loaded API, or nullptr when oneDNN is unavailable or RECOPT_ONEDNN=0.
// The library is $RECOPT_ONEDNN_LIBRARY, else libdnnl.so.3 on the loader's
// search path; it must be oneDNN 3.x (the C API is stable within a major).
const OnednnApi* Onednn();
// Why Onednn() is null ("" when it is not).
const std::string& OnednnUnavailableReason();

// Small helpers over the loaded API (Onednn() must be non-null).
inline bool OnednnOk(dnnl_status_t s) { return s == dnnl_success; }
// A [rows, cols] descriptor, or nullptr if oneDNN refuses it.
dnnl_memory_desc_t OnednnDesc(int64_t rows, int64_t cols, dnnl_data_type_t dt, dnnl_format_tag_t tag = dnnl_ab);
// The implementation a primitive descriptor chose, e.g. "brg:avx512_core_amx".
std::string OnednnImplName(const_dnnl_primitive_desc_t pd);
// The calling thread's stream; oneDNN's OpenMP team held to this thread.
dnnl_stream_t OnednnThreadStream();
// 64-byte aligned bytes, freed with the last reference.
std::shared_ptr<void> AlignedBuffer(size_t bytes);

// Owns the C handles it collects and frees them on every exit path.
struct OnednnHandles {
  std::vector<dnnl_memory_desc_t> mds;
  std::vector<dnnl_primitive_desc_t> pds;
  std::vector<dnnl_memory_t> mems;
  dnnl_primitive_attr_t attr = nullptr;
  dnnl_post_ops_t po = nullptr;
  OnednnHandles() = default;
  OnednnHandles(const OnednnHandles&) = delete;
  OnednnHandles& operator=(const OnednnHandles&) = delete;
  ~OnednnHandles();
  dnnl_memory_desc_t md(dnnl_memory_desc_t m) {
    mds.push_back(m);
    return m;
  }
  // A memory over p, owned here.
  dnnl_memory_t mem(const_dnnl_memory_desc_t md, const void* p);
};

}  // namespace recopt

#endif  // RECOPT_CORE_ONEDNN_API_H_
