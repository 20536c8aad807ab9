// Thin OpKernel over core/bilinear: validates the inputs against the attrs
// and shards examples over the intra-op pool.
#include <algorithm>

#include "../core/bilinear.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

class BilinearInteractionOp : public OpKernel {
 public:
  explicit BilinearInteractionOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rows", &rows_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("cols", &cols_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weight_index", &weight_index_));
    // The int32 pairs the kernel reads, made once against the largest field
    // and group they name; Compute only checks those against the inputs.
    for (const int64_t v : rows_) highest_field_ = std::max(highest_field_, v);
    for (const int64_t v : cols_) highest_field_ = std::max(highest_field_, v);
    for (const int64_t v : weight_index_) highest_group_ = std::max(highest_group_, v);
    // Bad attrs (a negative entry, lists of different lengths) are reported
    // by Compute, against the real field and group counts.
    valid_ = recopt::MakeBilinearPairs(rows_, cols_, weight_index_, highest_field_ + 1, highest_group_ + 1, &pairs_)
                 .empty();
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& w = ctx->input(1);
    const Tensor& b = ctx->input(2);
    OP_REQUIRES(ctx, x.dims() == 3,
                errors::InvalidArgument(name(), ": x must be [batch, fields, dim], got ", x.shape().DebugString()));
    const int64_t batch = x.dim_size(0), fields = x.dim_size(1), dim = x.dim_size(2);
    OP_REQUIRES(ctx, w.dims() == 3 && w.dim_size(1) == dim && w.dim_size(2) == dim,
                errors::InvalidArgument(name(), ": weights must be [groups, dim = ", dim, ", ", dim, "], got ",
                                        w.shape().DebugString()));
    OP_REQUIRES(ctx, b.dims() == 2 && b.dim_size(0) == w.dim_size(0) && b.dim_size(1) == dim,
                errors::InvalidArgument(name(), ": biases must be [groups = ", w.dim_size(0), ", dim = ", dim,
                                        "], got ", b.shape().DebugString()));
    if (!valid_ || highest_field_ >= fields || highest_group_ >= w.dim_size(0)) {  // the message names the entry
      recopt::BilinearPairs unused;
      ctx->CtxFailure(errors::InvalidArgument(
          name(), ": ", recopt::MakeBilinearPairs(rows_, cols_, weight_index_, fields, w.dim_size(0), &unused)));
      return;
    }
    const recopt::BilinearPairs& pairs = pairs_;
    const int64_t p = static_cast<int64_t>(rows_.size());
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, p, dim}), &y));
    if (batch == 0 || p == 0 || dim == 0) return;
    const float* xp = x.flat<float>().data();
    const float* wp = w.flat<float>().data();
    const float* bp = b.flat<float>().data();
    float* yp = y->flat<float>().data();
    const recopt::IsaKernels& kernels = recopt::SelectedIsaKernels();
    auto work = [&](int64_t b0, int64_t b1) {
      recopt::BilinearInteraction(kernels, xp, b0, b1, fields, dim, pairs, wp, bp, yp);
    };
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(threads->num_threads, threads->workers, batch, p * 2 * dim * (dim + 1) + 1, work);
  }

 private:
  std::vector<int64_t> rows_, cols_, weight_index_;
  int64_t highest_field_ = -1, highest_group_ = -1;
  bool valid_ = false;
  recopt::BilinearPairs pairs_;
};

REGISTER_KERNEL_BUILDER(Name("Recopt>BilinearInteraction").Device(DEVICE_CPU), BilinearInteractionOp);

}  // namespace
}  // namespace tensorflow
