// Recopt>ScoreTopK: queries against a candidate matrix -> top-k scores and
// ids, with the candidates split over the intra-op pool (each chunk read
// once for every query) and per-query results merged at the end.
#include <algorithm>
#include <limits>
#include <memory>
#include <vector>

#include "../core/score_topk.h"
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

template <typename Tcand>
class ScoreTopKOp : public OpKernel {
 public:
  explicit ScoreTopKOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sorted", &sorted_));
    OP_REQUIRES_OK(ctx, recopt_kernels::ReadScoreTopKLayout(ctx, &layout_));
  }

  void Compute(OpKernelContext* ctx) override {
    recopt::ScoreTopKProblem p;
    OP_REQUIRES_OK(ctx, Parse(ctx, &p));
    Tensor *values = nullptr, *indices = nullptr;
    OP_REQUIRES_OK(ctx, recopt_kernels::AllocateTopKOutputs(ctx, TensorShape({p.scoring.batch, p.k}), &values, &indices));
    if (p.k == 0 || p.scoring.batch == 0) return;
    Run(ctx, p, values->flat<float>().data(), indices->flat<int32>().data());
  }

 private:
  Status Parse(OpKernelContext* ctx, recopt::ScoreTopKProblem* p) const {
    recopt_kernels::ScoreTopKShape s;
    TF_RETURN_IF_ERROR(recopt_kernels::ParseScoreTopK(ctx, StorageOf<Tcand>() == recopt::kScoreInt8, layout_, &s));
    const Tensor& q = ctx->input(0);
    const Tensor& cand = ctx->input(1);
    const Tensor& scales = ctx->input(2);
    const Tensor& bias = ctx->input(3);
    recopt::ScoreArgs& g = p->scoring;
    g = recopt::ScoreArgs{};
    g.q = q.flat<float>().data();
    g.batch = s.batch;
    g.dim = s.dim;
    g.rows = cand.flat<Tcand>().data();
    g.storage = StorageOf<Tcand>();
    g.layout = layout_.blocks ? recopt::kScoreBlocks : recopt::kScoreRows;
    g.row_scales = s.has_scales ? scales.flat<float>().data() : nullptr;
    g.bias = s.has_bias ? bias.flat<float>().data() : nullptr;
    g.scale = scale_;
    p->n = s.n;
    p->k = s.k;
    return OkStatus();
  }

  void Run(OpKernelContext* ctx, const recopt::ScoreTopKProblem& p, float* values, int32* indices) {
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const recopt::IsaKernels& kernels = recopt::SelectedIsaKernels();
    const int64_t batch = p.scoring.batch;
    if (threads->num_threads > 1 && batch >= kMinQueriesPerThread * threads->num_threads) {
      return ByQueries(ctx, kernels, p, values, indices);
    }
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads->num_threads, p.n / kMinChunkRows));
    // Chunk boundaries on block boundaries keep every block full but the last.
    const int64_t blocks = (p.n + recopt::kScoreBlock - 1) / recopt::kScoreBlock;
    const int64_t chunk_rows = (blocks + chunks - 1) / chunks * recopt::kScoreBlock;
    std::vector<recopt::TopKCollector<float>> parts(chunks * batch);
    std::vector<char> nan(chunks * batch, 0);
    const float lowest = -std::numeric_limits<float>::infinity();
    Shard(threads->num_threads, threads->workers, chunks, chunk_rows * p.scoring.dim * batch,
          [&](int64_t c0, int64_t c1) {
            for (int64_t c = c0; c < c1; ++c) {
              for (int64_t b = 0; b < batch; ++b) parts[c * batch + b].Reset(p.k, lowest);
              recopt::ScoreRangeTopK(kernels, p, c * chunk_rows, std::min(p.n, (c + 1) * chunk_rows),
                                     &parts[c * batch], &nan[c * batch]);
            }
          });
    Shard(threads->num_threads, threads->workers, batch, p.n, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        bool has_nan = false;
        for (int64_t c = 0; c < chunks; ++c) has_nan |= nan[c * batch + b] != 0;
        if (has_nan) {
          FallBack(kernels, p, b, values + b * p.k, indices + b * p.k);
          continue;
        }
        for (int64_t c = 1; c < chunks; ++c) parts[b].Absorb(parts[c * batch + b]);
        parts[b].Finish(values + b * p.k, indices + b * p.k);
      }
    });
  }

  // Each thread scores every candidate for its own tiles of queries. A
  // collector then sees all n scores, not a chunk's, so its threshold rises
  // on all the evidence: splitting candidates gave each query a collector
  // per chunk, and their pushes and compactions were a quarter of
  // two_tower's op time at batch 64 on two threads. Rereading the
  // candidates per thread still paid at n = 1M fp32 from batch 16 on two
  // threads; batch 8 split into tiles of 4 did not (fp32 got slower).
  void ByQueries(OpKernelContext* ctx, const recopt::IsaKernels& kernels, const recopt::ScoreTopKProblem& p,
                 float* values, int32* indices) {
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t batch = p.scoring.batch, dim = p.scoring.dim;
    const int64_t groups = (batch + kQueryGroup - 1) / kQueryGroup;
    const float lowest = -std::numeric_limits<float>::infinity();
    Shard(threads->num_threads, threads->workers, groups, p.n * dim * kQueryGroup, [&](int64_t g0, int64_t g1) {
      const int64_t b0 = g0 * kQueryGroup, b1 = std::min(batch, g1 * kQueryGroup);
      recopt::ScoreTopKProblem part = p;
      part.scoring.q += b0 * dim;
      part.scoring.batch = b1 - b0;
      std::vector<recopt::TopKCollector<float>> collectors(b1 - b0);
      std::vector<char> nan(b1 - b0, 0);
      for (auto& c : collectors) c.Reset(p.k, lowest);
      recopt::ScoreRangeTopK(kernels, part, 0, p.n, collectors.data(), nan.data());
      for (int64_t b = b0; b < b1; ++b) {
        if (nan[b - b0]) {
          FallBack(kernels, p, b, values + b * p.k, indices + b * p.k);
        } else {
          collectors[b - b0].Finish(values + b * p.k, indices + b * p.k);
        }
      }
    });
  }

  // A NaN score: TopKV2's answer depends on its heap order, so run its
  // algorithm over all of this query's scores.
  void FallBack(const recopt::IsaKernels& kernels, const recopt::ScoreTopKProblem& p, int64_t b,
                float* values, int32* indices) const {
    std::unique_ptr<float[]> all(new float[p.n]);
    recopt::ScoreAll(kernels, p, b, all.get());
    recopt_kernels::PlainRow(all.get(), p.n, p.k, sorted_, values, indices);
  }

  float scale_ = 1.f;
  bool sorted_ = true;
  recopt_kernels::ScoreTopKLayout layout_;
};

#define RECOPT_REGISTER_SCORE_TOPK(T)                                                           \
  REGISTER_KERNEL_BUILDER(                                                                      \
      Name("Recopt>ScoreTopK").Device(DEVICE_CPU).TypeConstraint<T>("Tcand").HostMemory("k"), \
      ScoreTopKOp<T>)
RECOPT_REGISTER_SCORE_TOPK(float);
RECOPT_REGISTER_SCORE_TOPK(bfloat16);
RECOPT_REGISTER_SCORE_TOPK(int8);
#undef RECOPT_REGISTER_SCORE_TOPK

}  // namespace
}  // namespace tensorflow
