// Thin OpKernel over core/cross: checks the shapes and shards examples.
#include "../core/cross.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

class CrossNetworkOp : public OpKernel {
 public:
  explicit CrossNetworkOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x0 = ctx->input(0);
    const Tensor& kernels = ctx->input(1);
    const Tensor& kernel_bias = ctx->input(2);
    const Tensor& biases = ctx->input(3);
    OP_REQUIRES(ctx, x0.dims() == 2,
                errors::InvalidArgument(name(), ": x0 must be [batch, dim], got ", x0.shape().DebugString()));
    const int64_t batch = x0.dim_size(0), dim = x0.dim_size(1);
    OP_REQUIRES(ctx, kernels.dims() == 2 && kernels.dim_size(1) == dim,
                errors::InvalidArgument(name(), ": kernels must be [layers, dim = ", dim, "], got ",
                                        kernels.shape().DebugString()));
    const int64_t layers = kernels.dim_size(0);
    OP_REQUIRES(ctx, biases.shape() == kernels.shape(),
                errors::InvalidArgument(name(), ": biases must be ", kernels.shape().DebugString(), ", got ",
                                        biases.shape().DebugString()));
    OP_REQUIRES(ctx, kernel_bias.dims() == 1 && kernel_bias.dim_size(0) == layers,
                errors::InvalidArgument(name(), ": kernel_bias must be [layers = ", layers, "], got ",
                                        kernel_bias.shape().DebugString()));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x0.shape(), &y));
    if (y->NumElements() == 0) return;
    const float* xp = x0.flat<float>().data();
    const float* kp = kernels.flat<float>().data();
    const float* cp = kernel_bias.flat<float>().data();
    const float* bp = biases.flat<float>().data();
    float* yp = y->flat<float>().data();
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(threads->num_threads, threads->workers, batch, 5 * layers * dim + 1, [&](int64_t b0, int64_t b1) {
      recopt::CrossNetwork(xp, b0, b1, dim, layers, kp, cp, bp, yp);
    });
  }
};

REGISTER_KERNEL_BUILDER(Name("Recopt>CrossNetwork").Device(DEVICE_CPU), CrossNetworkOp);

}  // namespace
}  // namespace tensorflow
