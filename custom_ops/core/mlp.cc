#include "mlp.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "activation.h"

namespace recopt {

uint16_t FloatToBf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

void PackPanels(const float* w, int k, int n, int n_pad, int nr, std::vector<float>* out) {
  out->assign(static_cast<size_t>(k) * n_pad, 0.f);
  for (int p = 0; p < n_pad / nr; ++p) {
    const int cols = std::min(nr, n - p * nr);
    for (int kk = 0; kk < k; ++kk) {
      std::copy_n(w + static_cast<size_t>(kk) * n + p * nr, cols, out->data() + (static_cast<size_t>(p) * k + kk) * nr);
    }
  }
}

std::string PackedLayer::Pack(const DenseLayerSpec& s, int nr, bool bf16) {
  if (s.k <= 0 || s.n <= 0) return "empty weight matrix";
  if (s.activation < 0 || s.activation >= kActCount) return "unknown activation code";
  k = s.k;
  n = s.n;
  n_pad = (s.n + nr - 1) / nr * nr;
  activation = s.activation;
  alpha = s.alpha;
  weights_bf16 = bf16;
  PackPanels(s.weights, s.k, s.n, n_pad, nr, &packed);
  bias.assign(n_pad, 0.f);
  if (s.bias != nullptr) std::copy_n(s.bias, s.n, bias.data());
  packed_bf16.clear();
  if (bf16) {
    // Word j of each k row: (column half + j) << 16 | column j, per panel.
    const int half = nr / 2;
    packed_bf16.resize(packed.size() / 2);
    for (size_t row = 0; row < packed.size() / nr; ++row) {
      const float* src = packed.data() + row * nr;
      uint32_t* dst = packed_bf16.data() + row * half;
      for (int j = 0; j < half; ++j) {
        dst[j] = (static_cast<uint32_t>(FloatToBf16(src[half + j])) << 16) | FloatToBf16(src[j]);
      }
    }
    std::vector<float>().swap(packed);
  }
  return "";
}

DenseArgs PackedLayer::Args(const float* a, int64_t lda, int64_t rows, float* c, int64_t ldc) const {
  const void* w = weights_bf16 ? static_cast<const void*>(packed_bf16.data()) : static_cast<const void*>(packed.data());
  return DenseArgs{a, lda, rows, w, weights_bf16, bias.data(), k, n, c, ldc, activation, alpha};
}

std::string PackedMlp::Pack(const std::vector<DenseLayerSpec>& layers,
                            const IsaKernels& kernels, bool weights_bf16) {
  kernels_ = &kernels;
  layers_.clear();
  max_hidden_pad_ = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const DenseLayerSpec& s = layers[l];
    if (l > 0 && s.k != layers[l - 1].n) {
      return "layer " + std::to_string(l) + ": weight has " + std::to_string(s.k) +
             " rows but the previous layer outputs " + std::to_string(layers[l - 1].n);
    }
    PackedLayer out;
    const std::string err = out.Pack(s, kernels.nr, weights_bf16);
    if (!err.empty()) return "layer " + std::to_string(l) + ": " + err;
    if (l + 1 < layers.size()) max_hidden_pad_ = std::max(max_hidden_pad_, out.n_pad);
    layers_.push_back(std::move(out));
  }
  return layers_.empty() ? "no layers" : "";
}

int64_t PackedMlp::FlopsPerRow() const {
  int64_t flops = 0;
  for (const PackedLayer& l : layers_) flops += 2 * static_cast<int64_t>(l.k) * l.n;
  return flops;
}

int64_t PackedMlp::ScratchFloats(int64_t rows) const {
  return 2 * std::min(rows, kMlpRowBlock) * static_cast<int64_t>(max_hidden_pad_);
}

void PackedMlp::RunBlock(const float* x, int64_t rows, float* y, float* scratch,
                         int64_t half) const {
  const float* in = x;
  int64_t ld_in = input_dim();
  float* bufs[2] = {scratch, scratch + half};
  for (size_t l = 0; l < layers_.size(); ++l) {
    const PackedLayer& layer = layers_[l];
    const bool last = l + 1 == layers_.size();
    float* out = last ? y : bufs[l % 2];
    const int64_t ld_out = last ? layer.n : layer.n_pad;
    kernels_->dense(layer.Args(in, ld_in, rows, out, ld_out));
    in = out;
    ld_in = ld_out;
  }
}

void PackedMlp::Forward(const float* x, int64_t rows, float* y, float* scratch) const {
  // Two ping-pong buffers, each sized for the largest block this call runs.
  const int64_t half = ScratchFloats(rows) / 2;
  for (int64_t r = 0; r < rows; r += kMlpRowBlock) {
    const int64_t m = std::min(kMlpRowBlock, rows - r);
    RunBlock(x + r * input_dim(), m, y + r * output_dim(), scratch, half);
  }
}

}  // namespace recopt
