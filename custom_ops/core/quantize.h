// Dynamic per-row int8 quantization of activations, for integer matmuls.
//
// Why one scale per row, not per tensor: a row's integers (and so its
// answer) then depend on that row alone, never on which requests a batch
// happens to hold, and one outlier example cannot coarsen the others.
// oneDNN 3.2's fast int8 matmuls take only a common source scale, so the
// row scales are applied after the product (onednn_mlp.cc).
#ifndef RECOPT_CORE_QUANTIZE_H_
#define RECOPT_CORE_QUANTIZE_H_

#include <cstdint>

namespace recopt {

// Rounds each of `rows` rows of x (k floats each, contiguous) to integers
// with a scale of its own, in fp32 arithmetic exactly as written:
//   amax = max|x_i|, scale = amax / qmax, inv = qmax / amax,
//   q_i = clamp(rint(x_i * inv))   (round half to even)
// so that x_i ~ q_i * scale with |error| <= scale / 2. qmax is 127 (int8
// out, range [-127, 127]) or, with unsigned_out, 255 (uint8 out, for input
// an activation left non-negative; a negative clamps to 0). A zero row gets
// scale 1. Returns false, with q partly written, when x holds a NaN or Inf.
bool QuantizeRows(const float* x, int64_t rows, int64_t k, bool unsigned_out, void* q, float* scales);

// Weights w [k, n] (row-major) to int8 with one scale per output column,
// the arithmetic of QuantizeRows applied to each column; q is [k, n] too.
bool QuantizeColumns(const float* w, int64_t k, int64_t n, int8_t* q, float* scales);

}  // namespace recopt

#endif  // RECOPT_CORE_QUANTIZE_H_
