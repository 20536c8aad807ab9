// Recopt>FusedMLP on GPU: every layer is one cublasGemmEx plus a bias and
// activation pass. weights_bf16 (optimize(precision="bf16")) runs the GEMMs
// on bf16 Tensor Cores with fp32 accumulation; otherwise they are exact fp32.
#include <vector>

#include "../gpu/gpu_core.h"
#include "gpu_support.h"
#include "mlp_attrs.h"
#include "tensorflow/core/platform/mutex.h"

namespace tensorflow {
namespace {

class FusedMlpGpuOp : public OpKernel {
 public:
  explicit FusedMlpGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, recopt_kernels::ReadMlpAttrs(ctx, &attrs_));
    precision_ = attrs_.weights_bf16 ? recopt::gpu::kGemmBF16 : recopt::gpu::kGemmF32;
  }


  ~FusedMlpGpuOp() override { recopt::gpu::DestroyBlasHandles(cublas_, cublaslt_); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() >= 2,
                errors::InvalidArgument(name(), ": x must have rank >= 2, got ", x.shape().DebugString()));
    std::vector<recopt::gpu::DenseLayer> layers;
    OP_REQUIRES_OK(ctx, Layers(ctx, x.dim_size(x.dims() - 1), &layers));
    TensorShape out_shape = x.shape();
    out_shape.set_dim(x.dims() - 1, layers.back().out);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &y));
    const int64_t rows = x.NumElements() / x.dim_size(x.dims() - 1);
    if (rows == 0) return;
    void* stream = nullptr;
    OP_REQUIRES_OK(ctx, recopt_kernels::GpuStream(ctx, &stream));
    void* cublas = nullptr;
    OP_REQUIRES_OK(ctx, Handle(ctx, &cublas));
    Tensor scratch;
    void* workspace = nullptr;
    const size_t bytes = recopt::gpu::MlpWorkspaceBytes(rows, layers.data(), attrs_.num_layers, precision_);
    OP_REQUIRES_OK(ctx, recopt_kernels::GpuScratch(ctx, bytes, &scratch, &workspace));
    mutex_lock lock(mu_);  // one cuBLAS handle per kernel: calls on it are serialised
    const std::string err = recopt::gpu::Mlp(cublas, x.flat<float>().data(), rows, layers.data(), attrs_.num_layers,
                                             precision_, y->flat<float>().data(), workspace, bytes, stream);
    OP_REQUIRES_OK(ctx, recopt_kernels::CoreStatus(ctx, err));
  }

 private:
  Status Layers(OpKernelContext* ctx, int64_t in, std::vector<recopt::gpu::DenseLayer>* layers) const {
    for (int l = 0; l < attrs_.num_layers; ++l) {
      const Tensor& w = ctx->input(1 + l);
      const Tensor& b = ctx->input(1 + attrs_.num_layers + l);
      if (w.dims() != 2 || w.dim_size(0) != in || b.dims() != 1 || b.dim_size(0) != w.dim_size(1)) {
        return errors::InvalidArgument(name(), ": layer ", l, " needs weights [", in, ", m] and bias [m], got ",
                                       w.shape().DebugString(), " and ", b.shape().DebugString());
      }
      recopt::gpu::DenseLayer d;
      d.weights = w.flat<float>().data();
      d.bias = b.flat<float>().data();
      d.in = static_cast<int>(in);
      d.out = static_cast<int>(w.dim_size(1));
      d.activation = attrs_.activations[l];
      d.alpha = attrs_.alphas[l];
      layers->push_back(d);
      in = d.out;
    }
    return OkStatus();
  }

  Status Handle(OpKernelContext* ctx, void** cublas) {
    mutex_lock lock(mu_);
    if (cublas_ == nullptr) {
      TF_RETURN_IF_ERROR(recopt_kernels::CoreStatus(ctx, recopt::gpu::CreateBlasHandles(&cublas_, &cublaslt_)));
    }
    *cublas = cublas_;
    return OkStatus();
  }

  recopt_kernels::MlpAttrs attrs_;
  recopt::gpu::GemmPrecision precision_ = recopt::gpu::kGemmF32;
  mutex mu_;
  void* cublas_ = nullptr;
  void* cublaslt_ = nullptr;
};

REGISTER_KERNEL_BUILDER(Name("Recopt>FusedMLP").Device(DEVICE_GPU), FusedMlpGpuOp);

}  // namespace
}  // namespace tensorflow
