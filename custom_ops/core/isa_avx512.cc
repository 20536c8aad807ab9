// Compiled with -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma; selected only when CPUID says so.
#define RECOPT_ISA_NS avx512
#define RECOPT_ISA_NAME "avx512"
#define RECOPT_VEC_FLOATS 16
#define RECOPT_MR 8
#include "gemm_isa.inc"
