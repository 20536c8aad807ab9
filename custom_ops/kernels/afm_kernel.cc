// Thin OpKernel over core/afm: validates the inputs against the attrs and
// shards examples over the intra-op pool.
#include <algorithm>
#include <memory>

#include "../core/afm.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

class AfmPoolingOp : public OpKernel {
 public:
  explicit AfmPoolingOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string activation;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rows", &rows_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cols", &cols_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation", &activation));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("alpha", &alpha_));
    activation_ = recopt::ActivationFromName(activation.c_str());
    OP_REQUIRES(ctx, activation_ != recopt::kActCount,
                errors::InvalidArgument(name(), ": unknown activation '", activation, "'"));
    OP_REQUIRES(ctx, rows_.size() == cols_.size(),
                errors::InvalidArgument(name(), ": rows and cols must have one entry per pair, got ", rows_.size(),
                                        " and ", cols_.size()));
    // The int32 pairs the kernel reads, made once; Compute only checks them
    // against x's field count (the attrs cannot know it).
    for (size_t t = 0; t < rows_.size(); ++t) {
      lowest_ = std::min({lowest_, rows_[t], cols_[t]});
      highest_ = std::max({highest_, rows_[t], cols_[t]});
      rows32_.push_back(static_cast<int>(rows_[t]));
      cols32_.push_back(static_cast<int>(cols_[t]));
    }
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    const Tensor& b = ctx->input(2);
    const Tensor& h = ctx->input(3);
    OP_REQUIRES(ctx, x.dims() == 3,
                errors::InvalidArgument(name(), ": x must be [batch, fields, dim], got ", x.shape().DebugString()));
    OP_REQUIRES(ctx, w.dims() == 2 && w.dim_size(0) == x.dim_size(2),
                errors::InvalidArgument(name(), ": attention_w must be [dim = ", x.dim_size(2), ", units], got ",
                                        w.shape().DebugString()));
    const int64_t units = w.dim_size(1);
    OP_REQUIRES(ctx, b.dims() == 1 && b.dim_size(0) == units,
                errors::InvalidArgument(name(), ": attention_b must be [units = ", units, "], got ",
                                        b.shape().DebugString()));
    OP_REQUIRES(ctx, h.NumElements() == units && (h.dims() == 1 || (h.dims() == 2 && h.dim_size(1) == 1)),
                errors::InvalidArgument(name(), ": projection_h must be [units = ", units, ", 1] or [units], got ",
                                        h.shape().DebugString()));
    const int64_t batch = x.dim_size(0), fields = x.dim_size(1), dim = x.dim_size(2);
    if (lowest_ < 0 || highest_ >= fields) {  // AfmPairs names the first field out of range
      std::vector<int> unused_rows, unused_cols;
      ctx->CtxFailure(errors::InvalidArgument(name(), ": ",
                                              recopt::AfmPairs(rows_, cols_, fields, &unused_rows, &unused_cols)));
      return;
    }
    const std::vector<int>& rows = rows32_;
    const std::vector<int>& cols = cols32_;
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, dim}), &y));
    if (batch == 0 || dim == 0) return;
    recopt::AfmWeights weights;
    const std::string error =
        recopt::PackAfmWeights(w.flat<float>().data(), b.flat<float>().data(), h.flat<float>().data(),
                               static_cast<int>(dim), static_cast<int>(units), activation_, alpha_, &weights);
    OP_REQUIRES(ctx, error.empty(), errors::InvalidArgument(name(), ": ", error));
    const float* xp = x.flat<float>().data();
    float* yp = y->flat<float>().data();
    const recopt::IsaKernels& kernels = recopt::SelectedIsaKernels();
    const int64_t pairs = static_cast<int64_t>(rows.size());
    auto work = [&](int64_t b0, int64_t b1) {
      std::unique_ptr<float[]> scratch(new float[recopt::PairAttentionScratchFloats(pairs, static_cast<int>(dim))]);
      recopt::AfmPooling(kernels, xp, b0, b1, fields, rows, cols, weights, yp, scratch.get());
    };
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(threads->num_threads, threads->workers, batch, pairs * (2 * dim * weights.units + 4 * dim) + 1, work);
  }

 private:
  std::vector<int64_t> rows_, cols_;
  std::vector<int> rows32_, cols32_;
  int64_t lowest_ = 0, highest_ = -1;
  recopt::Activation activation_ = recopt::kActRelu;
  float alpha_ = 0.f;
};

REGISTER_KERNEL_BUILDER(Name("Recopt>AfmPooling").Device(DEVICE_CPU), AfmPoolingOp);

}  // namespace
}  // namespace tensorflow
