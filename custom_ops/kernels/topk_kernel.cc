// Recopt>TopK: TopKV2's contract and results, with core/topk's sampled
// threshold for long rows. Short rows, large k and rows holding NaN take
// TopKV2's own algorithm (below), so every output matches TensorFlow's.
#include <algorithm>
#include <atomic>
#include <limits>
#include <memory>
#include <vector>

#include "../core/topk.h"
#include "topk_inputs.h"
#include "topk_plain.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

// Elements per scan unit when one row is split over the intra-op pool.
constexpr int64_t kMinChunk = 1 << 18;

template <typename T>
class RecoptTopKOp : public OpKernel {
 public:
  explicit RecoptTopKOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sorted", &sorted_));
  }

  void Compute(OpKernelContext* ctx) override {
    recopt_kernels::TopKShape s;
    OP_REQUIRES_OK(ctx, recopt_kernels::ParseTopK(ctx, &s));
    Tensor *values = nullptr, *indices = nullptr;
    OP_REQUIRES_OK(ctx, recopt_kernels::AllocateTopKOutputs(ctx, s.out, &values, &indices));
    if (s.k == 0 || s.rows == 0) return;
    const Tensor& input = ctx->input(0);
    const int64_t rows = s.rows, n = s.n;
    const int k = s.k;
    Rows rs{input.flat<T>().data(), rows, n, k, values->flat<T>().data(), indices->flat<int32>().data()};
    if (n >= recopt::kTopKSampledMinCols && k <= n / recopt::kTopKSampledMaxKFraction) {
      Sampled(ctx, rs);
    } else {
      Plain(ctx, rs);
    }
  }

 private:
  struct Rows {
    const T* x;
    int64_t rows, n;
    int k;
    T* values;
    int32* indices;
  };

  void Plain(OpKernelContext* ctx, const Rows& r) {
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(threads->num_threads, threads->workers, r.rows, 8 * r.n, [&](int64_t b, int64_t e) {
      // k = 1 stays with the max reduction: the rank count measured slower there.
      const bool short_rows = sorted_ && r.n <= recopt_kernels::kShortRowMaxCols && r.k > 1;
      for (int64_t i = b; i < e; ++i) {
        const T* x = r.x + i * r.n;
        T* values = r.values + i * r.k;
        int32* indices = r.indices + i * r.k;
        if (short_rows && recopt_kernels::ShortSortedRow(x, r.n, r.k, values, indices)) continue;
        recopt_kernels::PlainRow(x, r.n, r.k, sorted_, values, indices);
      }
    });
  }

  // With at least a row per thread, each thread takes whole rows in one
  // pass. Fewer rows are split into chunks: sample every row, scan chunks in
  // parallel, then merge per row. That costs two more rounds of waking the
  // pool, which on this 2-core VM took longer than the second thread saved
  // at 1M x 8 (bench/topk.py).
  void Sampled(OpKernelContext* ctx, const Rows& r) {
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t chunks = std::max<int64_t>(
        1, std::min<int64_t>((threads->num_threads + r.rows - 1) / r.rows, r.n / kMinChunk));
    if (chunks == 1) return WholeRows(threads, r);
    const int64_t chunk_len = (r.n + chunks - 1) / chunks;
    std::vector<recopt::TopKSample<T>> samples(r.rows);
    std::vector<T> thresholds(r.rows);
    std::vector<recopt::TopKCollector<T>> parts(r.rows * chunks);
    std::unique_ptr<std::atomic<bool>[]> plain(new std::atomic<bool>[r.rows]);
    for (int64_t i = 0; i < r.rows; ++i) plain[i] = false;

    Shard(threads->num_threads, threads->workers, r.rows, 20000, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        plain[i] = !samples[i].Take(r.x + i * r.n, r.n, r.k);
        // Once per row, here: Threshold() reorders the sample, so the chunks
        // of one row (scanned concurrently below) must not call it.
        if (!plain[i]) thresholds[i] = samples[i].Threshold(0);
      }
    });
    Shard(threads->num_threads, threads->workers, r.rows * chunks, 2 * chunk_len,
          [&](int64_t b, int64_t e) {
            for (int64_t u = b; u < e; ++u) {
              const int64_t row = u / chunks, c0 = (u % chunks) * chunk_len;
              if (plain[row]) continue;
              parts[u].Reset(r.k, thresholds[row]);
              if (!parts[u].Scan(r.x + row * r.n, c0, std::min(r.n, c0 + chunk_len))) plain[row] = true;
            }
          });
    Shard(threads->num_threads, threads->workers, r.rows, 20 * r.k, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) FinishRow(r, i, chunks, &samples[i], &parts[i * chunks], plain[i]);
    });
  }

  void WholeRows(const DeviceBase::CpuWorkerThreads* threads, const Rows& r) {
    Shard(threads->num_threads, threads->workers, r.rows, 2 * r.n, [&](int64_t b, int64_t e) {
      recopt::TopKSample<T> sample;
      recopt::TopKCollector<T> part;
      for (int64_t i = b; i < e; ++i) {
        const T* x = r.x + i * r.n;
        bool ok = sample.Take(x, r.n, r.k);
        if (ok) {
          part.Reset(r.k, sample.Threshold(0));
          ok = part.Scan(x, 0, r.n);
        }
        FinishRow(r, i, 1, &sample, &part, !ok);
      }
    });
  }

  void FinishRow(const Rows& r, int64_t row, int64_t chunks, recopt::TopKSample<T>* sample,
                 recopt::TopKCollector<T>* parts, bool plain) {
    const T* x = r.x + row * r.n;
    T* values = r.values + row * r.k;
    int32* indices = r.indices + row * r.k;
    if (plain) return recopt_kernels::PlainRow(x, r.n, r.k, sorted_, values, indices);
    for (int64_t c = 1; c < chunks; ++c) parts[0].Absorb(parts[c]);
    // Fewer than k passed: every passing element is in the answer, but the
    // rest are below the threshold, so scan again with a lower one.
    for (int attempt = 1; parts[0].size() < r.k; ++attempt) {
      parts[0].Reset(r.k, sample->Threshold(attempt));
      parts[0].Scan(x, 0, r.n);
    }
    parts[0].Finish(values, indices);
  }

  bool sorted_ = true;
};

#define RECOPT_REGISTER_TOPK(T) \
  REGISTER_KERNEL_BUILDER(      \
      Name("Recopt>TopK").Device(DEVICE_CPU).TypeConstraint<T>("T").HostMemory("k"), RecoptTopKOp<T>)
RECOPT_REGISTER_TOPK(float);
RECOPT_REGISTER_TOPK(double);
RECOPT_REGISTER_TOPK(int32);
RECOPT_REGISTER_TOPK(int64_t);
#undef RECOPT_REGISTER_TOPK

}  // namespace
}  // namespace tensorflow
