#include "afm.h"

namespace recopt {

std::string PackAfmWeights(const float* w, const float* bias, const float* h, int dim, int units,
                           Activation activation, float alpha, AfmWeights* out) {
  if (dim <= 0 || units <= 0) {
    return "the attention weight must be [dim, units] with both > 0, got [" + std::to_string(dim) + ", " +
           std::to_string(units) + "]";
  }
  if (activation == kActCount) return "unknown activation";
  const int padded = (units + kPairUnitBlock - 1) / kPairUnitBlock * kPairUnitBlock;
  out->dim = dim;
  out->units = padded;
  out->activation = activation;
  out->alpha = alpha;
  out->w.assign(static_cast<size_t>(dim) * padded, 0.f);
  out->bias.assign(padded, 0.f);
  out->h.assign(padded, 0.f);
  for (int i = 0; i < dim; ++i) {
    for (int j = 0; j < units; ++j) out->w[static_cast<size_t>(i) * padded + j] = w[static_cast<size_t>(i) * units + j];
  }
  for (int j = 0; j < units; ++j) {
    out->bias[j] = bias[j];
    out->h[j] = h[j];
  }
  return "";
}

std::string AfmPairs(const std::vector<int64_t>& rows, const std::vector<int64_t>& cols, int64_t num_features,
                     std::vector<int>* rows32, std::vector<int>* cols32) {
  if (rows.size() != cols.size()) {
    return "rows and cols must have one entry per pair, got " + std::to_string(rows.size()) + " and " +
           std::to_string(cols.size());
  }
  rows32->clear();
  cols32->clear();
  for (size_t t = 0; t < rows.size(); ++t) {
    for (const auto& [name, v] : {std::pair<const char*, int64_t>{"rows", rows[t]}, {"cols", cols[t]}}) {
      if (v < 0 || v >= num_features) {
        return std::string(name) + "[" + std::to_string(t) + "] = " + std::to_string(v) + " is not a field in [0, " +
               std::to_string(num_features) + ")";
      }
    }
    rows32->push_back(static_cast<int>(rows[t]));
    cols32->push_back(static_cast<int>(cols[t]));
  }
  return "";
}

void AfmPooling(const IsaKernels& kernels, const float* x, int64_t b0, int64_t b1, int64_t num_features,
                const std::vector<int>& rows, const std::vector<int>& cols, const AfmWeights& weights, float* out,
                float* scratch) {
  PairAttentionArgs args{};
  args.rows = rows.data();
  args.cols = cols.data();
  args.pairs = static_cast<int64_t>(rows.size());
  args.dim = weights.dim;
  args.units = weights.units;
  args.w = weights.w.data();
  args.bias = weights.bias.data();
  args.h = weights.h.data();
  args.activation = weights.activation;
  args.alpha = weights.alpha;
  args.scratch = scratch;
  for (int64_t b = b0; b < b1; ++b) {
    args.x = x + b * num_features * weights.dim;
    args.out = out + b * weights.dim;
    kernels.pair_attention(args);
  }
}

}  // namespace recopt
