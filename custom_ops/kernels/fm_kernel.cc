// Thin OpKernel over core/fm: checks x's rank and shards examples.
#include "../core/fm.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

class FactorizationMachineOp : public OpKernel {
 public:
  explicit FactorizationMachineOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reduce", &reduce_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() == 3,
                errors::InvalidArgument(name(), ": x must be [batch, fields, k], got ", x.shape().DebugString()));
    const int64_t batch = x.dim_size(0), fields = x.dim_size(1), k = x.dim_size(2);
    Tensor* y = nullptr;
    const TensorShape shape = reduce_ ? TensorShape({batch, 1}) : TensorShape({batch, 1, k});
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, shape, &y));
    if (y->NumElements() == 0) return;
    const float* xp = x.flat<float>().data();
    float* yp = y->flat<float>().data();
    const recopt::IsaKernels& kernels = recopt::SelectedIsaKernels();
    // Waking a second thread costs more than the whole op below ~1M inputs:
    // sharded, batch 512 of 26 x 8 fields measured slower than stock with the
    // default pools (bench.ctr_interactions --threads default, fm rows).
    if (x.NumElements() < (int64_t{1} << 20)) {
      recopt::FactorizationMachine(kernels, xp, 0, batch, fields, k, reduce_, scale_, yp);
      return;
    }
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(threads->num_threads, threads->workers, batch, 4 * fields * k + 1, [&](int64_t b0, int64_t b1) {
      recopt::FactorizationMachine(kernels, xp, b0, b1, fields, k, reduce_, scale_, yp);
    });
  }

 private:
  bool reduce_ = true;
  float scale_ = 0.5f;
};

REGISTER_KERNEL_BUILDER(Name("Recopt>FactorizationMachine").Device(DEVICE_CPU), FactorizationMachineOp);

}  // namespace
}  // namespace tensorflow
