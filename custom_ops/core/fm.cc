#include "fm.h"

namespace recopt {

void FactorizationMachine(const IsaKernels& kernels, const float* x, int64_t b0, int64_t b1, int64_t fields, int64_t k,
                          bool reduce, float scale, float* out) {
  if (b0 >= b1) return;
  kernels.factorization_machine(x + b0 * fields * k, b1 - b0, fields, k, reduce, scale,
                                out + (reduce ? b0 : b0 * k));
}

}  // namespace recopt
