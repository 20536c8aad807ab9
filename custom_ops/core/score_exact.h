// Exact top-k from quantized candidates: a scan of the int8 or bf16 copy
// keeps every candidate whose exact score can still reach the top k, and
// only those are rescored from the fp32 rows (Recopt>ExactScoreTopK).
//
// Why it is exact: the score of candidate c computed from the quantized copy
// differs from the fp32 score by at most w_c = row_bounds[c] * slack(q) + beta
// (QuerySlack below derives slack from the rounding steps of both). Let L be
// the k-th largest of (approx_c - w_c). The true k-th score is at least
// L - beta, so no candidate with approx_c + w_c < L - 2 * beta can be in the
// top k, and selecting among the rest by their rescored values (TopKV2's
// order: value desc, index asc) gives the fp32 answer.
// The quantized copy may hold c - centre instead of c: every approximate
// score then lacks the same q.centre, which moves L and every bound alike,
// and the rounding steps shrink to the residuals' (candidates that share a
// large common direction, as trained item embeddings often do, would
// otherwise have quantization steps far above their score spread). The rescored value is
// the fp32 "rows" kernel's own dot product, so ids and scores equal
// Recopt>ScoreTopK's over fp32 rows bit for bit.
#ifndef RECOPT_CORE_SCORE_EXACT_H_
#define RECOPT_CORE_SCORE_EXACT_H_

#include <cstdint>
#include <vector>

#include "score_topk.h"

namespace recopt {

struct ExactTopKProblem {
  ScoreTopKProblem approx;  // int8 or bf16 candidates in kScoreBlocks
  const float* exact_rows;  // [n, dim] fp32
  // int8: the row scale (row_scales); bf16: max(largest |value| of the row, 2^-100).
  const float* row_bounds;
  int64_t max_survivors;    // per query; more and the query is scanned in fp32
  const float* centre;      // [dim], or nullptr: approx holds c - centre (CentreSlack)
};

// slack(q) for query q: |approx - exact| <= row_bounds[c] * slack + bias
// slack (custom_ops/core_tests checks it on every ISA path). NaN when q is
// not finite.
float QuerySlack(const float* q, int dim, int storage, float scale);
// The rounding of adding the bias, the same for every row: 64 ulp(1) of the
// largest |bias| (0 without one).
float BiasSlack(const float* bias, int64_t n);
// Candidates stored as residuals c - centre (centred quantization): the
// fp32 rescoring's rounding of the centre's part, |scale| (2 gamma_d + 64 u)
// sum |q_i centre_i|, the same for every row. 0 without a centre.
float CentreSlack(const float* q, const float* centre, int dim, float scale);

// One query's scan of one range of candidates.
struct ExactScan {
  TopKCollector<float> lower;               // the best k lower bounds
  std::vector<TopKEntry<float>> survivors;  // (upper bound, index)
  bool nan = false;       // a NaN bound: the query needs TopKV2's algorithm
  bool overflow = false;  // more than max_survivors: the query is scanned in fp32
  void Reset(int k) {
    lower.Reset(k, -__builtin_huge_valf());
    survivors.clear();
    nan = overflow = false;
  }
};

// Scans candidates [begin, end) for every query of p (scans[b] per query;
// slack[b] from QuerySlack).
// beta[b]: BiasSlack + CentreSlack of query b.
void ExactScanRange(const IsaKernels& kernels, const ExactTopKProblem& p, const float* slack, const float* beta,
                    int64_t begin, int64_t end, ExactScan* scans);

// The top k of query b from its scans over disjoint ranges, rescored in
// fp32. Returns the number of candidates rescored, or -1 when the query
// needs the fp32 scan instead (a NaN, an overflow, or a rescored NaN), with
// nothing written.
int64_t ExactFinish(const IsaKernels& kernels, const ExactTopKProblem& p, int64_t b, ExactScan* scans,
                    int64_t count, float beta, float* values, int32_t* indices);

}  // namespace recopt

#endif  // RECOPT_CORE_SCORE_EXACT_H_
