// DLRM-style feature interaction: selected entries of each example's Gram
// matrix x x^T, computed directly (only the requested dot products, each
// feature row read from L1), never the full [F, F] matrix.
#ifndef RECOPT_CORE_INTERACTION_H_
#define RECOPT_CORE_INTERACTION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "isa_kernels.h"

namespace recopt {

// Rows are scored 4 at a time against features [0, chunk_count[c]): for a
// lower triangle that is half the Gram matrix. offset[t] is where output
// column t's dot product lands in the scratch.
struct InteractionPairs {
  std::vector<int32_t> chunk_count;
  std::vector<int32_t> offset;
  // The narrow-field path (GramPairs, dim <= kGramPairsMaxDim): columns
  // needed per Gram row, and each output's place in its padded Gram block.
  std::vector<int> row_count;
  std::vector<int> padded;
};

// An index that selects no Gram entry: its output column is always 0.0
// (tensorflow-recommenders' skip_gather keeps all F*F columns, the upper
// triangle zeroed by a tf.where).
constexpr int64_t kZeroColumn = -1;

// Plans flat Gram indices (i * F + j, or kZeroColumn); returns what is wrong
// with which index, or "" when all are in [0, F*F) or kZeroColumn.
std::string PairsFromFlat(const std::vector<int64_t>& flat, int64_t num_features, InteractionPairs* pairs);

// Floats of scratch DotInteraction needs for fields of width `dim`: the
// Gram block and one 0.0 that zero columns copy.
int64_t InteractionScratchFloats(int64_t num_features, int64_t dim);

// out[b, t] = dot(x[b, i_t], x[b, j_t]) with flat[t] = i_t * F + j_t, for b in [b0, b1);
// x is [B, F, d] row-major, out is [B, P]. Each example's Gram matrix is
// scored into L1-resident scratch by the ISA's score kernel (an F x F block
// of dot products, 4 rows at a time), then the requested entries are copied.
// out row b (row stride ldo) gets the pairs' dot products of example b.
// Fields of width <= kGramPairsMaxDim (DeepCTR's 4-16) take the transposed
// path instead (IsaKernels::gram_pairs), rows computed up to row_count.
void DotInteraction(const IsaKernels& kernels, const float* x, int64_t b0, int64_t b1, int64_t num_features,
                    int64_t dim, const InteractionPairs& pairs, float* out, int64_t ldo, float* scratch);

}  // namespace recopt

#endif  // RECOPT_CORE_INTERACTION_H_
