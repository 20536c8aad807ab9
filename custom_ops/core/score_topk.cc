#include "score_topk.h"

#include <algorithm>
#include <memory>

namespace recopt {

namespace {

// Query b's scores of one scored range, `count` from candidate `first`: only
// the blocks the kernel flagged, or all when it flags none (rows layout).
bool ScanScores(const ScoreArgs& g, int64_t b, TopKCollector<float>* collector) {
  const float* scores = g.out + b * g.count;
  if (g.may_pass == nullptr) return collector->ScanAt(scores, g.count, g.first);
  const int64_t blocks = (g.count + kScoreLanes - 1) / kScoreLanes;
  for (int64_t i = 0; i < blocks; ++i) {
    if (!g.may_pass[b * blocks + i]) continue;
    const int64_t at = i * kScoreLanes, len = std::min<int64_t>(kScoreLanes, g.count - at);
    if (!collector->ScanAt(scores + at, len, g.first + at)) return false;
  }
  return true;
}

}  // namespace

void ScoreRangeTopK(const IsaKernels& kernels, const ScoreTopKProblem& p, int64_t begin, int64_t end,
                    TopKCollector<float>* collectors, char* nan_query) {
  const int64_t batch = p.scoring.batch;
  std::unique_ptr<float[]> scores(new float[batch * kScoreBlock]);
  ScoreArgs g = p.scoring;
  g.out = scores.get();
  // With blocks the kernel tests each 16 scores against the collector's
  // threshold as it makes them, which spares rescanning the (nearly all)
  // blocks that cannot enter, the collector's main cost at batch 8.
  std::vector<float> floors;
  std::vector<unsigned char> may_pass;
  if (g.layout == kScoreBlocks) {
    floors.resize(batch);
    may_pass.resize(batch * (kScoreBlock / kScoreLanes));
    g.floors = floors.data();
    g.may_pass = may_pass.data();
  }
  const std::unique_ptr<ScoreQueryInts> ints = PrepareQueries(kernels, &g);
  for (int64_t j = begin; j < end; j += kScoreBlock) {
    g.first = j;
    g.count = std::min(kScoreBlock, end - j);
    for (size_t b = 0; b < floors.size(); ++b) floors[b] = collectors[b].threshold();
    kernels.score(g);
    for (int64_t b = 0; b < batch; ++b) {
      if (nan_query[b]) continue;
      if (!ScanScores(g, b, &collectors[b])) nan_query[b] = 1;
    }
  }
}

std::unique_ptr<ScoreQueryInts> PrepareQueries(const IsaKernels& kernels, ScoreArgs* g) {
  std::unique_ptr<ScoreQueryInts> ints;
  if (kernels.prepare_queries == nullptr) return ints;
  ints.reset(new ScoreQueryInts);
  if (!kernels.prepare_queries(*g, ints.get())) return nullptr;
  g->query_ints = ints.get();
  return ints;
}

void ScoreAll(const IsaKernels& kernels, const ScoreTopKProblem& p, int64_t b, float* out) {
  ScoreArgs g = p.scoring;
  g.q = p.scoring.q + b * p.scoring.dim;
  g.batch = 1;
  g.first = 0;
  g.count = p.n;
  g.out = out;
  g.floors = nullptr;
  g.may_pass = nullptr;
  kernels.score(g);
}

}  // namespace recopt
