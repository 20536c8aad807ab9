// What the CPU score + top-k kernels (Recopt>ScoreTopK, Recopt>ExactScoreTopK)
// share: how they split work over the intra-op pool, and the scoring
// storage of each candidate dtype.
#ifndef RECOPT_KERNELS_SCORE_TOPK_SPLIT_H_
#define RECOPT_KERNELS_SCORE_TOPK_SPLIT_H_

#include <cstdint>

#include "../core/score_topk.h"
#include "tensorflow/core/framework/types.h"

namespace tensorflow {
namespace recopt_kernels {

// Candidate rows per work unit, so a small matrix is not split at all.
// Chunks start on kScoreBlock boundaries, which the blocks16 layout needs.
constexpr int64_t kMinChunkRows = 8 * recopt::kScoreBlock;
// Queries per work unit when threads split the queries: the scoring
// kernel's widest tile.
constexpr int64_t kQueryGroup = 8;
// Queries per thread from which threads split queries instead of candidates
// (one full tile each).
constexpr int64_t kMinQueriesPerThread = 8;

template <typename Tcand>
constexpr int StorageOf();
template <>
constexpr int StorageOf<float>() { return recopt::kScoreF32; }
template <>
constexpr int StorageOf<bfloat16>() { return recopt::kScoreBF16; }
template <>
constexpr int StorageOf<int8>() { return recopt::kScoreInt8; }

}  // namespace recopt_kernels
}  // namespace tensorflow

#endif  // RECOPT_KERNELS_SCORE_TOPK_SPLIT_H_
