#include "din_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "activation.h"

namespace recopt {
namespace {

float RoundToBf16(float f) {
  const uint32_t bits = static_cast<uint32_t>(FloatToBf16(f)) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

}  // namespace

AttentionPart AttentionPartFromName(const char* name) {
  static const char* const kNames[kPartCount] = {"q", "k", "q-k", "k-q", "q*k"};
  for (int i = 0; i < kPartCount; ++i) {
    if (std::strcmp(name, kNames[i]) == 0) return static_cast<AttentionPart>(i);
  }
  return kPartCount;
}

std::string PackedDinAttention::Pack(const AttentionSpec& spec, const IsaKernels& kernels, bool weights_bf16) {
  if (spec.dim <= 0) return "the query dimension must be positive";
  if (spec.parts.empty()) return "no concatenated parts";
  if (spec.layers.empty()) return "no layers";
  const DenseLayerSpec& first = spec.layers.front();
  const int d = spec.dim, h = first.n;
  if (first.k != static_cast<int>(spec.parts.size()) * d) {
    return "layer 0: weight has " + std::to_string(first.k) + " rows but " + std::to_string(spec.parts.size()) +
           " parts of width " + std::to_string(d) + " make " + std::to_string(spec.parts.size() * d);
  }
  if (spec.layers.back().n != 1) return "the last layer must output one score, not " + std::to_string(spec.layers.back().n);
  if (h <= 0 || first.activation < 0 || first.activation >= kActCount) return "layer 0: bad shape or activation";
  kernels_ = &kernels;
  dim_ = d;
  hidden_ = h;
  hidden_pad_ = (h + kernels.nr - 1) / kernels.nr * kernels.nr;
  activation_ = first.activation;
  alpha_ = first.alpha;
  softmax_ = spec.softmax;
  pad_value_ = spec.pad_value;

  // Sum the blocks by how they depend on q and k (header comment).
  std::vector<float> key_w(static_cast<size_t>(d) * h, 0.f), prod_w(key_w.size(), 0.f), query_w(key_w.size(), 0.f);
  bool has_product = false;
  for (size_t i = 0; i < spec.parts.size(); ++i) {
    const AttentionPart part = spec.parts[i];
    if (part < 0 || part >= kPartCount) return "part " + std::to_string(i) + ": unknown";
    has_product |= part == kPartProduct;
    const float to_query = part == kPartQuery || part == kPartQueryMinusKey ? 1.f
                           : part == kPartKeyMinusQuery                      ? -1.f : 0.f;
    const float to_key = part == kPartKey || part == kPartKeyMinusQuery ? 1.f
                         : part == kPartQueryMinusKey                    ? -1.f : 0.f;
    for (size_t e = 0; e < key_w.size(); ++e) {
      float w = first.weights[i * key_w.size() + e];
      if (weights_bf16) w = RoundToBf16(w);
      query_w[e] += to_query * w;
      key_w[e] += to_key * w;
      if (part == kPartProduct) prod_w[e] += w;
    }
  }
  PackPanels(key_w.data(), d, h, hidden_pad_, kernels.nr, &key_packed_);
  if (has_product) {
    PackPanels(prod_w.data(), d, h, hidden_pad_, kernels.nr, &prod_packed_);
  } else {
    prod_packed_.clear();
  }
  query_weight_.assign(static_cast<size_t>(d) * hidden_pad_, 0.f);
  for (int kk = 0; kk < d; ++kk) std::copy_n(&query_w[static_cast<size_t>(kk) * h], h, &query_weight_[kk * hidden_pad_]);
  bias_.assign(hidden_pad_, 0.f);
  if (first.bias != nullptr) std::copy_n(first.bias, h, bias_.data());

  has_rest_ = spec.layers.size() > 1;
  if (!has_rest_) return "";
  const std::vector<DenseLayerSpec> rest(spec.layers.begin() + 1, spec.layers.end());
  if (rest.front().k != h) {
    return "layer 1: weight has " + std::to_string(rest.front().k) + " rows but layer 0 outputs " + std::to_string(h);
  }
  const std::string err = rest_.Pack(rest, kernels, weights_bf16);
  return err.empty() ? "" : "after layer 0: " + err;
}

int64_t PackedDinAttention::FlopsPerKey() const {
  return 2 * static_cast<int64_t>(dim_) * (hidden_ + 1) + (has_rest_ ? rest_.FlopsPerRow() : 0);
}

int64_t PackedDinAttention::FixedScratchFloats() const {
  // Per-example weights and bias, then one row block's hidden layer and the
  // rest of the MLP's ping-pong buffers; the scores follow.
  return static_cast<int64_t>(dim_ + 1) * hidden_pad_ + kMlpRowBlock * hidden_pad_ +
         (has_rest_ ? rest_.ScratchFloats(kMlpRowBlock) : 0);
}

int64_t PackedDinAttention::ScratchFloats(int64_t steps) const { return FixedScratchFloats() + steps; }

void PackedDinAttention::BuildQueryWeights(const float* q, float* packed, float* bias) const {
  std::copy(bias_.begin(), bias_.end(), bias);
  for (int kk = 0; kk < dim_; ++kk) {
    const float* w = &query_weight_[static_cast<size_t>(kk) * hidden_pad_];
    for (int j = 0; j < hidden_pad_; ++j) bias[j] += q[kk] * w[j];
  }
  const int nr = kernels_->nr;
  if (prod_packed_.empty()) {
    std::copy(key_packed_.begin(), key_packed_.end(), packed);
    return;
  }
  for (int p = 0; p < hidden_pad_ / nr; ++p) {
    for (int kk = 0; kk < dim_; ++kk) {
      const size_t at = (static_cast<size_t>(p) * dim_ + kk) * nr;
      for (int j = 0; j < nr; ++j) packed[at + j] = key_packed_[at + j] + q[kk] * prod_packed_[at + j];
    }
  }
}

void PackedDinAttention::Score(const float* keys, int64_t rows, const float* packed, const float* bias,
                               float* scores, float* scratch) const {
  float* hidden = has_rest_ ? scratch : scores;
  DenseArgs args{keys, dim_, rows, packed, false, bias, dim_, hidden_, hidden,
                 has_rest_ ? hidden_ : 1, activation_, alpha_};
  kernels_->dense(args);
  if (has_rest_) rest_.Forward(hidden, rows, scores, scratch + kMlpRowBlock * hidden_pad_);
}

void PackedDinAttention::Weigh(const bool* mask, int64_t steps, float* scores) const {
  for (int64_t t = 0; t < steps; ++t) {
    if (!mask[t]) scores[t] = pad_value_;
  }
  if (!softmax_ || steps == 0) return;
  const float top = *std::max_element(scores, scores + steps);
  float total = 0.f;
  for (int64_t t = 0; t < steps; ++t) {
    scores[t] = std::exp(scores[t] - top);
    total += scores[t];
  }
  for (int64_t t = 0; t < steps; ++t) scores[t] /= total;
}

void PackedDinAttention::Forward(const float* q, const float* keys, const bool* mask, int64_t steps, float* out,
                                 float* scratch, bool weights_only) const {
  float* packed = scratch;
  float* bias = packed + static_cast<int64_t>(dim_) * hidden_pad_;
  float* block = bias + hidden_pad_;
  float* scores = scratch + FixedScratchFloats();
  BuildQueryWeights(q, packed, bias);
  for (int64_t t = 0; t < steps; t += kMlpRowBlock) {
    const int64_t m = std::min(kMlpRowBlock, steps - t);
    Score(keys + t * dim_, m, packed, bias, scores + t, block);
  }
  Weigh(mask, steps, scores);
  if (weights_only) {
    std::copy_n(scores, steps, out);
    return;
  }
  std::fill(out, out + dim_, 0.f);
  for (int64_t t = 0; t < steps; ++t) {
    const float w = scores[t];
    const float* k = keys + t * dim_;
    for (int j = 0; j < dim_; ++j) out[j] += w * k[j];
  }
}

}  // namespace recopt
