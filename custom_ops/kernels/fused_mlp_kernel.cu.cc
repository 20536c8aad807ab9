// Recopt>FusedMLP on GPU: every layer is one cublasGemmEx plus a bias and
// activation pass. weights_bf16 (optimize(precision="bf16")) runs the GEMMs
// on bf16 Tensor Cores with fp32 accumulation; otherwise they are exact fp32.
#include <vector>

#include "../core/activation.h"
#include "../gpu/gpu_core.h"
#include "gpu_support.h"
#include "tensorflow/core/platform/mutex.h"

namespace tensorflow {
namespace {

class FusedMlpGpuOp : public OpKernel {
 public:
  explicit FusedMlpGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_layers", &num_layers_));
    std::vector<string> names;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activations", &names));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("alphas", &alphas_));
    bool bf16 = false;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weights_bf16", &bf16));
    precision_ = bf16 ? recopt::gpu::kGemmBF16 : recopt::gpu::kGemmF32;
    OP_REQUIRES(ctx, names.size() == static_cast<size_t>(num_layers_) && alphas_.size() == names.size(),
                errors::InvalidArgument(name(), ": activations and alphas need ", num_layers_, " entries"));
    for (const string& n : names) {
      const recopt::Activation act = recopt::ActivationFromName(n.c_str());
      OP_REQUIRES(ctx, act != recopt::kActCount, errors::InvalidArgument(name(), ": unknown activation '", n, "'"));
      activations_.push_back(act);
    }
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
    const size_t bytes = recopt::gpu::MlpWorkspaceBytes(rows, layers.data(), num_layers_, precision_);
    OP_REQUIRES_OK(ctx, recopt_kernels::GpuScratch(ctx, bytes, &scratch, &workspace));
    mutex_lock lock(mu_);  // one cuBLAS handle per kernel: calls on it are serialised
    const std::string err = recopt::gpu::Mlp(cublas, x.flat<float>().data(), rows, layers.data(), num_layers_,
                                             precision_, y->flat<float>().data(), workspace, bytes, stream);
    OP_REQUIRES_OK(ctx, recopt_kernels::CoreStatus(ctx, err));
  }

 private:
  Status Layers(OpKernelContext* ctx, int64_t in, std::vector<recopt::gpu::DenseLayer>* layers) const {
    for (int l = 0; l < num_layers_; ++l) {
      const Tensor& w = ctx->input(1 + l);
      const Tensor& b = ctx->input(1 + num_layers_ + l);
      if (w.dims() != 2 || w.dim_size(0) != in || b.dims() != 1 || b.dim_size(0) != w.dim_size(1)) {
        return errors::InvalidArgument(name(), ": layer ", l, " needs weights [", in, ", m] and bias [m], got ",
                                       w.shape().DebugString(), " and ", b.shape().DebugString());
      }
      recopt::gpu::DenseLayer d;
      d.weights = w.flat<float>().data();
      d.bias = b.flat<float>().data();
      d.in = static_cast<int>(in);
      d.out = static_cast<int>(w.dim_size(1));
      d.activation = activations_[l];
      d.alpha = alphas_[l];
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

  int num_layers_ = 0;
  std::vector<recopt::Activation> activations_;
  std::vector<float> alphas_;
  recopt::gpu::GemmPrecision precision_ = recopt::gpu::kGemmF32;
  mutex mu_;
  void* cublas_ = nullptr;
  void* cublaslt_ = nullptr;
};

REGISTER_KERNEL_BUILDER(Name("Recopt>FusedMLP").Device(DEVICE_GPU), FusedMlpGpuOp);

}  // namespace
}  // namespace tensorflow
