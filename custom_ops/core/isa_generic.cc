// Baseline x86-64 (SSE2) or any other target: 4-float vectors.
#define RECOPT_ISA_NS generic
#define RECOPT_ISA_NAME "generic"
#define RECOPT_VEC_FLOATS 4
#define RECOPT_MR 6
#include "gemm_isa.inc"
