// Recopt>TopK on GPU (float rows): the core's sampled-threshold filter.
// Other dtypes, and k above the GPU limit, have no GPU kernel, so the
// rewrite leaves them alone for device="gpu" (grappler_passes/fuse_topk.py).
#include "../gpu/gpu_core.h"
#include "gpu_support.h"
#include "topk_inputs.h"

namespace tensorflow {
namespace {

class RecoptTopKGpuOp : public OpKernel {
 public:
  explicit RecoptTopKGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    recopt_kernels::TopKShape s;
    OP_REQUIRES_OK(ctx, recopt_kernels::ParseTopK(ctx, &s));
    Tensor *values = nullptr, *indices = nullptr;
    OP_REQUIRES_OK(ctx, recopt_kernels::AllocateTopKOutputs(ctx, s.out, &values, &indices));
    const int64_t rows = s.rows, n = s.n;
    const int k = s.k;
    if (k == 0 || rows == 0) return;
    void* stream = nullptr;
    OP_REQUIRES_OK(ctx, recopt_kernels::GpuStream(ctx, &stream));
    Tensor scratch;
    void* workspace = nullptr;
    const size_t bytes = recopt::gpu::TopKWorkspaceBytes(rows, n, k);
    OP_REQUIRES_OK(ctx, recopt_kernels::GpuScratch(ctx, bytes, &scratch, &workspace));
    const std::string err = recopt::gpu::TopK(ctx->input(0).flat<float>().data(), rows, n, k, values->flat<float>().data(),
                                              indices->flat<int32>().data(), workspace, bytes, stream);
    OP_REQUIRES_OK(ctx, recopt_kernels::CoreStatus(ctx, err, k > recopt::gpu::kMaxK));
  }
};

REGISTER_KERNEL_BUILDER(Name("Recopt>TopK").Device(DEVICE_GPU).TypeConstraint<float>("T").HostMemory("k"),
                        RecoptTopKGpuOp);

}  // namespace
}  // namespace tensorflow
