// Plain C++ tests of custom_ops/core against scalar references: no
// TensorFlow, no framework. Built and run by tests/test_core_cpp.py (so by
// `make test`) through custom_ops.build.build_core_tests; exit status 0 when
// every check passes, each failure printed with its file and line.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "../core/afm.h"
#include "../core/bilinear.h"
#include "../core/cin.h"
#include "../core/embedding.h"
#include "../core/embedding_ids.h"
#include "../core/embedding_plan.h"
#include "../core/quantize.h"
#include "../core/score_exact.h"
#include "../core/topk.h"

namespace {

int failures = 0;
int checks = 0;

#define CHECK(cond)                                                         \
  do {                                                                      \
    ++checks;                                                               \
    if (!(cond)) {                                                          \
      ++failures;                                                           \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                       \
  } while (0)

// ---- id resolution -------------------------------------------------------
int64_t ReferenceId(int64_t id, int64_t rows, const recopt::IdRules& r) {
  if (r.hash_buckets > 0) {
    id %= r.hash_buckets;
    if (id < 0) id += r.hash_buckets;   // FloorMod
  }
  if (r.wrap_negative && id < 0) id += rows;
  return id;
}

void TestResolveIntIds() {
  std::mt19937_64 rng(7);
  for (int64_t buckets : {0, 5, 1000}) {
    for (bool wrap : {false, true}) {
      recopt::IdRules rules;
      rules.hash_buckets = buckets;
      rules.wrap_negative = wrap;
      const int64_t rows = 1000;
      std::vector<int64_t> ids(257);
      for (auto& id : ids) id = static_cast<int64_t>(rng() % 2000) - 1000;  // some negative
      if (!wrap && buckets == 0) for (auto& id : ids) id = (id < 0 ? -id : id) % rows;
      std::vector<int64_t> out(ids.size());
      recopt::IdError error;
      const bool ok = recopt::ResolveIntIds(ids.data(), ids.size(), rows, rules, out.data(), &error);
      CHECK(ok);
      for (size_t i = 0; ok && i < ids.size(); ++i) CHECK(out[i] == ReferenceId(ids[i], rows, rules));
    }
  }
  // int32 ids, and the first out-of-range one is reported with its position.
  const std::vector<int32_t> ids = {0, 3, 9, 10, 2, -1};
  std::vector<int64_t> out(ids.size());
  recopt::IdError error;
  recopt::IdRules rules;
  CHECK(!recopt::ResolveIntIds(ids.data(), ids.size(), 10, rules, out.data(), &error));
  CHECK(error.index == 3 && error.id == 10);
  rules.check_range = false;  // a sharded table: the shard map checks
  CHECK(recopt::ResolveIntIds(ids.data(), ids.size(), 10, rules, out.data(), &error));
  CHECK(out[5] == -1);
  rules.wrap_negative = true;
  rules.check_range = true;
  const std::vector<int64_t> wrapped = {-10, -11};
  CHECK(!recopt::ResolveIntIds(wrapped.data(), 2, 10, rules, out.data(), &error));
  CHECK(out[0] == 0 && error.index == 1 && error.id == -1);
  // Empty input.
  CHECK(recopt::ResolveIntIds(ids.data(), 0, 10, rules, out.data(), &error));
}

void TestBucketFingerprints() {
  const std::vector<uint64_t> fp = {0, 7, std::numeric_limits<uint64_t>::max(), 123456789012345ull};
  recopt::IdRules rules;
  rules.hash_buckets = 7;
  std::vector<int64_t> out(fp.size());
  recopt::IdError error;
  CHECK(recopt::BucketFingerprints(fp.data(), fp.size(), 7, rules, out.data(), &error));
  for (size_t i = 0; i < fp.size(); ++i) CHECK(out[i] == static_cast<int64_t>(fp[i] % 7));
  // A table of 3 rows: the first bucket >= 3 is reported, with its position.
  int64_t first = -1;
  for (size_t i = 0; i < fp.size() && first < 0; ++i) if (fp[i] % 7 >= 3) first = i;
  CHECK(first >= 0);
  CHECK(!recopt::BucketFingerprints(fp.data(), fp.size(), 3, rules, out.data(), &error));
  CHECK(error.index == first && error.id == static_cast<int64_t>(fp[first] % 7));
}

void TestRowOffsets() {
  std::vector<int64_t> offsets;
  int64_t rows = -1;
  recopt::IdError error;
  CHECK(recopt::RaggedOffsets({0, 2, 2, 5}, 5, &offsets, &rows, &error) == recopt::RowsError::kNone);
  CHECK(rows == 3 && offsets == std::vector<int64_t>({0, 2, 2, 5}));
  CHECK(recopt::RaggedOffsets({0}, 0, &offsets, &rows, &error) == recopt::RowsError::kNone && rows == 0);
  CHECK(recopt::RaggedOffsets({}, 0, &offsets, &rows, &error) == recopt::RowsError::kSplitsEmpty);
  CHECK(recopt::RaggedOffsets({1, 2}, 2, &offsets, &rows, &error) == recopt::RowsError::kSplitsOrder);
  CHECK(recopt::RaggedOffsets({0, 3, 2}, 2, &offsets, &rows, &error) == recopt::RowsError::kSplitsOrder);
  CHECK(error.index == 2);
  CHECK(recopt::RaggedOffsets({0, 2}, 3, &offsets, &rows, &error) == recopt::RowsError::kSplitsEnd);
  CHECK(error.id == 2);

  // Segments: CSR offsets equal a count-then-prefix-sum reference; empty
  // segments in the middle and (with num_segments) at the end.
  const std::vector<int64_t> seg = {0, 0, 2, 2, 2, 5};
  CHECK(recopt::SegmentOffsets(seg, -1, &offsets, &rows, &error) == recopt::RowsError::kNone);
  CHECK(rows == 6 && offsets == std::vector<int64_t>({0, 2, 2, 5, 5, 5, 6}));
  CHECK(recopt::SegmentOffsets(seg, 8, &offsets, &rows, &error) == recopt::RowsError::kNone);
  CHECK(rows == 8 && offsets.back() == 6 && offsets[7] == 6);
  CHECK(recopt::SegmentOffsets(seg, 5, &offsets, &rows, &error) == recopt::RowsError::kSegmentOrder);
  CHECK(error.index == 5 && error.id == 5);
  CHECK(recopt::SegmentOffsets({1, 0}, -1, &offsets, &rows, &error) == recopt::RowsError::kSegmentOrder);
  CHECK(recopt::SegmentOffsets({-1}, -1, &offsets, &rows, &error) == recopt::RowsError::kSegmentOrder);
  CHECK(recopt::SegmentOffsets({}, -1, &offsets, &rows, &error) == recopt::RowsError::kNone && rows == 0);
}

// ---- dynamic int8 quantization --------------------------------------------
void TestQuantizeRows() {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (int64_t k : {1, 15, 16, 17, 64, 100}) {
    for (bool unsigned_out : {false, true}) {
      const int64_t rows = 9;
      std::vector<float> x(rows * k);
      for (auto& v : x) v = normal(rng);
      for (int64_t c = 0; c < k; ++c) x[2 * k + c] = 0.f;  // a zero row: scale 1
      std::vector<uint8_t> q(rows * k);
      std::vector<float> scales(rows);
      CHECK(recopt::QuantizeRows(x.data(), rows, k, unsigned_out, q.data(), scales.data()));
      const float qmax = unsigned_out ? 255.f : 127.f;
      for (int64_t r = 0; r < rows; ++r) {
        float amax = 0.f;
        for (int64_t c = 0; c < k; ++c) amax = std::fmax(amax, std::fabs(x[r * k + c]));
        const float scale = amax > 0.f ? amax / qmax : 1.f;
        const float inv = amax > 0.f ? qmax / amax : 1.f;
        CHECK(scales[r] == scale);
        for (int64_t c = 0; c < k; ++c) {
          const float lo = unsigned_out ? 0.f : -127.f;
          const float want = std::fmin(std::fmax(std::nearbyint(x[r * k + c] * inv), lo), qmax);
          const int got = unsigned_out ? static_cast<int>(q[r * k + c]) : static_cast<int>(static_cast<int8_t>(q[r * k + c]));
          CHECK(got == static_cast<int>(want));
        }
      }
    }
  }
  std::vector<float> bad = {1.f, std::numeric_limits<float>::quiet_NaN()};
  std::vector<uint8_t> q(2);
  float scale;
  CHECK(!recopt::QuantizeRows(bad.data(), 1, 2, false, q.data(), &scale));
}

// ---- TopK's sampled threshold and collector ---------------------------------
void TestTopKCollector() {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> small(0, 50);  // many ties
  const int64_t n = 40000;
  std::vector<float> row(n);
  for (auto& v : row) v = static_cast<float>(small(rng));
  for (int k : {1, 7, 100, 2500}) {
    recopt::TopKSample<float> sample;
    CHECK(sample.Take(row.data(), n, k));
    std::vector<float> values(k);
    std::vector<int32_t> indices(k);
    bool done = false;
    for (int attempt = 0; attempt < 64 && !done; ++attempt) {
      recopt::TopKCollector<float> collector;
      collector.Reset(k, sample.Threshold(attempt));
      CHECK(collector.Scan(row.data(), 0, n));
      if (collector.size() >= k) {
        collector.Finish(values.data(), indices.data());
        done = true;
      }
    }
    CHECK(done);
    // Reference: a stable sort by (value desc, index asc).
    std::vector<recopt::TopKEntry<float>> all(n);
    for (int64_t i = 0; i < n; ++i) all[i] = {row[i], static_cast<int32_t>(i)};
    std::partial_sort(all.begin(), all.begin() + k, all.end(), recopt::TopKBefore<float>);
    for (int i = 0; done && i < k; ++i) CHECK(values[i] == all[i].value && indices[i] == all[i].index);
  }
}


// ---- AFM pooling on every ISA path this CPU has ------------------------------
// Scalar reference in double: products, relu MLP, softmax over pairs, weighted sum.
std::vector<double> ReferenceAfm(const std::vector<float>& x, int f, int d, const std::vector<int>& rows,
                                 const std::vector<int>& cols, const std::vector<float>& w,
                                 const std::vector<float>& b, const std::vector<float>& h, int units) {
  const size_t p = rows.size();
  std::vector<double> scores(p), out(d, 0.0);
  std::vector<std::vector<double>> e(p, std::vector<double>(d));
  double top = -1e300;
  for (size_t t = 0; t < p; ++t) {
    for (int i = 0; i < d; ++i) e[t][i] = double(x[rows[t] * d + i]) * x[cols[t] * d + i];
    double s = 0;
    for (int j = 0; j < units; ++j) {
      double hid = b[j];
      for (int i = 0; i < d; ++i) hid += e[t][i] * w[i * units + j];
      s += h[j] * std::max(hid, 0.0);
    }
    scores[t] = s;
    top = std::max(top, s);
  }
  double total = 0;
  for (auto& s : scores) total += (s = std::exp(s - top));
  for (size_t t = 0; t < p; ++t) for (int i = 0; i < d; ++i) out[i] += scores[t] / total * e[t][i];
  return out;
}

void TestAfmPooling() {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (const char* isa : {"generic", "avx2", "avx512"}) {
    const recopt::IsaKernels* kernels = recopt::IsaKernelsFor(isa);
    if (kernels == nullptr) continue;  // this CPU lacks it
    for (auto [f, d, units] : {std::tuple<int, int, int>{2, 1, 1}, {6, 8, 8}, {26, 8, 8}, {11, 5, 13}}) {
      std::vector<int64_t> rows, cols;
      for (int i = 0; i < f; ++i) for (int j = i + 1; j < f; ++j) { rows.push_back(i); cols.push_back(j); }
      std::vector<int> rows32, cols32;
      CHECK(recopt::AfmPairs(rows, cols, f, &rows32, &cols32).empty());
      std::vector<float> w(d * units), b(units), h(units), x(3 * f * d);
      for (auto* v : {&w, &b, &h, &x}) for (auto& e : *v) e = normal(rng);
      recopt::AfmWeights weights;
      CHECK(recopt::PackAfmWeights(w.data(), b.data(), h.data(), d, units, recopt::kActRelu, 0.f, &weights).empty());
      std::vector<float> out(3 * d), scratch(recopt::PairAttentionScratchFloats(rows.size(), d));
      recopt::AfmPooling(*kernels, x.data(), 0, 3, f, rows32, cols32, weights, out.data(), scratch.data());
      for (int ex = 0; ex < 3; ++ex) {
        const std::vector<float> xe(x.begin() + ex * f * d, x.begin() + (ex + 1) * f * d);
        const std::vector<double> want = ReferenceAfm(xe, f, d, rows32, cols32, w, b, h, units);
        for (int i = 0; i < d; ++i) CHECK(std::fabs(out[ex * d + i] - want[i]) <= 1e-4 * (1 + std::fabs(want[i])));
      }
    }
  }
  std::vector<int> r32, c32;
  CHECK(recopt::AfmPairs({0, 3}, {1, 1}, 3, &r32, &c32).find("rows[1] = 3") != std::string::npos);
}

// ---- bilinear interaction on every ISA path this CPU has --------------------
void TestBilinear() {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (const char* isa : {"generic", "avx2", "avx512"}) {
    const recopt::IsaKernels* kernels = recopt::IsaKernelsFor(isa);
    if (kernels == nullptr) continue;
    for (auto [f, d, batch] : {std::tuple<int, int, int>{2, 1, 1}, {5, 4, 33}, {7, 8, 40}, {4, 16, 3}, {3, 21, 5}}) {
      std::vector<int64_t> rows, cols, index;
      for (int i = 0; i < f; ++i) for (int j = i + 1; j < f; ++j) { rows.push_back(i); cols.push_back(j); index.push_back(i); }
      recopt::BilinearPairs pairs;
      CHECK(recopt::MakeBilinearPairs(rows, cols, index, f, f, &pairs).empty());
      const int64_t p = rows.size();
      std::vector<float> x(batch * f * d), w(f * d * d), b(f * d), out(batch * p * d);
      for (auto* v : {&x, &w, &b}) for (auto& e : *v) e = normal(rng);
      recopt::BilinearInteraction(*kernels, x.data(), 0, batch, f, d, pairs, w.data(), b.data(), out.data());
      for (int e = 0; e < batch; ++e) {
        for (int64_t t = 0; t < p; ++t) {
          for (int j = 0; j < d; ++j) {
            double v = b[index[t] * d + j];
            for (int i = 0; i < d; ++i) v += double(x[(e * f + rows[t]) * d + i]) * w[(index[t] * d + i) * d + j];
            const double want = v * x[(e * f + cols[t]) * d + j];
            CHECK(std::fabs(out[(e * p + t) * d + j] - want) <= 1e-4 * (1 + std::fabs(want)));
          }
        }
      }
    }
  }
  recopt::BilinearPairs pairs;
  CHECK(recopt::MakeBilinearPairs({0}, {1}, {2}, 3, 2, &pairs).find("weight_index[0] = 2") != std::string::npos);
}


// ---- exact retrieval: the rounding bound of core/score_exact.h ------------
// For every ISA path this CPU has: the approximate scan's score of each
// candidate (int8 or bf16 residuals c - centre, in blocks16) against the
// fp32 rows kernel's score of c, less the real q.centre. Their distance must
// stay within row_bound * QuerySlack + beta, also on inputs built to sit on
// rounding midpoints; and the worst case must come within 1/100 of it, so
// the bound is not vacuous.
float RoundBf16(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even (finite inputs)
  bits &= 0xffff0000u;
  float y;
  std::memcpy(&y, &bits, 4);
  return y;
}

void TestExactBound() {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  for (const char* isa : {"generic", "avx2", "avx512", "avx512vnni"}) {
    const recopt::IsaKernels* kernels = recopt::IsaKernelsFor(isa);
    if (kernels == nullptr) continue;
    for (int storage : {recopt::kScoreInt8, recopt::kScoreBF16}) {
      double worst = 0.0;
      for (int dim : {7, 16, 64, 130}) {
        const int n = 400, batch = 3;
        const int64_t blocks = (n + 15) / 16;
        std::vector<float> c(n * dim), centre(dim), residual(n * dim), scales(n), bounds(n), q(batch * dim);
        for (int e = 0; e < dim; ++e) centre[e] = 2.f * normal(rng);
        std::uniform_int_distribution<int> level(-126, 125);
        for (int j = 0; j < n; ++j) {
          const float norm = std::pow(10.f, uniform(rng));
          for (int e = 0; e < dim; ++e) {
            // Every fifth row: the peak 127 steps out, the rest half-way between two steps.
            const float step = norm / 127.f;
            const float r = j % 5 != 0 ? norm * normal(rng) : e == 0 ? norm : step * (level(rng) + 0.5f);
            c[j * dim + e] = centre[e] + r;
          }
        }
        for (auto& v : q) v = normal(rng);
        q[0] = 50.f;  // one element far above the rest: the query's own rounding at its worst
        std::vector<signed char> codes(blocks * dim * 16, 0);
        std::vector<uint16_t> halves(blocks * dim * 16, 0);
        for (int j = 0; j < n; ++j) {
          float peak = 0.f;
          for (int e = 0; e < dim; ++e) {
            residual[j * dim + e] = c[j * dim + e] - centre[e];
            peak = std::max(peak, std::fabs(residual[j * dim + e]));
          }
          scales[j] = peak > 0.f ? peak / 127.f : 1.f;
          bounds[j] = storage == recopt::kScoreInt8 ? scales[j] : std::max(peak, std::ldexp(1.f, -100));
          for (int e = 0; e < dim; ++e) {
            const int64_t at = ((j / 16) * dim + e) * 16 + j % 16;
            const float r = residual[j * dim + e];
            codes[at] = static_cast<signed char>(std::max(-127.f, std::min(127.f, std::nearbyint(r / scales[j]))));
            const float h = RoundBf16(r);
            uint32_t bits;
            std::memcpy(&bits, &h, 4);
            halves[at] = static_cast<uint16_t>(bits >> 16);
          }
        }
        const float scale = -0.75f;
        recopt::ScoreArgs g{};
        g.q = q.data();
        g.batch = batch;
        g.dim = dim;
        g.rows = storage == recopt::kScoreInt8 ? static_cast<const void*>(codes.data()) : halves.data();
        g.storage = storage;
        g.layout = recopt::kScoreBlocks;
        g.row_scales = storage == recopt::kScoreInt8 ? scales.data() : nullptr;
        g.scale = scale;
        g.first = 0;
        g.count = n;
        std::vector<float> approx(batch * n), exact(n);
        g.out = approx.data();
        kernels->score(g);
        for (int b = 0; b < batch; ++b) {
          recopt::ScoreArgs r{};
          r.q = q.data() + b * dim;
          r.batch = 1;
          r.dim = dim;
          r.rows = c.data();
          r.storage = recopt::kScoreF32;
          r.layout = recopt::kScoreRows;
          r.scale = scale;
          r.first = 0;
          r.count = n;
          r.out = exact.data();
          kernels->score(r);
          double q_centre = 0.0;
          for (int e = 0; e < dim; ++e) q_centre += static_cast<double>(q[b * dim + e]) * centre[e];
          const float slack = recopt::QuerySlack(q.data() + b * dim, dim, storage, scale);
          const float beta = recopt::CentreSlack(q.data() + b * dim, centre.data(), dim, scale);
          for (int j = 0; j < n; ++j) {
            const double gap = std::fabs(static_cast<double>(approx[b * n + j]) -
                                         (static_cast<double>(exact[j]) - scale * q_centre));
            const double width = static_cast<double>(bounds[j]) * slack + beta;
            CHECK(gap <= width);
            worst = std::max(worst, gap / width);
          }
        }
      }
      CHECK(worst > 0.01);
    }
  }
}

}  // namespace

// ---- lookup plan and row blocks -----------------------------------------
recopt::LookupAttrs TwoFeatureAttrs() {
  recopt::LookupAttrs a;
  a.table_ids = {0, 1};
  a.layouts = {"dense", "segments_n"};
  a.combiners = {"none", "mean"};
  a.negative_ids = {"wrap", "error"};
  a.hash_buckets = {0, 0};
  a.weighted = {false, true};
  a.string_ids = {false, false};
  a.table_shards = {1, 2};
  a.table_partitioning = {"div", "mod"};
  a.table_dims = {4, 8};
  a.num_table_inputs = 3;
  a.num_partition_inputs = 2;
  a.num_weight_inputs = 1;
  return a;
}

bool Contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

void TestLookupPlan() {
  recopt::LookupPlan plan;
  CHECK(recopt::PlanLookup(TwoFeatureAttrs(), &plan).empty());
  CHECK(plan.features.size() == 2 && plan.tables.size() == 2 && plan.num_partitions == 2);
  CHECK(plan.tables[1].first_input == 1 && plan.tables[1].shards == 2 && !plan.tables[1].div && plan.tables[0].div);
  CHECK(plan.features[0].wrap_negative && !plan.features[1].wrap_negative && plan.features[1].weighted);
  CHECK(plan.features[1].layout == recopt::IdLayout::kSegmentsN && plan.features[1].combiner == recopt::Combiner::kMean);
  // Defaults: no table_shards -> one input per table, div.
  recopt::LookupAttrs a = TwoFeatureAttrs();
  a.table_shards.clear();
  a.table_partitioning.clear();
  a.negative_ids = {"error", "error"};
  CHECK(Contains(recopt::PlanLookup(a, &plan), "table_dims needs 3 entries"));
  // Each broken attr names itself and the feature or table at fault.
  const std::vector<std::pair<void (*)(recopt::LookupAttrs*), const char*>> broken = {
      {[](recopt::LookupAttrs* x) { x->table_ids[1] = 2; }, "feature 1 names table 2"},
      {[](recopt::LookupAttrs* x) { x->layouts[0] = "sparse"; }, "feature 0: unknown layout 'sparse'"},
      {[](recopt::LookupAttrs* x) { x->combiners[1] = "max"; }, "feature 1: unknown combiner 'max'"},
      {[](recopt::LookupAttrs* x) { x->negative_ids[1] = "clip"; }, "negative_ids must be error or wrap"},
      {[](recopt::LookupAttrs* x) { x->combiners[1] = "none"; }, "segments_n ids need a combiner other than none"},
      {[](recopt::LookupAttrs* x) { x->negative_ids[1] = "wrap"; }, "negative_ids=wrap needs an unsharded table"},
      {[](recopt::LookupAttrs* x) { x->string_ids[0] = true; }, "feature 0: string ids need hash_buckets > 0"},
      {[](recopt::LookupAttrs* x) { x->num_partition_inputs = 1; }, "layouts need 2 partition tensors, got 1"},
      {[](recopt::LookupAttrs* x) { x->num_weight_inputs = 0; }, "1 weighted features but 0 weight tensors"},
      {[](recopt::LookupAttrs* x) { x->weighted.pop_back(); }, "every per-feature attr needs 2 entries"},
      {[](recopt::LookupAttrs* x) { x->table_shards = {1, 1}; }, "table_shards add up to 2 tables but 3"},
      {[](recopt::LookupAttrs* x) { x->table_shards = {0, 3}; }, "table 0 has 0 shards"},
      {[](recopt::LookupAttrs* x) { x->table_partitioning[1] = "hash"; }, "table 1: table_partitioning must be"},
      {[](recopt::LookupAttrs* x) { x->table_partitioning.pop_back(); }, "table_partitioning needs 2 entries"},
      {[](recopt::LookupAttrs* x) { x->table_dims.pop_back(); }, "table_dims needs 2 entries"},
  };
  for (const auto& [breaks, message] : broken) {
    recopt::LookupAttrs x = TwoFeatureAttrs();
    breaks(&x);
    const std::string error = recopt::PlanLookup(x, &plan);
    CHECK(Contains(error, message));
    if (!Contains(error, message)) std::fprintf(stderr, "  got: %s\n", error.c_str());
  }
}

void TestRowBlocks() {
  // Two features, 70 and 5 rows; every split of the blocks over workers
  // must write what one whole EmbeddingBagRows call writes.
  std::mt19937 rng(7);
  const int64_t dim = 3, rows = 11;
  std::vector<float> table(rows * dim);
  for (auto& v : table) v = static_cast<float>(rng() % 100) / 8.0f;
  const recopt::EmbeddingTableView view{table.data(), recopt::kTableF32, rows, dim};
  std::vector<int64_t> ids0(70 * 2), ids1(5);
  for (auto& id : ids0) id = rng() % rows;
  for (auto& id : ids1) id = rng() % rows;
  auto bags_into = [&](std::vector<float>* out0, std::vector<float>* out1) {
    out0->assign(70 * dim, -1.0f);
    out1->assign(5 * 1 * dim, -1.0f);
    return std::vector<recopt::EmbeddingBag>{
        {recopt::Combiner::kSum, ids0.data(), nullptr, 70, 2, nullptr, out0->data(), dim},
        {recopt::Combiner::kNone, ids1.data(), nullptr, 5, 1, nullptr, out1->data(), dim}};
  };
  std::vector<float> want0, want1, got0, got1;
  auto want = bags_into(&want0, &want1);
  recopt::EmbeddingBagRows(view, want[0], 0, 70);
  recopt::EmbeddingBagRows(view, want[1], 0, 5);
  const std::vector<const recopt::EmbeddingTableView*> table_of = {&view, &view};
  for (int64_t per_block : {1, 7, 32, 100}) {
    auto bags = bags_into(&got0, &got1);
    const auto blocks = recopt::RowBlocks(bags, per_block);
    int64_t covered = 0;
    for (const auto& b : blocks) covered += b.r1 - b.r0;
    CHECK(covered == 75);
    CHECK(static_cast<int64_t>(blocks.size()) == (70 + per_block - 1) / per_block + (5 + per_block - 1) / per_block);
    for (int64_t split = 0; split <= static_cast<int64_t>(blocks.size()); ++split) {
      recopt::RunRowBlocks(blocks, table_of, bags, 0, split);
      recopt::RunRowBlocks(blocks, table_of, bags, split, blocks.size());
      CHECK(got0 == want0 && got1 == want1);
    }
  }
  CHECK(recopt::RowBlocks({}, 32).empty());
}

// ---- CIN products ----------------------------------------------------------
void TestCinProducts() {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (const auto& [batch, f0, h, d] : std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>>{
           {1, 1, 1, 1}, {3, 26, 17, 8}, {2, 5, 33, 3}, {4, 7, 7, 16}}) {
    std::vector<float> x0(batch * f0 * d), hidden(batch * h * d);
    for (auto& v : x0) v = normal(rng);
    for (auto& v : hidden) v = normal(rng);
    std::vector<float> out(batch * d * f0 * h, -7.0f);
    // Two calls over a split of the examples fill what one call would.
    recopt::CinProducts(x0.data(), hidden.data(), 0, batch / 2, f0, h, d, out.data());
    recopt::CinProducts(x0.data(), hidden.data(), batch / 2, batch, f0, h, d, out.data());
    bool exact = true;
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t e = 0; e < d; ++e)
        for (int64_t i = 0; i < f0; ++i)
          for (int64_t j = 0; j < h; ++j)
            exact &= out[(b * d + e) * f0 * h + i * h + j] == x0[(b * f0 + i) * d + e] * hidden[(b * h + j) * d + e];
    CHECK(exact);
  }
}

int main() {
  TestResolveIntIds();
  TestBucketFingerprints();
  TestRowOffsets();
  TestQuantizeRows();
  TestTopKCollector();
  TestAfmPooling();
  TestBilinear();
  TestExactBound();
  TestLookupPlan();
  TestRowBlocks();
  TestCinProducts();
  std::printf("core tests: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
