// Thin OpKernel over core/mlp and core/onednn_mlp: validates inputs, packs
// the weights once for the backend that runs them, and shards row blocks
// over the intra-op pool (inline when it has one thread).
#include <atomic>
#include <memory>
#include <vector>

#include "../core/activation.h"
#include "../core/mlp.h"
#ifdef RECOPT_HAVE_ONEDNN
#include "../core/onednn_mlp.h"
#endif
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/mutex.h"
#include "tensorflow/core/util/work_sharder.h"
#include "mlp_attrs.h"

namespace tensorflow {
namespace {

class FusedMlpOp : public OpKernel {
 public:
  explicit FusedMlpOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, recopt_kernels::ReadMlpAttrs(ctx, &attrs_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("gemm", &gemm_));
    OP_REQUIRES(ctx, gemm_ == "auto" || gemm_ == "onednn" || gemm_ == "packed",
                errors::InvalidArgument(name(), ": gemm must be auto, onednn or packed, got '", gemm_, "'"));
    std::vector<int32> int8_layers;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("int8_layers", &int8_layers));
    int8_.assign(attrs_.num_layers, false);
    for (int32 l : int8_layers) {
      OP_REQUIRES(ctx, l >= 0 && l < attrs_.num_layers && !int8_[l],
                  errors::InvalidArgument(name(), ": int8_layers holds ", l, ", which is not a distinct layer index below ",
                                          attrs_.num_layers));
      int8_[l] = true;
    }
    OP_REQUIRES(ctx, int8_layers.empty() || !attrs_.weights_bf16,
                errors::InvalidArgument(name(), ": int8_layers and weights_bf16 do not mix in one FusedMLP"));
  }


  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    OP_REQUIRES(ctx, x.dims() >= 2,
                errors::InvalidArgument(name(), ": x must have rank >= 2, got ",
                                        x.shape().DebugString()));
    Backends mlp;
    OP_REQUIRES_OK(ctx, GetPacked(ctx, &mlp));
    const int64_t k = x.dim_size(x.dims() - 1);
    // Weights are inputs 1..num_layers (num_layers >= 1), checked 2-D by GetPacked.
    const int64_t first = ctx->input(1).dim_size(0);
    const int64_t last = ctx->input(attrs_.num_layers).dim_size(1);
    OP_REQUIRES(ctx, k == first,
                errors::InvalidArgument(name(), ": x has last dimension ", k,
                                        " but the first weight has ", first, " rows"));
    TensorShape out_shape = x.shape();
    out_shape.set_dim(x.dims() - 1, last);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, out_shape, &y));
    const int64_t rows = k == 0 ? 0 : x.NumElements() / k;
    if (rows == 0) return;
    const float* xd = x.flat<float>().data();
    float* yd = y->flat<float>().data();
#ifdef RECOPT_HAVE_ONEDNN
    const int threads = ctx->device()->tensorflow_cpu_worker_threads()->num_threads;
    // gemm="auto": oneDNN from the row count per thread where it measured
    // faster than the hand kernels (OnednnMlp::AutoMinRows); any row count
    // for a stack with int8 layers, which only oneDNN runs in int8. Divided,
    // not multiplied: "never" is 2^62 rows, and times the threads it wrapped
    // negative, sending bf16 without AMX to oneDNN's slow kernels.
    if (mlp.onednn != nullptr &&
        (gemm_ == "onednn" || mlp.onednn->Int8Layers() > 0 || rows / threads >= mlp.onednn->AutoMinRows())) {
      std::atomic<bool> refused{false};
      RunShards(ctx, mlp.onednn->FlopsPerRow(), rows, [&](int64_t r0, int64_t r1) {
        if (!mlp.onednn->Forward(xd + r0 * k, r1 - r0, yd + r0 * last)) refused = true;
      });
      // Refused (a NaN or Inf in x, or a row count without a primitive):
      // the hand kernels rerun the call.
      if (!refused) return;
    }
