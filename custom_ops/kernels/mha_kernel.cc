// Thin OpKernel over core/mha: validates shapes, packs the four projections
// once, and shards groups of examples over the intra-op pool.
#include <memory>
#include <string>

#include "../core/mha.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/mutex.h"
#include "tensorflow/core/util/work_sharder.h"
#include "mlp_attrs.h"

namespace tensorflow {
namespace {

constexpr int kFirstWeight = 3;  // query, key, value, then kernel/bias pairs for Q, K, V and the output
constexpr int kNumWeights = 8;
constexpr int kMaskInput = kFirstWeight + kNumWeights;

class MultiHeadAttentionOp : public OpKernel {
 public:
  explicit MultiHeadAttentionOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    string mode;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_heads", &heads_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("key_dim", &key_dim_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("value_dim", &value_dim_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("scale", &scale_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("mask_mode", &mode));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("mask_value", &mask_value_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("zero_masked", &zero_masked_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_masks", &num_masks_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weights_bf16", &weights_bf16_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("causal", &causal_));
    OP_REQUIRES(ctx, num_masks_ <= 1, errors::InvalidArgument(name(), ": at most one mask, got ", num_masks_));
    mask_mode_ = mode == "add" ? recopt::kMaskAdd : recopt::kMaskSelect;
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& query = ctx->input(0);
    const Tensor& key = ctx->input(1);
    const Tensor& value = ctx->input(2);
    OP_REQUIRES(ctx, query.dims() == 3 && key.dims() == 3 && value.dims() == 3,
                errors::InvalidArgument(name(), ": need query [B, T, dq], key [B, S, dk] and value [B, S, dv], got ",
                                        query.shape().DebugString(), ", ", key.shape().DebugString(), " and ",
                                        value.shape().DebugString()));
    const int64_t batch = query.dim_size(0), t = query.dim_size(1), s = key.dim_size(1);
    OP_REQUIRES(ctx, key.dim_size(0) == batch && value.dim_size(0) == batch && value.dim_size(1) == s,
                errors::InvalidArgument(name(), ": query ", query.shape().DebugString(), ", key ",
                                        key.shape().DebugString(), " and value ", value.shape().DebugString(),
                                        " disagree on B or S"));
    std::shared_ptr<const recopt::PackedMha> mha;
    OP_REQUIRES_OK(ctx, GetPacked(ctx, &mha));
    OP_REQUIRES(ctx, query.dim_size(2) == mha->query_dim() && key.dim_size(2) == mha->key_dim_in() &&
                         value.dim_size(2) == mha->value_dim_in(),
                errors::InvalidArgument(name(), ": query, key and value widths ", query.dim_size(2), ", ",
                                        key.dim_size(2), ", ", value.dim_size(2), " do not match the kernels' ",
                                        mha->query_dim(), ", ", mha->key_dim_in(), ", ", mha->value_dim_in()));
    recopt::MhaBatch in{query.flat<float>().data(), key.flat<float>().data(), value.flat<float>().data(),
                        nullptr, t, t, s, nullptr};
    if (num_masks_ == 1) {
      const Tensor& mask = ctx->input(kMaskInput);
      const int per_head = mask.dims() == 4 ? 1 : 0;
      OP_REQUIRES(ctx, (mask.dims() == 3 || (per_head && mask.dim_size(1) == heads_)) &&
                           (mask.dim_size(0) == batch || mask.dim_size(0) == 1) &&
                           mask.dim_size(2 + per_head) == s &&
                           (mask.dim_size(1 + per_head) == t || mask.dim_size(1 + per_head) == 1),
                  errors::InvalidArgument(name(), ": mask must be [B or 1, T or 1, S] = [", batch, " or 1, ", t,
                                          " or 1, ", s, "] or [B or 1, N, T or 1, S] with N = ", heads_,
                                          ", got ", mask.shape().DebugString()));
      in.mask = mask.flat<bool>().data();
      in.mask_rows = mask.dim_size(1 + per_head);
      in.mask_shared = mask.dim_size(0) == 1;
      in.mask_per_head = per_head;
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, t, mha->output_dim()}), &out));
    if (batch == 0 || t == 0) return;
    in.out = out->flat<float>().data();
    Run(ctx, *mha, in, batch);
  }

 private:
  Status GetPacked(OpKernelContext* ctx, std::shared_ptr<const recopt::PackedMha>* out) {
    {
      tf_shared_lock l(mu_);
      if (packed_ != nullptr && held_.Same(ctx)) {
        *out = packed_;
        return OkStatus();
      }
    }
    recopt::MhaSpec spec{heads_, key_dim_, value_dim_, {}, {}, {}, {}, scale_, mask_mode_, mask_value_,
                         zero_masked_, causal_};
    recopt::DenseLayerSpec* layers[] = {&spec.query, &spec.key, &spec.value, &spec.output};
    static const char* const kNames[] = {"query", "key", "value", "output"};
    for (int l = 0; l < 4; ++l) {
      const Tensor& w = ctx->input(kFirstWeight + 2 * l);
      const Tensor& b = ctx->input(kFirstWeight + 2 * l + 1);
      if (w.dims() != 2 || b.dims() != 1 || b.dim_size(0) != w.dim_size(1)) {
        return errors::InvalidArgument(name(), ": ", kNames[l], " kernel and bias must be [k, n] and [n], got ",
                                       w.shape().DebugString(), " and ", b.shape().DebugString());
      }
      *layers[l] = {w.flat<float>().data(), b.flat<float>().data(), static_cast<int>(w.dim_size(0)),
                    static_cast<int>(w.dim_size(1)), recopt::kActNone, 0.f};
    }
    auto mha = std::make_shared<recopt::PackedMha>();
    const std::string err = mha->Pack(spec, recopt::SelectedIsaKernels(), weights_bf16_);
    if (!err.empty()) return errors::InvalidArgument(name(), ": ", err);
    mutex_lock l(mu_);
    packed_ = mha;
    held_.Hold(ctx, kFirstWeight, kNumWeights);
    *out = packed_;
    return OkStatus();
  }

  static void Run(OpKernelContext* ctx, const recopt::PackedMha& mha, const recopt::MhaBatch& in, int64_t batch) {
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t group = mha.GroupSize(in.q_steps, in.kv_steps);
    const int64_t groups = (batch + group - 1) / group;
    auto work = [&](int64_t g0, int64_t g1) {
      std::unique_ptr<float[]> scratch(new float[mha.ScratchFloats(in.q_steps, in.kv_steps)]);
      mha.Forward(in, g0 * group, std::min(batch, g1 * group), scratch.get());
    };
    Shard(threads->num_threads, threads->workers, groups,
          mha.FlopsPerExample(in.q_steps, in.kv_steps) * group, work);
  }

  int heads_ = 0, key_dim_ = 0, value_dim_ = 0, num_masks_ = 0;
  int mask_mode_ = recopt::kMaskSelect;
  float scale_ = 1.f, mask_value_ = 0.f;
  bool weights_bf16_ = false, zero_masked_ = false, causal_ = false;
  mutex mu_;
  std::shared_ptr<const recopt::PackedMha> packed_ TF_GUARDED_BY(mu_);
  recopt_kernels::HeldInputs held_ TF_GUARDED_BY(mu_);
};

REGISTER_KERNEL_BUILDER(Name("Recopt>MultiHeadAttention").Device(DEVICE_CPU), MultiHeadAttentionOp);

}  // namespace
}  // namespace tensorflow
