// The Recopt>FusedMLP attrs, read and checked once for the CPU and GPU kernels.
#ifndef RECOPT_KERNELS_MLP_ATTRS_H_
#define RECOPT_KERNELS_MLP_ATTRS_H_

#include <vector>

#include "../core/activation.h"
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

}  // namespace recopt_kernels
}  // namespace tensorflow

#endif  // RECOPT_KERNELS_MLP_ATTRS_H_
