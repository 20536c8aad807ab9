// The Recopt>FusedMLP attrs, read and checked once for the CPU and GPU kernels.
#ifndef RECOPT_KERNELS_MLP_ATTRS_H_
#define RECOPT_KERNELS_MLP_ATTRS_H_

#include <vector>

#include "../core/activation.h"
#include "../core/mlp.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tensorflow {
namespace recopt_kernels {

struct MlpAttrs {
  int num_layers = 0;
  std::vector<recopt::Activation> activations;
  std::vector<float> alphas;
  bool weights_bf16 = false;
};

inline Status ReadMlpAttrs(OpKernelConstruction* ctx, MlpAttrs* a) {
  std::vector<string> names;
  TF_RETURN_IF_ERROR(ctx->GetAttr("num_layers", &a->num_layers));
  TF_RETURN_IF_ERROR(ctx->GetAttr("activations", &names));
  TF_RETURN_IF_ERROR(ctx->GetAttr("alphas", &a->alphas));
  TF_RETURN_IF_ERROR(ctx->GetAttr("weights_bf16", &a->weights_bf16));
  if (names.size() != static_cast<size_t>(a->num_layers) || a->alphas.size() != names.size()) {
    return errors::InvalidArgument(ctx->def().name(), ": activations and alphas need ", a->num_layers, " entries");
  }
  for (const string& n : names) {
    const recopt::Activation act = recopt::ActivationFromName(n.c_str());
    if (act == recopt::kActCount) return errors::InvalidArgument(ctx->def().name(), ": unknown activation '", n, "'");
    a->activations.push_back(act);
  }
  return OkStatus();
}

// The dense layers of `a.num_layers` weight inputs starting at input `first`,
// followed by as many bias inputs (the Recopt>FusedMLP input layout).
inline Status LayerSpecs(OpKernelContext* ctx, const MlpAttrs& a, int first,
                         std::vector<recopt::DenseLayerSpec>* specs) {
  specs->clear();
  for (int l = 0; l < a.num_layers; ++l) {
    const Tensor& w = ctx->input(first + l);
    const Tensor& b = ctx->input(first + a.num_layers + l);
    if (w.dims() != 2 || b.dims() != 1 || b.dim_size(0) != w.dim_size(1)) {
      return errors::InvalidArgument(ctx->op_kernel().name(), ": layer ", l, " needs weights [k, n] and bias [n], got ",
                                     w.shape().DebugString(), " and ", b.shape().DebugString());
    }
    specs->push_back({w.flat<float>().data(), b.flat<float>().data(), static_cast<int>(w.dim_size(0)),
                      static_cast<int>(w.dim_size(1)), a.activations[l], a.alphas[l]});
  }
  return OkStatus();
}

// Keeps a kernel's constant weight inputs alive after packing them: holding
// the tensors keeps their buffers, so an unchanged address and shape on a
// later call means unchanged weights and the packed copy is still valid.
class HeldInputs {
 public:
  void Hold(OpKernelContext* ctx, int first, int count) {
    first_ = first;
    held_.clear();
    for (int i = 0; i < count; ++i) held_.push_back(ctx->input(first + i));
  }
  bool Same(OpKernelContext* ctx) const {
    for (size_t i = 0; i < held_.size(); ++i) {
      const Tensor& t = ctx->input(first_ + i);
      if (t.tensor_data().data() != held_[i].tensor_data().data() || t.shape() != held_[i].shape()) return false;
    }
    return true;
  }

 private:
  int first_ = 0;
  std::vector<Tensor> held_;
};

}  // namespace recopt_kernels
}  // namespace tensorflow

#endif  // RECOPT_KERNELS_MLP_ATTRS_H_