#endif
    if (mlp.packed == nullptr) OP_REQUIRES_OK(ctx, PackHand(ctx, &mlp));
    const recopt::PackedMlp& packed = *mlp.packed;
    RunShards(ctx, packed.FlopsPerRow(), rows, [&](int64_t r0, int64_t r1) {
      // Per-call activations, freed when the call ends (weights are shared).
      std::unique_ptr<float[]> scratch(new float[packed.ScratchFloats(r1 - r0)]);
      packed.Forward(xd + r0 * k, r1 - r0, yd + r0 * last, scratch.get());
    });
  }

 private:
  // The packed weights of each backend this kernel has used. PackedMlp is
  // packed on first need only: where oneDNN runs every call, the hand
  // kernels' copy of the weights is never made.
  struct Backends {
    std::shared_ptr<const recopt::PackedMlp> packed;
#ifdef RECOPT_HAVE_ONEDNN
    std::shared_ptr<const recopt::OnednnMlp> onednn;
#endif
  };

  // Packs on the first call and whenever a weight buffer changes: oneDNN
  // unless gemm="packed", the hand kernels where oneDNN cannot run.
  Status GetPacked(OpKernelContext* ctx, Backends* out) {
    {
      tf_shared_lock l(mu_);
      if (packed_ready_ && held_.Same(ctx)) {
        *out = backends_;
        return OkStatus();
      }
    }
    Backends made;
    std::string onednn_err = "the op library was built without oneDNN's headers";
#ifdef RECOPT_HAVE_ONEDNN
    if (gemm_ != "packed") {
      std::vector<recopt::DenseLayerSpec> specs;
      TF_RETURN_IF_ERROR(recopt_kernels::LayerSpecs(ctx, attrs_, 1, &specs));
      auto onednn = std::make_shared<recopt::OnednnMlp>();
      onednn_err = onednn->Pack(specs, attrs_.weights_bf16, int8_);
      if (onednn_err.empty()) made.onednn = onednn;
    }
#endif
    if (gemm_ == "onednn" && !onednn_err.empty()) {
      return errors::Unavailable(name(), ": gemm=onednn but ", onednn_err);
    }
    if (!onednn_err.empty()) TF_RETURN_IF_ERROR(PackHand(ctx, &made));
    mutex_lock l(mu_);
    backends_ = made;
    packed_ready_ = true;
    held_.Hold(ctx, 1, 2 * attrs_.num_layers);
    *out = backends_;
    return OkStatus();
  }

  // Adds the hand kernels' packing to `mlp`, and to the kept backends when
  // they still belong to these weights.
  Status PackHand(OpKernelContext* ctx, Backends* mlp) {
    std::vector<recopt::DenseLayerSpec> specs;
    TF_RETURN_IF_ERROR(recopt_kernels::LayerSpecs(ctx, attrs_, 1, &specs));
    auto packed = std::make_shared<recopt::PackedMlp>();
    const std::string err = packed->Pack(specs, recopt::SelectedIsaKernels(), attrs_.weights_bf16);
    if (!err.empty()) return errors::InvalidArgument(name(), ": ", err);
    mlp->packed = packed;
    mutex_lock l(mu_);
    if (packed_ready_ && held_.Same(ctx) && backends_.packed == nullptr) backends_.packed = packed;
    return OkStatus();
  }

  // fn(r0, r1) over the rows, in shards of whole kShardRows units.
  template <typename Fn>
  static void RunShards(OpKernelContext* ctx, int64_t flops_per_row, int64_t rows, const Fn& fn) {
    auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    // Rows only: splitting a small batch's columns over the pool was measured
    // slower (batch 1, 4.7 MB of weights: 110 us inline vs ~200 us on 2
    // threads; the per-layer barriers cost more than the shared bandwidth gives).
    // Shards are whole units of kShardRows, finer than PackedMlp's 48-row
    // blocks: in 48-row units, 512 rows split 288 / 224 over two threads.
    constexpr int64_t kShardRows = 16;
    const int64_t units = (rows + kShardRows - 1) / kShardRows;
    Shard(threads->num_threads, threads->workers, units, flops_per_row * kShardRows,
          [&](int64_t u0, int64_t u1) { fn(u0 * kShardRows, std::min(rows, u1 * kShardRows)); });
  }

  recopt_kernels::MlpAttrs attrs_;
  std::string gemm_;
  std::vector<bool> int8_;  // per layer, from int8_layers
  mutex mu_;
  bool packed_ready_ TF_GUARDED_BY(mu_) = false;
  Backends backends_ TF_GUARDED_BY(mu_);
  recopt_kernels::HeldInputs held_ TF_GUARDED_BY(mu_);
};

REGISTER_KERNEL_BUILDER(Name("Recopt>FusedMLP").Device(DEVICE_CPU), FusedMlpOp);

}  // namespace
}  // namespace tensorflow
