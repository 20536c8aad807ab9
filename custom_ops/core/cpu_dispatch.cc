// Picks the dense kernels once, at first use, from what this CPU supports.
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "isa_kernels.h"

namespace recopt {
namespace {

bool CpuHas(const char* isa) {
#if defined(__x86_64__) && defined(RECOPT_HAVE_X86_ISAS)
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx512vnni") == 0) return CpuHas("avx512") && __builtin_cpu_supports("avx512vnni");
  if (std::strcmp(isa, "avx512") == 0) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
  }
  if (std::strcmp(isa, "avx2") == 0) {
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }
#endif
  return std::strcmp(isa, "generic") == 0;
}

const IsaKernels& Choose() {
  // RECOPT_ISA lets tests and benchmarks force a lower path on a bigger CPU.
  const char* forced = std::getenv("RECOPT_ISA");
  if (forced != nullptr && *forced != '\0') {
    if (const IsaKernels* k = IsaKernelsFor(forced)) return *k;
  }
  for (const char* isa : {"avx512vnni", "avx512", "avx2"}) {
    if (const IsaKernels* k = IsaKernelsFor(isa)) return *k;
  }
  return generic::Kernels();
}

}  // namespace

const IsaKernels* IsaKernelsFor(const char* isa) {
  if (!CpuHas(isa)) return nullptr;
#if defined(RECOPT_HAVE_X86_ISAS)
  if (std::strcmp(isa, "avx512vnni") == 0) return &avx512::VnniKernels();
  if (std::strcmp(isa, "avx512") == 0) return &avx512::Kernels();
  if (std::strcmp(isa, "avx2") == 0) return &avx2::Kernels();
#endif
  if (std::strcmp(isa, "generic") == 0) return &generic::Kernels();
  return nullptr;
}

const IsaKernels& SelectedIsaKernels() {
  static const IsaKernels& k = Choose();
  return k;
}

}  // namespace recopt
