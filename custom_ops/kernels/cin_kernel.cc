// Thin OpKernel over core/cin: checks the shapes and shards examples.
#include "../core/cin.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

class CinProductsOp : public OpKernel {
 public:
  explicit CinProductsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x0 = ctx->input(0);
    const Tensor& hidden = ctx->input(1);
    OP_REQUIRES(ctx, x0.dims() == 3,
                errors::InvalidArgument(name(), ": x0 must be [batch, fields, dim], got ", x0.shape().DebugString()));
    const int64_t batch = x0.dim_size(0), f0 = x0.dim_size(1), d = x0.dim_size(2);
    OP_REQUIRES(ctx, hidden.dims() == 3 && hidden.dim_size(0) == batch && hidden.dim_size(2) == d,
                errors::InvalidArgument(name(), ": hidden must be [batch = ", batch, ", h, dim = ", d, "], got ",
                                        hidden.shape().DebugString()));
    const int64_t h = hidden.dim_size(1);
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch * d, f0 * h}), &out));
    if (out->NumElements() == 0) return;
    const float* xp = x0.flat<float>().data();
    const float* hp = hidden.flat<float>().data();
    float* op = out->flat<float>().data();
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(threads->num_threads, threads->workers, batch, d * f0 * h + 1,
          [&](int64_t b0, int64_t b1) { recopt::CinProducts(xp, hp, b0, b1, f0, h, d, op); });
  }
};

REGISTER_KERNEL_BUILDER(Name("Recopt>CinProducts").Device(DEVICE_CPU), CinProductsOp);

}  // namespace
}  // namespace tensorflow
