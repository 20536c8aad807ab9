// Compiled with -mavx2 -mfma (see setup.py / BUILD); selected only when CPUID says so.
#define RECOPT_ISA_NS avx2
#define RECOPT_ISA_NAME "avx2"
#define RECOPT_VEC_FLOATS 8
#define RECOPT_MR 6
#include "gemm_isa.inc"
