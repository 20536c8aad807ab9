// Recopt>ExactScoreTopK: Recopt>ScoreTopK's scan over int8 or bf16
// candidates, made exact by rescoring from the fp32 rows every candidate
// the quantization bound cannot rule out (core/score_exact.h). The work is
// split over the intra-op pool as ScoreTopK splits it: candidate chunks at
// small batch, groups of queries from 8 per thread.
#include <algorithm>
#include <memory>
#include <vector>

#include "../core/score_exact.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"
#include "score_topk_split.h"
#include "topk_inputs.h"
#include "topk_plain.h"

namespace tensorflow {
namespace {

using recopt_kernels::kMinChunkRows;
using recopt_kernels::kMinQueriesPerThread;
using recopt_kernels::kQueryGroup;
using recopt_kernels::StorageOf;

// Survivors per query when max_survivors is 0: rescoring this many rows
// costs well under the scan it replaces at 1M x 64 (bench.retrieval's
// survivor column), and a query past it is near-tied enough that the fp32
// scan is the cheaper way to be exact.
constexpr int64_t kMinAutoSurvivors = 4096;
constexpr int64_t kAutoSurvivorsPerK = 16;

template <typename Tcand>
class ExactScoreTopKOp : public OpKernel {
 public:
  explicit ExactScoreTopKOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sorted", &sorted_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_candidates", &layout_.num_candidates));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_survivors", &max_survivors_));
    layout_.blocks = true;
    OP_REQUIRES(ctx, layout_.num_candidates >= 0,
                errors::InvalidArgument(name(), ": num_candidates must be >= 0, got ", layout_.num_candidates));
    OP_REQUIRES(ctx, max_survivors_ >= 0,
                errors::InvalidArgument(name(), ": max_survivors must be >= 0, got ", max_survivors_));
  }

  void Compute(OpKernelContext* ctx) override {
    recopt::ExactTopKProblem p;
    OP_REQUIRES_OK(ctx, Parse(ctx, &p));
    const int64_t batch = p.approx.scoring.batch;
    Tensor *values = nullptr, *indices = nullptr, *survivors = nullptr;
    OP_REQUIRES_OK(ctx, recopt_kernels::AllocateTopKOutputs(ctx, TensorShape({batch, p.approx.k}), &values, &indices));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({batch}), &survivors));
    if (batch == 0) return;
    auto counts = survivors->flat<int32>();
    if (p.approx.k == 0) {
      for (int64_t b = 0; b < batch; ++b) counts(b) = 0;
      return;
    }
    Run(ctx, p, values->flat<float>().data(), indices->flat<int32>().data(), counts.data());
  }

 private:
  Status Parse(OpKernelContext* ctx, recopt::ExactTopKProblem* p) const {
    recopt_kernels::ScoreTopKShape s;
    TF_RETURN_IF_ERROR(recopt_kernels::ParseScoreTopK(ctx, StorageOf<Tcand>() == recopt::kScoreInt8, layout_, &s));
    const Tensor& rows = ctx->input(5);
    const Tensor& bounds = ctx->input(6);
    if (rows.dims() != 2 || rows.dim_size(0) != s.n || rows.dim_size(1) != s.dim) {
      return errors::InvalidArgument(name(), ": exact_rows must be [", s.n, ", ", s.dim,
                                     "] (the fp32 candidates), got ", rows.shape().DebugString());
    }
    if (bounds.dims() != 1 || bounds.dim_size(0) != s.n) {
      return errors::InvalidArgument(name(), ": row_bounds must be [", s.n, "], got ", bounds.shape().DebugString());
    }
    const Tensor& centre = ctx->input(7);
    if (centre.dims() != 1 || (centre.dim_size(0) != 0 && centre.dim_size(0) != s.dim)) {
      return errors::InvalidArgument(name(), ": centre must be [", s.dim, "] or [0], got ",
                                     centre.shape().DebugString());
    }
    p->centre = centre.NumElements() > 0 ? centre.flat<float>().data() : nullptr;
    recopt::ScoreArgs& g = p->approx.scoring;
    g = recopt::ScoreArgs{};
    g.q = ctx->input(0).flat<float>().data();
    g.batch = s.batch;
    g.dim = s.dim;
    g.rows = ctx->input(1).flat<Tcand>().data();
    g.storage = StorageOf<Tcand>();
    g.layout = recopt::kScoreBlocks;
    g.row_scales = s.has_scales ? ctx->input(2).flat<float>().data() : nullptr;
    g.bias = s.has_bias ? ctx->input(3).flat<float>().data() : nullptr;
    g.scale = scale_;
    p->approx.n = s.n;
    p->approx.k = s.k;
    p->exact_rows = rows.flat<float>().data();
    p->row_bounds = bounds.flat<float>().data();
    p->max_survivors = max_survivors_ > 0 ? max_survivors_
                                          : std::max(kMinAutoSurvivors, kAutoSurvivorsPerK * static_cast<int64_t>(s.k));
    return OkStatus();
  }

  void Run(OpKernelContext* ctx, const recopt::ExactTopKProblem& p, float* values, int32* indices, int32* counts) {
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const recopt::IsaKernels& kernels = recopt::SelectedIsaKernels();
    const recopt::ScoreArgs& g = p.approx.scoring;
    const int64_t batch = g.batch, n = p.approx.n, k = p.approx.k;
    std::vector<float> slack(batch), beta(batch);
    const float bias_slack = recopt::BiasSlack(g.bias, n);
    for (int64_t b = 0; b < batch; ++b) {
      const float* q = g.q + b * g.dim;
      slack[b] = recopt::QuerySlack(q, g.dim, g.storage, scale_);
      beta[b] = bias_slack + recopt::CentreSlack(q, p.centre, g.dim, scale_);
    }
    const bool by_queries = threads->num_threads > 1 && batch >= kMinQueriesPerThread * threads->num_threads;
    const int64_t chunks =
        by_queries ? 1 : std::max<int64_t>(1, std::min<int64_t>(threads->num_threads, n / kMinChunkRows));
    const int64_t blocks = (n + recopt::kScoreBlock - 1) / recopt::kScoreBlock;
    const int64_t chunk_rows = (blocks + chunks - 1) / chunks * recopt::kScoreBlock;
    // scans[b * chunks + c]: query b over chunk c.
    std::vector<recopt::ExactScan> scans(batch * chunks);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t c = 0; c < chunks; ++c) {
        scans[b * chunks + c].Reset(static_cast<int>(k));
        // A query with NaN or inf: TopKV2's algorithm over the fp32 scores.
        scans[b * chunks + c].nan = !(slack[b] == slack[b]) || !(beta[b] == beta[b]);
      }
    }
    // One query's ranges are scanned with the query's own slice of the
    // problem, so ExactScanRange sees [queries of the slice] x [one chunk].
    auto scan = [&](int64_t b0, int64_t b1, int64_t c) {
      recopt::ExactTopKProblem part = p;
      part.approx.scoring.q += b0 * g.dim;
      part.approx.scoring.batch = b1 - b0;
      std::vector<recopt::ExactScan> mine(b1 - b0);
      for (int64_t b = b0; b < b1; ++b) mine[b - b0] = std::move(scans[b * chunks + c]);
      recopt::ExactScanRange(kernels, part, slack.data() + b0, beta.data() + b0, c * chunk_rows,
                             std::min(n, (c + 1) * chunk_rows), mine.data());
      for (int64_t b = b0; b < b1; ++b) scans[b * chunks + c] = std::move(mine[b - b0]);
    };
    if (by_queries) {
      const int64_t groups = (batch + kQueryGroup - 1) / kQueryGroup;
      Shard(threads->num_threads, threads->workers, groups, n * g.dim * kQueryGroup, [&](int64_t g0, int64_t g1) {
        scan(g0 * kQueryGroup, std::min(batch, g1 * kQueryGroup), 0);
      });
    } else {
      Shard(threads->num_threads, threads->workers, chunks, chunk_rows * g.dim * batch, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) scan(0, batch, c);
      });
    }
    Shard(threads->num_threads, threads->workers, batch, n, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t rescored = recopt::ExactFinish(kernels, p, b, &scans[b * chunks], chunks, beta[b],
                                                     values + b * k, indices + b * k);
        counts[b] = static_cast<int32>(rescored);
        if (rescored < 0) FullScan(kernels, p, b, values + b * k, indices + b * k);
        for (int64_t c = 0; c < chunks; ++c) scans[b * chunks + c] = recopt::ExactScan();
      }
    });
  }

  // Every fp32 score of query b, and TopKV2's algorithm over them: the
  // answer Recopt>ScoreTopK gives over fp32 rows whenever the bound cannot
  // narrow the field (or a NaN needs TopKV2's comparison order).
  void FullScan(const recopt::IsaKernels& kernels, const recopt::ExactTopKProblem& p, int64_t b, float* values,
                int32* indices) const {
    recopt::ScoreTopKProblem rows = p.approx;
    rows.scoring.rows = p.exact_rows;
    rows.scoring.storage = recopt::kScoreF32;
    rows.scoring.layout = recopt::kScoreRows;
    rows.scoring.row_scales = nullptr;
    rows.scoring.query_ints = nullptr;
    std::unique_ptr<float[]> all(new float[rows.n]);
    recopt::ScoreAll(kernels, rows, b, all.get());
    recopt_kernels::PlainRow(all.get(), rows.n, rows.k, sorted_, values, indices);
  }

  float scale_ = 1.f;
  bool sorted_ = true;
  int64_t max_survivors_ = 0;
  recopt_kernels::ScoreTopKLayout layout_;
};

#define RECOPT_REGISTER_EXACT_SCORE_TOPK(T)                                                          \
  REGISTER_KERNEL_BUILDER(                                                                           \
      Name("Recopt>ExactScoreTopK").Device(DEVICE_CPU).TypeConstraint<T>("Tcand").HostMemory("k"), \
      ExactScoreTopKOp<T>)
RECOPT_REGISTER_EXACT_SCORE_TOPK(bfloat16);
RECOPT_REGISTER_EXACT_SCORE_TOPK(int8);
#undef RECOPT_REGISTER_EXACT_SCORE_TOPK

}  // namespace
}  // namespace tensorflow
