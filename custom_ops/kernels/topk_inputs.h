// Input checks and output shapes shared by the CPU and GPU kernels of
// Recopt>TopK and Recopt>ScoreTopK, so both devices give TopKV2's errors.
#ifndef RECOPT_KERNELS_TOPK_INPUTS_H_
#define RECOPT_KERNELS_TOPK_INPUTS_H_

#include <limits>
#include <string>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/tensor.h"

namespace tensorflow {
namespace recopt_kernels {

// Recopt>TopK: input [..., n], scalar k -> k, n, rows and the outputs.
struct TopKShape {
  int k = 0;
  int64_t n = 0;
  int64_t rows = 0;
  TensorShape out;
};

inline Status ParseTopK(OpKernelContext* ctx, TopKShape* s) {
  const std::string& name = ctx->op_kernel().name();
  const Tensor& k_in = ctx->input(1);
  if (!TensorShapeUtils::IsScalar(k_in.shape())) {
    return errors::InvalidArgument(name, ": k must be scalar, got shape ", k_in.shape().DebugString());
  }
  s->k = k_in.scalar<int32>()();
  if (s->k < 0) return errors::InvalidArgument(name, ": need k >= 0, got ", s->k);
  const Tensor& input = ctx->input(0);
  if (input.dims() < 1) {
    return errors::InvalidArgument(name, ": input must be >= 1-D, got shape ", input.shape().DebugString());
  }
  s->n = input.dim_size(input.dims() - 1);
  if (s->n < s->k) {
    return errors::InvalidArgument(name, ": input must have at least k columns. Had ", s->n, ", needed ", s->k);
  }
  if (s->n > std::numeric_limits<int32>::max()) {
    return errors::InvalidArgument(name, ": last dimension must be <= INT_MAX, got ", s->n);
  }
  s->out = input.shape();
  s->out.set_dim(input.dims() - 1, s->k);
  s->rows = s->n == 0 ? 0 : input.NumElements() / s->n;
  return OkStatus();
}

// TopK's two outputs (values in the input's dtype, int32 indices) of one shape.
inline Status AllocateTopKOutputs(OpKernelContext* ctx, const TensorShape& shape, Tensor** values,
                                  Tensor** indices) {
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, shape, values));
  return ctx->allocate_output(1, shape, indices);
}

// Recopt>ScoreTopK's layout attrs: candidates [n, d] ("rows"), or
// [ceil(n / 16), d, 16] with n = num_candidates ("blocks16").
struct ScoreTopKLayout {
  bool blocks = false;
  int64_t num_candidates = -1;
};

inline Status ReadScoreTopKLayout(OpKernelConstruction* ctx, ScoreTopKLayout* layout) {
  std::string name;
  TF_RETURN_IF_ERROR(ctx->GetAttr("layout", &name));
  TF_RETURN_IF_ERROR(ctx->GetAttr("num_candidates", &layout->num_candidates));
  layout->blocks = name == "blocks16";
  if (layout->blocks && layout->num_candidates < 0) {
    return errors::InvalidArgument(ctx->def().name(), ": layout 'blocks16' needs num_candidates >= 0, got ",
                                   layout->num_candidates);
  }
  return OkStatus();
}

// Candidates' n from their shape under `layout`, checked against the queries.
inline Status CandidateCount(const std::string& name, const Tensor& q, const Tensor& cand,
                             const ScoreTopKLayout& layout, int64_t* n) {
  if (!layout.blocks) {
    if (cand.dims() != 2 || cand.dim_size(1) != q.dim_size(1)) {
      return errors::InvalidArgument(name, ": candidates must be [n, ", q.dim_size(1), "] to match queries ",
                                     q.shape().DebugString(), ", got ", cand.shape().DebugString());
    }
    *n = cand.dim_size(0);
    return OkStatus();
  }
  if (cand.dims() != 3 || cand.dim_size(1) != q.dim_size(1) || cand.dim_size(2) != 16) {
    return errors::InvalidArgument(name, ": blocks16 candidates must be [blocks, ", q.dim_size(1),
                                   ", 16] to match queries ", q.shape().DebugString(), ", got ",
                                   cand.shape().DebugString());
  }
  *n = layout.num_candidates;
  if ((*n + 15) / 16 != cand.dim_size(0)) {
    return errors::InvalidArgument(name, ": num_candidates=", *n, " needs ", (*n + 15) / 16,
                                   " blocks16 blocks, candidates have ", cand.dim_size(0));
  }
  return OkStatus();
}

// Recopt>ScoreTopK: queries [B, d], candidates in `layout`, row_scales and
// bias [n] or [0], scalar k; int8 candidates need row_scales.
struct ScoreTopKShape {
  int64_t batch = 0;
  int dim = 0;
  int64_t n = 0;
  int k = 0;
  bool has_scales = false;
  bool has_bias = false;
};

inline Status ParseScoreTopK(OpKernelContext* ctx, bool int8, const ScoreTopKLayout& layout, ScoreTopKShape* s) {
  const std::string& name = ctx->op_kernel().name();
  const Tensor& q = ctx->input(0);
  const Tensor& cand = ctx->input(1);
  const Tensor& scales = ctx->input(2);
  const Tensor& bias = ctx->input(3);
  const Tensor& k_in = ctx->input(4);
  if (q.dims() != 2) return errors::InvalidArgument(name, ": queries must be [batch, dim], got ", q.shape().DebugString());
  TF_RETURN_IF_ERROR(CandidateCount(name, q, cand, layout, &s->n));
  if (s->n > std::numeric_limits<int32>::max()) {
    return errors::InvalidArgument(name, ": more than INT_MAX candidates");
  }
  for (const Tensor* t : {&scales, &bias}) {
    if (t->dims() != 1 || (t->dim_size(0) != 0 && t->dim_size(0) != s->n)) {
      return errors::InvalidArgument(name, ": ", t == &scales ? "row_scales" : "bias", " must be [", s->n,
                                     "] or [0], got ", t->shape().DebugString());
    }
  }
  if (int8 && scales.dim_size(0) != s->n) {
    return errors::InvalidArgument(name, ": int8 candidates need row_scales [", s->n, "]");
  }
  if (!TensorShapeUtils::IsScalar(k_in.shape())) {
    return errors::InvalidArgument(name, ": k must be scalar, got shape ", k_in.shape().DebugString());
  }
  s->k = k_in.scalar<int32>()();
  if (s->k < 0) return errors::InvalidArgument(name, ": need k >= 0, got ", s->k);
  if (s->k > s->n) {
    return errors::InvalidArgument(name, ": input must have at least k columns. Had ", s->n, ", needed ", s->k);
  }
  s->batch = q.dim_size(0);
  s->dim = static_cast<int>(q.dim_size(1));
  s->has_scales = scales.NumElements() > 0;
  s->has_bias = bias.NumElements() > 0;
  return OkStatus();
}

}  // namespace recopt_kernels
}  // namespace tensorflow

#endif  // RECOPT_KERNELS_TOPK_INPUTS_H_
