#include "mha.h"

#include <algorithm>
#include <vector>

#include "activation.h"

namespace recopt {
namespace {

int64_t RoundUp(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// Rows a group's products aim for: tall enough to amortise the weight
// panels, small enough that a group's Q, K, V and context stay in L2.
constexpr int64_t kGroupRows = 128;
constexpr int64_t kMaxGroup = 64;

std::string CheckLayer(const DenseLayerSpec& s, const char* what, int k_want, int n_want) {
  if (s.weights == nullptr) return std::string(what) + ": no weights";
  if ((k_want > 0 && s.k != k_want) || s.n != n_want || s.k <= 0) {
    return std::string(what) + ": weight is [" + std::to_string(s.k) + ", " + std::to_string(s.n) + "] but [" +
           (k_want > 0 ? std::to_string(k_want) : std::string("d")) + ", " + std::to_string(n_want) + "] is needed";
  }
  if (s.activation != kActNone) return std::string(what) + ": projections take no activation";
  return "";
}

// The layers' weights side by side as one [k, sum of n] layer (one product
// for inputs that are one tensor). A missing bias is zeros.
std::string PackSideBySide(const std::vector<const DenseLayerSpec*>& parts, int nr, bool bf16, PackedLayer* out) {
  const int k = parts.front()->k;
  int n = 0;
  for (const DenseLayerSpec* p : parts) n += p->n;
  std::vector<float> w(static_cast<size_t>(k) * n), bias(n, 0.f);
  int col = 0;
  for (const DenseLayerSpec* p : parts) {
    for (int r = 0; r < k; ++r) std::copy_n(p->weights + static_cast<size_t>(r) * p->n, p->n, &w[r * n + col]);
    if (p->bias != nullptr) std::copy_n(p->bias, p->n, &bias[col]);
    col += p->n;
  }
  return out->Pack(DenseLayerSpec{w.data(), bias.data(), k, n, kActNone, 0.f}, nr, bf16);
}

// Rows [0, rows) of a head's [rows, dim] slice (row stride ld) as the packed
// right-hand side of x * slice^T: panels of nr rows, each [dim][nr].
void PackTransposed(const float* src, int64_t ld, int64_t rows, int dim, int nr, float* out) {
  for (int64_t p = 0; p < RoundUp(rows, nr) / nr; ++p) {
    for (int kk = 0; kk < dim; ++kk) {
      float* dst = out + (p * dim + kk) * nr;
      for (int j = 0; j < nr; ++j) {
        const int64_t r = p * nr + j;
        dst[j] = r < rows ? src[r * ld + kk] : 0.f;
      }
    }
  }
}

// A head's [rows, cols] slice (row stride ld) as the packed right-hand side
// of x * slice: panels of nr columns, each [rows][nr], zero padded.
void PackColumns(const float* src, int64_t ld, int64_t rows, int cols, int nr, float* out) {
  for (int p = 0; p < RoundUp(cols, nr) / nr; ++p) {
    const int width = std::min(nr, cols - p * nr);
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = out + (p * rows + r) * nr;
      std::copy_n(src + r * ld + p * nr, width, dst);
      std::fill(dst + width, dst + nr, 0.f);
    }
  }
}

}  // namespace

struct PackedMha::Views {
  const float *q, *k, *v;
  int64_t ldq, ldk, ldv;
};

std::string PackedMha::Pack(const MhaSpec& s, const IsaKernels& kernels, bool weights_bf16) {
  if (s.heads <= 0 || s.key_dim <= 0 || s.value_dim <= 0) return "heads, key_dim and value_dim must be positive";
  if (s.mask_mode != kMaskSelect && s.mask_mode != kMaskAdd) return "unknown mask mode";
  const int nh = s.heads * s.key_dim, nhv = s.heads * s.value_dim;
  for (const std::string& err : {CheckLayer(s.query, "query", 0, nh), CheckLayer(s.key, "key", 0, nh),
                                 CheckLayer(s.value, "value", 0, nhv), CheckLayer(s.output, "output", nhv, s.output.n)}) {
    if (!err.empty()) return err;
  }
  kernels_ = &kernels;
  heads_ = s.heads;
  key_dim_ = s.key_dim;
  value_dim_ = s.value_dim;
  scale_ = s.scale;
  mask_mode_ = s.mask_mode;
  mask_value_ = s.mask_value;
  zero_masked_ = s.zero_masked;
  causal_ = s.causal;
  const int nr = kernels.nr;
  std::string err;
  if (err.empty()) err = q_.Pack(s.query, nr, weights_bf16);
  if (err.empty()) err = k_.Pack(s.key, nr, weights_bf16);
  if (err.empty()) err = v_.Pack(s.value, nr, weights_bf16);
  if (err.empty()) err = o_.Pack(s.output, nr, weights_bf16);
  kv_ = PackedLayer();
  qkv_ = PackedLayer();
  if (err.empty() && s.key.k == s.value.k) err = PackSideBySide({&s.key, &s.value}, nr, weights_bf16, &kv_);
  if (err.empty() && s.query.k == s.key.k && s.key.k == s.value.k) {
    err = PackSideBySide({&s.query, &s.key, &s.value}, nr, weights_bf16, &qkv_);
  }
  return err;
}

int64_t PackedMha::GroupSize(int64_t q_steps, int64_t kv_steps) const {
  const int64_t tallest = std::max<int64_t>(1, std::max(q_steps, kv_steps));
  return std::clamp<int64_t>(kGroupRows / tallest, 1, kMaxGroup);
}

int64_t PackedMha::FlopsPerExample(int64_t t, int64_t s) const {
  const int64_t nh = heads_ * key_dim_, nhv = heads_ * value_dim_;
  return 2 * (t * q_.k * nh + s * k_.k * nh + s * v_.k * nhv + heads_ * t * s * (key_dim_ + value_dim_) +
              t * nhv * o_.n);
}

int64_t PackedMha::ScratchFloats(int64_t t, int64_t s) const {
  const int64_t g = GroupSize(t, s), nr = kernels_->nr;
  const int64_t nh = heads_ * key_dim_, nhv = heads_ * value_dim_;
  const int64_t s_pad = RoundUp(s, nr), hv_pad = RoundUp(value_dim_, nr);
  const int64_t projections = g * t * nh + g * s * (nh + nhv), context = g * t * nhv;
  const int64_t unfused = key_dim_ * s_pad + s * hv_pad + t * s + std::max(s_pad, hv_pad);
  const int64_t fused = (key_dim_ + kAttentionScratchRows) * RoundUp(s, kAttentionLanes);
  return projections + context + std::max(unfused, fused);
}

PackedMha::Views PackedMha::Project(const MhaBatch& b, int64_t first, int64_t count, float* proj) const {
  const int64_t t = b.q_steps, s = b.kv_steps, g = GroupSize(t, s);
  const int64_t nh = heads_ * key_dim_, nhv = heads_ * value_dim_;
  const float* query = b.query + first * t * q_.k;
  const float* key = b.key + first * s * k_.k;
  if (b.query == b.key && b.key == b.value && qkv_.k > 0) {
    const int64_t ld = 2 * nh + nhv;
    kernels_->dense(qkv_.Args(query, q_.k, count * t, proj, ld));
    return Views{proj, proj + nh, proj + 2 * nh, ld, ld, ld};
  }
  float* q = proj;
  float* kv = proj + g * t * nh;
  const int64_t ld = nh + nhv;
  kernels_->dense(q_.Args(query, q_.k, count * t, q, nh));
  if (b.key == b.value && kv_.k > 0) {
    kernels_->dense(kv_.Args(key, k_.k, count * s, kv, ld));
  } else {
    kernels_->dense(k_.Args(key, k_.k, count * s, kv, ld));
    kernels_->dense(v_.Args(b.value + first * s * v_.k, v_.k, count * s, kv + nh, ld));
  }
  return Views{q, kv, kv + nh, nh, ld, ld};
}

void PackedMha::Head(const MhaBatch& b, const Views& v, int64_t example, int64_t local, int head, float* ctx,
                     float* scratch) const {
  const int64_t t = b.q_steps, s = b.kv_steps, nr = kernels_->nr, nhv = heads_ * value_dim_;
  const int64_t mask_heads = b.mask_per_head ? heads_ : 1;
  const bool* mask = b.mask == nullptr ? nullptr
                                       : b.mask + ((b.mask_shared ? 0 : example) * mask_heads +
                                                   (b.mask_per_head ? head : 0)) * b.mask_rows * s;
  const SoftmaxArgs softmax{nullptr, s, t, s, scale_, mask, b.mask_rows == 1 ? 0 : s, mask_mode_, mask_value_,
                            zero_masked_, causal_};
  const float* q = v.q + local * t * v.ldq + head * key_dim_;
  const float* k = v.k + local * s * v.ldk + head * key_dim_;
  const float* values = v.v + local * s * v.ldv + head * value_dim_;
  float* out = ctx + local * t * nhv + head * value_dim_;
  if (kernels_->attention_head != nullptr &&
      kernels_->attention_head(AttentionHeadArgs{q, v.ldq, k, v.ldk, values, v.ldv, t, s, key_dim_, value_dim_,
                                                 softmax, out, nhv, scratch})) {
    return;
  }
  float* k_packed = scratch;
  float* v_packed = k_packed + key_dim_ * RoundUp(s, nr);
  float* scores = v_packed + s * RoundUp(value_dim_, nr);
  const float* zeros = scores + t * s;
  PackTransposed(k, v.ldk, s, key_dim_, nr, k_packed);
  kernels_->dense(DenseArgs{q, v.ldq, t, k_packed, false, zeros, key_dim_, static_cast<int>(s), scores, s, kActNone,
                            0.f});
  SoftmaxArgs rows = softmax;
  rows.x = scores;
  kernels_->softmax_rows(rows);
  PackColumns(values, v.ldv, s, value_dim_, nr, v_packed);
  kernels_->dense(DenseArgs{scores, s, t, v_packed, false, zeros, static_cast<int>(s), value_dim_, out, nhv,
                            kActNone, 0.f});
}

void PackedMha::Forward(const MhaBatch& b, int64_t first, int64_t last, float* scratch) const {
  const int64_t t = b.q_steps, s = b.kv_steps, g = GroupSize(t, s), nr = kernels_->nr;
  const int64_t nh = heads_ * key_dim_, nhv = heads_ * value_dim_;
  if (t == 0 || first >= last) return;
  float* ctx = scratch + g * t * nh + g * s * (nh + nhv);
  float* head = ctx + g * t * nhv;
  const int64_t zeros_at = key_dim_ * RoundUp(s, nr) + s * RoundUp(value_dim_, nr) + t * s;
  std::fill_n(head + zeros_at, std::max(RoundUp(s, nr), RoundUp(value_dim_, nr)), 0.f);
  for (int64_t e0 = first; e0 < last; e0 += g) {
    const int64_t count = std::min(g, last - e0);
    if (s == 0) {
      std::fill_n(ctx, count * t * nhv, 0.f);  // attention over nothing: TensorFlow's empty sum
    } else {
      const Views v = Project(b, e0, count, scratch);
      for (int64_t e = 0; e < count; ++e) {
        for (int n = 0; n < heads_; ++n) Head(b, v, e0 + e, e, n, ctx, head);
      }
    }
    kernels_->dense(o_.Args(ctx, nhv, count * t, b.out + e0 * t * o_.n, o_.n));
  }
}

}  // namespace recopt
