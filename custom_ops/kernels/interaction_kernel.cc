// Thin OpKernel over core/interaction: validates x against the attrs and
// shards examples over the intra-op pool.
#include <algorithm>
#include <memory>

#include "../core/interaction.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

class DotInteractionOp : public OpKernel {
 public:
  explicit DotInteractionOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::vector<int64_t> indices;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_features", &num_features_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("indices", &indices));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_dense", &num_dense_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dense_first", &dense_first_));
    OP_REQUIRES(ctx, num_dense_ <= 1, errors::InvalidArgument(name(), ": at most one dense input, got ", num_dense_));
    const std::string error = recopt::PairsFromFlat(indices, num_features_, &pairs_);
    OP_REQUIRES(ctx, error.empty(), errors::InvalidArgument(name(), ": ", error));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() == 3 && x.dim_size(1) == num_features_,
                errors::InvalidArgument(name(), ": x must be [batch, ", num_features_, ", dim], got ",
                                        x.shape().DebugString()));
    const int64_t batch = x.dim_size(0), dim = x.dim_size(2);
    const int64_t p = static_cast<int64_t>(pairs_.offset.size());
    const float* dense = nullptr;
    int64_t k = 0;
    if (num_dense_ == 1) {
      const Tensor& d = ctx->input(1);
      OP_REQUIRES(ctx, d.dims() == 2 && d.dim_size(0) == batch,
                  errors::InvalidArgument(name(), ": dense must be [batch = ", batch, ", k], got ",
                                          d.shape().DebugString()));
      dense = d.flat<float>().data();
      k = d.dim_size(1);
    }
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, p + k}), &y));
    if (batch == 0 || p + k == 0) return;
    const float* xp = x.flat<float>().data();
    float* yp = y->flat<float>().data();
    float* pairs_out = yp + (dense_first_ ? k : 0);
    float* dense_out = yp + (dense_first_ ? 0 : p);
    const recopt::IsaKernels& kernels = recopt::SelectedIsaKernels();
    auto work = [&](int64_t b0, int64_t b1) {
      std::unique_ptr<float[]> scratch(new float[recopt::InteractionScratchFloats(num_features_, dim)]);
      if (p > 0) recopt::DotInteraction(kernels, xp, b0, b1, num_features_, dim, pairs_, pairs_out, p + k, scratch.get());
      for (int64_t b = b0; b < b1 && k > 0; ++b) std::copy_n(dense + b * k, k, dense_out + b * (p + k));
    };
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(threads->num_threads, threads->workers, batch, 2 * num_features_ * num_features_ * dim + 1, work);
  }

 private:
  int64_t num_features_ = 0;
  int num_dense_ = 0;
  bool dense_first_ = true;
  recopt::InteractionPairs pairs_;
};

REGISTER_KERNEL_BUILDER(Name("Recopt>DotInteraction").Device(DEVICE_CPU), DotInteractionOp);

}  // namespace
}  // namespace tensorflow
