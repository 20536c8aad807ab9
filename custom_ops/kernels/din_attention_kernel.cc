// Thin OpKernel over core/din_attention: validates shapes, packs the
// attention MLP once, and shards examples over the intra-op pool.
#include <memory>
#include <string>
#include <vector>

#include "../core/din_attention.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/mutex.h"
#include "tensorflow/core/util/work_sharder.h"
#include "mlp_attrs.h"

namespace tensorflow {
namespace {

constexpr int kFirstWeight = 3;  // query, keys, mask, then the MLP's weights and biases

class DinAttentionOp : public OpKernel {
 public:
  explicit DinAttentionOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, recopt_kernels::ReadMlpAttrs(ctx, &attrs_));
    std::vector<string> parts;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("parts", &parts));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("softmax", &softmax_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_value", &pad_value_));
    std::string output;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("output", &output));
    weights_only_ = output == "weights";
    for (const string& p : parts) {
      const recopt::AttentionPart part = recopt::AttentionPartFromName(p.c_str());
      OP_REQUIRES(ctx, part != recopt::kPartCount,
                  errors::InvalidArgument(name(), ": unknown part '", p, "' (q, k, q-k, k-q or q*k)"));
      parts_.push_back(part);
    }
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& query = ctx->input(0);
    const Tensor& keys = ctx->input(1);
    const Tensor& mask = ctx->input(2);
    OP_REQUIRES(ctx, query.dims() == 2 && keys.dims() == 3 && mask.dims() == 2,
                errors::InvalidArgument(name(), ": need query [B, d], keys [B, T, d] and mask [B, T], got ",
                                        query.shape().DebugString(), ", ", keys.shape().DebugString(), " and ",
                                        mask.shape().DebugString()));
    const int64_t batch = query.dim_size(0), steps = keys.dim_size(1), dim = query.dim_size(1);
    OP_REQUIRES(ctx, keys.dim_size(0) == batch && keys.dim_size(2) == dim && mask.dim_size(0) == batch &&
                         mask.dim_size(1) == steps,
                errors::InvalidArgument(name(), ": query ", query.shape().DebugString(), ", keys ",
                                        keys.shape().DebugString(), " and mask ", mask.shape().DebugString(),
                                        " disagree on B, T or d"));
    std::shared_ptr<const recopt::PackedDinAttention> att;
    OP_REQUIRES_OK(ctx, GetPacked(ctx, dim, &att));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, weights_only_ ? mask.shape() : query.shape(), &out));
    if (batch == 0) return;
    Run(ctx, *att, {query.flat<float>().data(), keys.flat<float>().data(), mask.flat<bool>().data(), batch, steps,
                    weights_only_},
        out->flat<float>().data());
  }

 private:
  Status GetPacked(OpKernelContext* ctx, int64_t dim, std::shared_ptr<const recopt::PackedDinAttention>* out) {
    {
      tf_shared_lock l(mu_);
      if (packed_ != nullptr && packed_->dim() == dim && held_.Same(ctx)) {
        *out = packed_;
        return OkStatus();
      }
    }
    recopt::AttentionSpec spec{static_cast<int>(dim), parts_, {}, softmax_, pad_value_};
    TF_RETURN_IF_ERROR(recopt_kernels::LayerSpecs(ctx, attrs_, kFirstWeight, &spec.layers));
    auto att = std::make_shared<recopt::PackedDinAttention>();
    const std::string err = att->Pack(spec, recopt::SelectedIsaKernels(), attrs_.weights_bf16);
    if (!err.empty()) return errors::InvalidArgument(name(), ": ", err);
    mutex_lock l(mu_);
    packed_ = att;
    held_.Hold(ctx, kFirstWeight, 2 * attrs_.num_layers);
    *out = packed_;
    return OkStatus();
  }

  struct Batch {
    const float* query;
    const float* keys;
    const bool* mask;
    int64_t batch, steps;
    bool weights_only;
  };

  static void Run(OpKernelContext* ctx, const recopt::PackedDinAttention& att, const Batch& in, float* out) {
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t dim = att.dim(), steps = in.steps, out_row = in.weights_only ? steps : dim;
    auto work = [&](int64_t b0, int64_t b1) {
      std::unique_ptr<float[]> scratch(new float[att.ScratchFloats(steps)]);
      for (int64_t b = b0; b < b1; ++b) {
        att.Forward(in.query + b * dim, in.keys + b * steps * dim, in.mask + b * steps, steps, out + b * out_row,
                    scratch.get(), in.weights_only);
      }
    };
    Shard(threads->num_threads, threads->workers, in.batch, att.FlopsPerKey() * std::max<int64_t>(steps, 1), work);
  }

  recopt_kernels::MlpAttrs attrs_;
  std::vector<recopt::AttentionPart> parts_;
  bool softmax_ = false, weights_only_ = false;
  float pad_value_ = 0.f;
  mutex mu_;
  std::shared_ptr<const recopt::PackedDinAttention> packed_ TF_GUARDED_BY(mu_);
  recopt_kernels::HeldInputs held_ TF_GUARDED_BY(mu_);
};

REGISTER_KERNEL_BUILDER(Name("Recopt>DinAttention").Device(DEVICE_CPU), DinAttentionOp);

}  // namespace
}  // namespace tensorflow
