// Thin OpKernel over core/gru: validates shapes, packs the weights once, and
// shards examples (each an independent recurrence) over the intra-op pool.
#include <memory>
#include <string>

#include "../core/gru.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/mutex.h"
#include "tensorflow/core/util/work_sharder.h"
#include "mlp_attrs.h"

namespace tensorflow {
namespace {

constexpr int kFirstWeight = 2;  // x, initial_state, then kernel, recurrent kernel, biases
constexpr int kNumWeights = 4;

class GruOp : public OpKernel {
 public:
  explicit GruOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("reset_after", &reset_after_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("time_major", &time_major_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("weights_bf16", &weights_bf16_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_masks", &num_masks_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_attention", &num_attention_));
    OP_REQUIRES(ctx, num_masks_ <= 1 && num_attention_ <= 1,
                errors::InvalidArgument(name(), ": at most one mask and one attention input"));
    std::string mode;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("attention_mode", &mode));
    if (num_attention_ == 1) attention_ = mode == "keep" ? recopt::kGruAttendKeep : recopt::kGruAttendUpdate;
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& h0 = ctx->input(1);
    OP_REQUIRES(ctx, x.dims() == 3 && h0.dims() == 2,
                errors::InvalidArgument(name(), ": need x ", time_major_ ? "[T, B, d]" : "[B, T, d]",
                                        " and initial_state [B, units], got ", x.shape().DebugString(), " and ",
                                        h0.shape().DebugString()));
    const recopt::GruLayout layout{x.dim_size(time_major_ ? 1 : 0), x.dim_size(time_major_ ? 0 : 1), time_major_};
    std::shared_ptr<const recopt::PackedGru> gru;
    OP_REQUIRES_OK(ctx, GetPacked(ctx, &gru));
    OP_REQUIRES(ctx, x.dim_size(2) == gru->input_dim() && h0.dim_size(0) == layout.batch &&
                         h0.dim_size(1) == gru->units(),
                errors::InvalidArgument(name(), ": x ", x.shape().DebugString(), " and initial_state ",
                                        h0.shape().DebugString(), " do not fit a kernel of ", gru->input_dim(),
                                        " inputs and ", gru->units(), " units"));
    const bool* mask = nullptr;
    const float* att = nullptr;
    if (num_masks_ == 1) {
      OP_REQUIRES_OK(ctx, CheckPerStep(ctx->input(6), x, "mask"));
      mask = ctx->input(6).flat<bool>().data();
    }
    if (num_attention_ == 1) {
      OP_REQUIRES_OK(ctx, CheckPerStep(ctx->input(6 + num_masks_), x, "attention"));
      att = ctx->input(6 + num_masks_).flat<float>().data();
    }
    const int64_t u = gru->units();
    Tensor *seq = nullptr, *final_state = nullptr;
    const TensorShape seq_shape = time_major_ ? TensorShape({layout.steps, layout.batch, u})
                                              : TensorShape({layout.batch, layout.steps, u});
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, seq_shape, &seq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, h0.shape(), &final_state));
    if (layout.batch == 0) return;
    Run(ctx, *gru, layout, {x.flat<float>().data(), mask, att, h0.flat<float>().data()}, seq->flat<float>().data(),
        final_state->flat<float>().data());
  }

 private:
  struct Inputs {
    const float* x;
    const bool* mask;
    const float* att;
    const float* h0;
  };

  // The mask and the attention scores are [B, T] in x's layout.
  Status CheckPerStep(const Tensor& t, const Tensor& x, const char* what) const {
    if (t.dims() == 2 && t.dim_size(0) == x.dim_size(0) && t.dim_size(1) == x.dim_size(1)) return OkStatus();
    return errors::InvalidArgument(name(), ": ", what, " ", t.shape().DebugString(), " does not match x ",
                                   x.shape().DebugString(), " in its first two axes");
  }

  Status GetPacked(OpKernelContext* ctx, std::shared_ptr<const recopt::PackedGru>* out) {
    {
      tf_shared_lock l(mu_);
      if (packed_ != nullptr && held_.Same(ctx)) {
        *out = packed_;
        return OkStatus();
      }
    }
    const Tensor& kernel = ctx->input(2);
    const Tensor& recurrent = ctx->input(3);
    const Tensor& in_bias = ctx->input(4);
    const Tensor& rec_bias = ctx->input(5);
    const int64_t u = recurrent.dims() == 2 ? recurrent.dim_size(0) : 0;
    if (kernel.dims() != 2 || kernel.dim_size(1) != 3 * u || recurrent.dims() != 2 ||
        recurrent.dim_size(1) != 3 * u || in_bias.dims() != 1 || in_bias.dim_size(0) != 3 * u ||
        rec_bias.dims() != 1 || rec_bias.dim_size(0) != 3 * u) {
      return errors::InvalidArgument(name(), ": need kernel [d, 3u], recurrent_kernel [u, 3u] and biases [3u], got ",
                                     kernel.shape().DebugString(), ", ", recurrent.shape().DebugString(), ", ",
                                     in_bias.shape().DebugString(), " and ", rec_bias.shape().DebugString());
    }
    const recopt::GruSpec spec{kernel.flat<float>().data(), recurrent.flat<float>().data(),
                               in_bias.flat<float>().data(), rec_bias.flat<float>().data(),
                               static_cast<int>(kernel.dim_size(0)), static_cast<int>(u), reset_after_,
                               attention_};
    auto gru = std::make_shared<recopt::PackedGru>();
    const std::string err = gru->Pack(spec, recopt::SelectedIsaKernels(), weights_bf16_);
    if (!err.empty()) return errors::InvalidArgument(name(), ": ", err);
    mutex_lock l(mu_);
    packed_ = gru;
    held_.Hold(ctx, kFirstWeight, kNumWeights);
    *out = packed_;
    return OkStatus();
  }

  static void Run(OpKernelContext* ctx, const recopt::PackedGru& gru, const recopt::GruLayout& layout,
                  const Inputs& in, float* seq, float* final_state) {
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    auto work = [&](int64_t b0, int64_t b1) {
      std::unique_ptr<float[]> scratch(new float[gru.ScratchFloats(layout, b1 - b0)]);
      gru.Forward(layout, in.x, in.mask, in.att, in.h0, b0, b1, seq, final_state, scratch.get());
    };
    const int64_t cost = gru.FlopsPerStep() * std::max<int64_t>(layout.steps, 1);
    Shard(threads->num_threads, threads->workers, layout.batch, cost, work);
  }

  bool reset_after_ = true, time_major_ = false, weights_bf16_ = false;
  int num_masks_ = 0, num_attention_ = 0, attention_ = recopt::kGruAttendNone;
  mutex mu_;
  std::shared_ptr<const recopt::PackedGru> packed_ TF_GUARDED_BY(mu_);
  recopt_kernels::HeldInputs held_ TF_GUARDED_BY(mu_);
};

REGISTER_KERNEL_BUILDER(Name("Recopt>GRU").Device(DEVICE_CPU), GruOp);

}  // namespace
}  // namespace tensorflow
