#include "score_topk.h"

#include <algorithm>
#include <memory>

namespace recopt {

void ScoreRangeTopK(const GemmKernels& kernels, const ScoreTopKProblem& p, int64_t begin, int64_t end,
                    TopKCollector<float>* collectors, char* nan_query) {
  const int64_t batch = p.scoring.batch;
  std::unique_ptr<float[]> scores(new float[batch * kScoreBlock]);
  ScoreArgs g = p.scoring;
  g.out = scores.get();
  for (int64_t j = begin; j < end; j += kScoreBlock) {
    g.first = j;
    g.count = std::min(kScoreBlock, end - j);
    kernels.score(g);
    for (int64_t b = 0; b < batch; ++b) {
      if (nan_query[b]) continue;
      if (!collectors[b].ScanAt(scores.get() + b * g.count, g.count, j)) nan_query[b] = 1;
    }
  }
}

void ScoreAll(const GemmKernels& kernels, const ScoreTopKProblem& p, int64_t b, float* out) {
  ScoreArgs g = p.scoring;
  g.q = p.scoring.q + b * p.scoring.dim;
  g.batch = 1;
  g.first = 0;
  g.count = p.n;
  g.out = out;
  kernels.score(g);
}

}  // namespace recopt
