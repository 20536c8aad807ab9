#include "bilinear.h"

#include <algorithm>

namespace recopt {

namespace {
// Examples per kernel call: their fields (32 x 26 x 8 floats) stay in L1
// while every pair's W streams past them once.
constexpr int64_t kBlockExamples = 32;

std::string OutOfRange(const char* name, size_t t, int64_t v, int64_t limit) {
  return std::string(name) + "[" + std::to_string(t) + "] = " + std::to_string(v) + " is not in [0, " +
         std::to_string(limit) + ")";
}
}  // namespace

std::string MakeBilinearPairs(const std::vector<int64_t>& rows, const std::vector<int64_t>& cols,
                              const std::vector<int64_t>& weight_index, int64_t num_features, int64_t groups,
                              BilinearPairs* pairs) {
  if (rows.size() != cols.size() || rows.size() != weight_index.size()) {
    return "rows, cols and weight_index must have one entry per pair, got " + std::to_string(rows.size()) + ", " +
           std::to_string(cols.size()) + " and " + std::to_string(weight_index.size());
  }
  pairs->rows.clear();
  pairs->cols.clear();
  pairs->weight_of.clear();
  for (size_t t = 0; t < rows.size(); ++t) {
    if (rows[t] < 0 || rows[t] >= num_features) return OutOfRange("rows", t, rows[t], num_features);
    if (cols[t] < 0 || cols[t] >= num_features) return OutOfRange("cols", t, cols[t], num_features);
    if (weight_index[t] < 0 || weight_index[t] >= groups) return OutOfRange("weight_index", t, weight_index[t], groups);
    pairs->rows.push_back(static_cast<int>(rows[t]));
    pairs->cols.push_back(static_cast<int>(cols[t]));
    pairs->weight_of.push_back(static_cast<int>(weight_index[t]));
  }
  return "";
}

void BilinearInteraction(const IsaKernels& kernels, const float* x, int64_t b0, int64_t b1, int64_t num_features,
                         int64_t dim, const BilinearPairs& pairs, const float* w, const float* bias, float* out) {
  BilinearArgs args{};
  args.num_features = static_cast<int>(num_features);
  args.dim = static_cast<int>(dim);
  args.rows = pairs.rows.data();
  args.cols = pairs.cols.data();
  args.weight_of = pairs.weight_of.data();
  args.pairs = static_cast<int64_t>(pairs.rows.size());
  args.w = w;
  args.bias = bias;
  for (int64_t b = b0; b < b1; b += kBlockExamples) {
    args.examples = std::min(kBlockExamples, b1 - b);
    args.x = x + b * num_features * dim;
    args.out = out + b * args.pairs * dim;
    kernels.bilinear(args);
  }
}

}  // namespace recopt
