#include "score_exact.h"

#include <algorithm>
#include <cmath>
#include <memory>

namespace recopt {

namespace {

constexpr double kUnit = 1.0 / (1 << 24);  // fp32 unit roundoff
// int8 queries are rounded to int16 against their largest element
// (score_vnni.inc kVnniQueryMax); the bound assumes it wherever the scan
// runs, which only over-counts on the fp32-widening paths.
constexpr double kQueryLevels = 32767.0;

}  // namespace

// Both scores are fp32 sums of d products (gamma_d = d u / (1 - d u) each, u
// the unit roundoff) followed by a few fp32 roundings of values at most
// 128 ||q||_1 r_c; 64 u ||q||_1 r_c per rounding-heavy step covers those
// (and the rounding of the row scale itself when int8 rows were encoded).
//   int8:  c = s_c k + e, |e| <= s_c / 2, and q = s_q m + f, |f| <= 0.51 s_q:
//          |q.c - s_q s_c m.k| <= s_c (||q||_1 / 2 + 0.51 s_q 127 d).
//   bf16:  |c - bf16(c)| <= 2^-8 |c| (round to nearest, 8 significant bits:
//          half an ulp is 2^-8 of the value's power of two; custom_ops/core_tests
//          found 2^-9 too small with one dominant query element).
// The result is widened by 2^-10 for the rounding of this computation.
float QuerySlack(const float* q, int dim, int storage, float scale) {
  double l1 = 0.0, peak = 0.0;
  for (int e = 0; e < dim; ++e) {
    const double a = std::fabs(static_cast<double>(q[e]));
    l1 += a;
    peak = std::max(peak, a);
  }
  if (!std::isfinite(l1)) return std::nanf("");
  const double gamma = dim * kUnit / (1.0 - dim * kUnit);
  double slack;
  if (storage == kScoreInt8) {
    slack = l1 * (0.5 + 128.0 * (2.0 * gamma + 64.0 * kUnit)) + 0.51 * 127.0 * dim * (peak / kQueryLevels);
  } else {
    slack = l1 * (1.0 / 256 + 2.02 * gamma + 64.0 * kUnit);
  }
  slack *= std::fabs(static_cast<double>(scale)) * (1.0 + 1.0 / 1024);
  return slack > 3.0e38 ? std::nanf("") : static_cast<float>(slack);
}

float BiasSlack(const float* bias, int64_t n) {
  if (bias == nullptr) return 0.f;
  double top = 0.0;
  for (int64_t i = 0; i < n; ++i) top = std::max(top, std::fabs(static_cast<double>(bias[i])));
  return static_cast<float>(64.0 * kUnit * top);
}

float CentreSlack(const float* q, const float* centre, int dim, float scale) {
  if (centre == nullptr) return 0.f;
  double dot = 0.0;
  for (int e = 0; e < dim; ++e) dot += std::fabs(static_cast<double>(q[e]) * static_cast<double>(centre[e]));
  const double gamma = dim * kUnit / (1.0 - dim * kUnit);
  const double slack = dot * (2.0 * gamma + 64.0 * kUnit) * std::fabs(static_cast<double>(scale)) * (1.0 + 1.0 / 1024);
  return slack > 3.0e38 ? std::nanf("") : static_cast<float>(slack);
}

namespace {

// Survivor lists are cut back to what can still enter once they hold this
// many times the cap, so a cut costs little per candidate.
constexpr int64_t kCutFactor = 2;

void Cut(ExactScan* s, float floor, int64_t cap) {
  auto& v = s->survivors;
  v.erase(std::remove_if(v.begin(), v.end(), [floor](const TopKEntry<float>& e) { return !(e.value >= floor); }),
          v.end());
  if (static_cast<int64_t>(v.size()) > cap) {
    s->overflow = true;
    v.clear();
    v.shrink_to_fit();
  }
}

// Query b's flagged blocks of one scored range: lower bounds to the
// collector, upper bounds that can still reach it to the survivors.
void TakeBlocks(const ScoreArgs& g, int64_t b, float slack, float beta, int64_t cap, ExactScan* s) {
  const int64_t blocks = (g.count + kScoreLanes - 1) / kScoreLanes;
  float lower[kScoreLanes];
  for (int64_t i = 0; i < blocks; ++i) {
    if (!g.may_pass[b * blocks + i]) continue;
    const int64_t at = i * kScoreLanes, len = std::min<int64_t>(kScoreLanes, g.count - at);
    const float* upper = g.out + b * g.count + at;
    const float* bounds = g.row_bounds + g.first + at;
    for (int64_t t = 0; t < len; ++t) lower[t] = upper[t] - 2.f * bounds[t] * slack;
    if (!s->lower.ScanAt(lower, len, g.first + at)) {
      s->nan = true;
      return;
    }
    const float floor = s->lower.threshold() - 2.f * beta;
    for (int64_t t = 0; t < len; ++t) {
      if (upper[t] >= floor) s->survivors.push_back({upper[t], static_cast<int32_t>(g.first + at + t)});
    }
    if (static_cast<int64_t>(s->survivors.size()) > kCutFactor * cap) {
      Cut(s, floor, cap);
      if (s->overflow) return;
    }
  }
}

}  // namespace

void ExactScanRange(const IsaKernels& kernels, const ExactTopKProblem& p, const float* slack, const float* beta,
                    int64_t begin, int64_t end, ExactScan* scans) {
  const int64_t batch = p.approx.scoring.batch;
  const int64_t per_block = kScoreBlock / kScoreLanes;
  std::unique_ptr<float[]> scores(new float[batch * kScoreBlock]);
  std::vector<float> floors(batch);
  std::vector<unsigned char> may_pass(batch * per_block);
  ScoreArgs g = p.approx.scoring;
  g.out = scores.get();
  g.floors = floors.data();
  g.may_pass = may_pass.data();
  g.row_bounds = p.row_bounds;
  g.slack = slack;
  const std::unique_ptr<ScoreQueryInts> ints = PrepareQueries(kernels, &g);
  for (int64_t j = begin; j < end; j += kScoreBlock) {
    g.first = j;
    g.count = std::min(kScoreBlock, end - j);
    for (int64_t b = 0; b < batch; ++b) {
      const bool done = scans[b].nan || scans[b].overflow;
      floors[b] = done ? __builtin_huge_valf() : scans[b].lower.threshold() - 2.f * beta[b];
    }
    kernels.score(g);
    for (int64_t b = 0; b < batch; ++b) {
      if (scans[b].nan || scans[b].overflow) continue;
      TakeBlocks(g, b, slack[b], beta[b], p.max_survivors, &scans[b]);
    }
  }
}

int64_t ExactFinish(const IsaKernels& kernels, const ExactTopKProblem& p, int64_t b, ExactScan* scans,
                    int64_t count, float beta, float* values, int32_t* indices) {
  const int k = p.approx.k;
  for (int64_t c = 0; c < count; ++c) {
    if (scans[c].nan || scans[c].overflow) return -1;
  }
  for (int64_t c = 1; c < count; ++c) scans[0].lower.Absorb(scans[c].lower);
  if (scans[0].lower.size() < k) return -1;  // cannot happen for k <= n without NaN
  std::vector<float> best(k);
  std::vector<int32_t> at(k);
  scans[0].lower.Finish(best.data(), at.data());
  const float floor = best[k - 1] - 2.f * beta;
  std::vector<int32_t> ids;
  for (int64_t c = 0; c < count; ++c) {
    for (const TopKEntry<float>& e : scans[c].survivors) {
      if (e.value >= floor) ids.push_back(e.index);
    }
  }
  // At least the k candidates holding the k best lower bounds survive.
  if (static_cast<int64_t>(ids.size()) < k) return -1;
  std::vector<float> exact(ids.size());
  ScoreArgs g = p.approx.scoring;
  g.q += b * g.dim;
  g.batch = 1;
  g.rows = p.exact_rows;
  g.storage = kScoreF32;
  g.layout = kScoreRows;
  g.row_scales = nullptr;
  g.first = 0;
  g.count = static_cast<int64_t>(ids.size());
  g.row_ids = ids.data();
  g.out = exact.data();
  g.floors = nullptr;
  g.may_pass = nullptr;
  g.query_ints = nullptr;
  kernels.score(g);
  std::vector<TopKEntry<float>> rescored(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (exact[i] != exact[i]) return -1;
    rescored[i] = {exact[i], ids[i]};
  }
  std::partial_sort(rescored.begin(), rescored.begin() + k, rescored.end(),
                    [](const TopKEntry<float>& x, const TopKEntry<float>& y) { return TopKBefore(x, y); });
  for (int i = 0; i < k; ++i) {
    values[i] = rescored[i].value;
    indices[i] = rescored[i].index;
  }
  return static_cast<int64_t>(rescored.size());
}

}  // namespace recopt
