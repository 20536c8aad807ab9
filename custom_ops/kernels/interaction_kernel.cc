// Thin OpKernel over core/interaction: validates x against the attrs and
// shards examples over the intra-op pool.
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
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, p}), &y));
    if (batch == 0 || p == 0) return;
    const float* xp = x.flat<float>().data();
    float* yp = y->flat<float>().data();
    const recopt::GemmKernels& kernels = recopt::SelectedGemmKernels();
    auto work = [&](int64_t b0, int64_t b1) {
      std::unique_ptr<float[]> scratch(new float[recopt::InteractionScratchFloats(num_features_)]);
      recopt::DotInteraction(kernels, xp, b0, b1, num_features_, dim, pairs_, yp, scratch.get());
    };
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(threads->num_threads, threads->workers, batch, 2 * num_features_ * num_features_ * dim + 1, work);
  }

 private:
  int64_t num_features_ = 0;
  recopt::InteractionPairs pairs_;
};

REGISTER_KERNEL_BUILDER(Name("Recopt>DotInteraction").Device(DEVICE_CPU), DotInteractionOp);

}  // namespace
}  // namespace tensorflow
