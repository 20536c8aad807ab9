// Top-k of query-candidate scores without materialising all n scores.
//
// Candidates are scored a block at a time into an L1-sized buffer and each
// query's block is offered to its TopKCollector, whose threshold rises with
// every compaction: after the first few blocks almost every block is
// rejected by one vector compare per 16 scores.
#ifndef RECOPT_CORE_SCORE_TOPK_H_
#define RECOPT_CORE_SCORE_TOPK_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "isa_kernels.h"
#include "topk.h"

namespace recopt {

constexpr int64_t kScoreBlock = 256;

struct ScoreTopKProblem {
  ScoreArgs scoring;  // q, batch, dim, rows, storage, row_scales, bias, scale; the rest is per call
  int64_t n;
  int k;
};

// Scores rows [begin, end) for every query and offers them to collectors[b].
// A query whose scores hold a NaN gets nan_query[b] = 1 and no more offers:
// its answer must come from TopKV2's algorithm over all its scores.
void ScoreRangeTopK(const IsaKernels& kernels, const ScoreTopKProblem& p, int64_t begin, int64_t end,
                    TopKCollector<float>* collectors, char* nan_query);

// The queries of *g rounded once for a scan of many ranges, where the
// kernels take them (g->query_ints then points into the returned object).
std::unique_ptr<ScoreQueryInts> PrepareQueries(const IsaKernels& kernels, ScoreArgs* g);

// All n scores of query b (for the NaN fallback).
void ScoreAll(const IsaKernels& kernels, const ScoreTopKProblem& p, int64_t b, float* out);

}  // namespace recopt

#endif  // RECOPT_CORE_SCORE_TOPK_H_
