// Recopt>ScoreTopK on GPU: validates like the CPU kernel, then one core
// call (fused score + threshold filter + exact select). Row layout only: the
// placer keeps a blocks16 ScoreTopK (optimize(device="cpu")) on the CPU.
#include "../gpu/gpu_core.h"
#include "gpu_support.h"
#include "topk_inputs.h"

namespace tensorflow {
namespace {

template <typename Tcand>
constexpr recopt::gpu::Storage StorageOf();
template <>
constexpr recopt::gpu::Storage StorageOf<float>() { return recopt::gpu::kStoreF32; }
template <>
constexpr recopt::gpu::Storage StorageOf<bfloat16>() { return recopt::gpu::kStoreBF16; }
template <>
constexpr recopt::gpu::Storage StorageOf<int8>() { return recopt::gpu::kStoreI8; }

template <typename Tcand>
class ScoreTopKGpuOp : public OpKernel {
 public:
  explicit ScoreTopKGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
  }

  void Compute(OpKernelContext* ctx) override {
    recopt::gpu::ScoreTopKArgs a;
    OP_REQUIRES_OK(ctx, Parse(ctx, &a));
    Tensor *values = nullptr, *indices = nullptr;
    OP_REQUIRES_OK(ctx, recopt_kernels::AllocateTopKOutputs(ctx, TensorShape({a.batch, a.k}), &values, &indices));
    if (a.k == 0 || a.batch == 0) return;
    void* stream = nullptr;
    OP_REQUIRES_OK(ctx, recopt_kernels::GpuStream(ctx, &stream));
    Tensor scratch;
    void* workspace = nullptr;
    const size_t bytes = recopt::gpu::ScoreTopKWorkspaceBytes(a.batch, a.n, a.k);
    OP_REQUIRES_OK(ctx, recopt_kernels::GpuScratch(ctx, bytes, &scratch, &workspace));
    const std::string err = recopt::gpu::ScoreTopK(a, values->flat<float>().data(), indices->flat<int32>().data(),
                                                   workspace, bytes, stream);
    OP_REQUIRES_OK(ctx, recopt_kernels::CoreStatus(ctx, err));
  }

 private:
  Status Parse(OpKernelContext* ctx, recopt::gpu::ScoreTopKArgs* a) const {
    recopt_kernels::ScoreTopKShape s;
    TF_RETURN_IF_ERROR(recopt_kernels::ParseScoreTopK(ctx, StorageOf<Tcand>() == recopt::gpu::kStoreI8, {}, &s));
    if (s.k > recopt::gpu::kMaxK || s.dim > recopt::gpu::kMaxScoreDim) {
      return errors::InvalidArgument(name(), ": the GPU kernel takes k <= ", recopt::gpu::kMaxK, " and dim <= ",
                                     recopt::gpu::kMaxScoreDim, ", got k=", s.k, ", dim=", s.dim);
    }
    a->k = s.k;
    a->queries = ctx->input(0).flat<float>().data();
    a->batch = s.batch;
    a->dim = s.dim;
    a->candidates = ctx->input(1).flat<Tcand>().data();
    a->storage = StorageOf<Tcand>();
    a->n = s.n;
    a->row_scales = s.has_scales ? ctx->input(2).flat<float>().data() : nullptr;
    a->bias = s.has_bias ? ctx->input(3).flat<float>().data() : nullptr;
    a->scale = scale_;
    return OkStatus();
  }

  float scale_ = 1.f;
};

#define RECOPT_REGISTER_SCORE_TOPK_GPU(T)                                                       \
  REGISTER_KERNEL_BUILDER(                                                                      \
      Name("Recopt>ScoreTopK")                                                                  \
          .Device(DEVICE_GPU)                                                                   \
          .TypeConstraint<T>("Tcand")                                                           \
          .AttrConstraint<std::string>("layout", "rows")                                        \
          .HostMemory("k"),                                                                     \
      ScoreTopKGpuOp<T>)
RECOPT_REGISTER_SCORE_TOPK_GPU(float);
RECOPT_REGISTER_SCORE_TOPK_GPU(bfloat16);
RECOPT_REGISTER_SCORE_TOPK_GPU(int8);
#undef RECOPT_REGISTER_SCORE_TOPK_GPU

}  // namespace
}  // namespace tensorflow
