#include "gru.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "activation.h"

namespace recopt {
namespace {

// Up to this many rows, a shard projects every step's input in one product:
// at batch 1 a per-step product would run one-row GEMMs T times.
constexpr int64_t kProjectAtOnceRows = 1024;

// Columns [first, first + n) of a row-major [k, cols] matrix.
std::vector<float> Columns(const float* w, int k, int cols, int first, int n) {
  std::vector<float> out(static_cast<size_t>(k) * n);
  for (int r = 0; r < k; ++r) std::copy_n(w + static_cast<size_t>(r) * cols + first, n, out.data() + r * n);
  return out;
}

// Keras' masked recurrence: a masked step keeps the state, and its output
// repeats the last unmasked output (zeros before the first one).
struct MaskedState {
  float* state;   // [rows, u]
  int64_t rows;
  int64_t u;
  float* fresh = state + rows * u;          // [rows, u] this step's cell output
  float* started = fresh + rows * u;        // [rows] 1 once an unmasked step was seen

  void Start(const float* h0) {
    std::memcpy(state, h0, rows * u * sizeof(float));
    std::fill_n(started, rows, 0.f);
  }
  template <typename MaskAt>
  void Advance(MaskAt mask_at, float* out, int64_t ldo) {
    for (int64_t b = 0; b < rows; ++b) {
      if (mask_at(b)) {
        std::memcpy(state + b * u, fresh + b * u, u * sizeof(float));
        started[b] = 1.f;
      }
      if (started[b] != 0.f) {
        std::memcpy(out + b * ldo, state + b * u, u * sizeof(float));
      } else {
        std::fill_n(out + b * ldo, u, 0.f);
      }
    }
  }
};

}  // namespace

std::string PackedGru::Pack(const GruSpec& s, const IsaKernels& kernels, bool weights_bf16) {
  if (s.input_dim <= 0 || s.units <= 0) return "GRU needs a positive input width and unit count";
  kernels_ = &kernels;
  input_dim_ = s.input_dim;
  units_ = s.units;
  reset_after_ = s.reset_after;
  if (s.attention < kGruAttendNone || s.attention > kGruAttendKeep) return "unknown GRU attention mode";
  attention_ = s.attention;
  const int u = s.units, nr = kernels.nr;
  std::vector<float> in_bias(s.input_bias, s.input_bias + 3 * u);
  std::string err;
  if (reset_after_) {
    err = recurrent_.Pack({s.recurrent_kernel, s.recurrent_bias, u, 3 * u, kActNone, 0.f}, nr, weights_bf16);
  } else {
    // Before the reset, every bias term is additive inside its gate's sum.
    for (int j = 0; j < 3 * u; ++j) in_bias[j] += s.recurrent_bias[j];
    const std::vector<float> zr = Columns(s.recurrent_kernel, u, 3 * u, 0, 2 * u);
    const std::vector<float> hh = Columns(s.recurrent_kernel, u, 3 * u, 2 * u, u);
    err = recurrent_.Pack({zr.data(), nullptr, u, 2 * u, kActNone, 0.f}, nr, weights_bf16);
    if (err.empty()) err = candidate_.Pack({hh.data(), nullptr, u, u, kActNone, 0.f}, nr, weights_bf16);
  }
  if (err.empty()) err = input_.Pack({s.kernel, in_bias.data(), s.input_dim, 3 * u, kActNone, 0.f}, nr, weights_bf16);
  return err.empty() ? "" : "GRU weights: " + err;
}

int64_t PackedGru::FlopsPerStep() const {
  return 2 * (static_cast<int64_t>(input_dim_) + units_) * 3 * units_ + 12 * units_;
}

bool PackedGru::ProjectAtOnce(const GruLayout& l, int64_t rows) const {
  // Time-major rows of a shard are only contiguous over all steps when the
  // shard is the whole batch.
  return rows * l.steps <= kProjectAtOnceRows && (!l.time_major || rows == l.batch);
}

int64_t PackedGru::ScratchFloats(const GruLayout& l, int64_t rows) const {
  const int64_t u = units_;
  const int64_t xp = (ProjectAtOnce(l, rows) ? rows * l.steps : rows) * 3 * u;
  // projections, recurrent product, z / r*h / candidate, then (masked) state, new state, started flags
  return xp + rows * 3 * u + 3 * rows * u + 2 * rows * u + rows;
}

void PackedGru::Step(const float* xp, int64_t ldx, const float* h, int64_t ldh, int64_t rows, const float* att,
                     int64_t lda, float* out, int64_t ldo, float* scratch) const {
  const int u = units_;
  const int attention = att != nullptr ? attention_ : kGruAttendNone;
  float* rec = scratch;
  kernels_->dense(recurrent_.Args(h, ldh, rows, rec, recurrent_.n));
  if (reset_after_) {
    kernels_->gru_step(
        {rows, u, kGruResetAfter, xp, ldx, rec, 3 * u, h, ldh, nullptr, nullptr, out, ldo, attention, att, lda});
    return;
  }
  float* z = rec + rows * 3 * u;
  float* rh = z + rows * u;
  float* cand = rh + rows * u;
  kernels_->gru_step({rows, u, kGruResetBeforeGates, xp, ldx, rec, 2 * u, h, ldh, z, rh, nullptr, 0});
  kernels_->dense(candidate_.Args(rh, u, rows, cand, u));
  kernels_->gru_step({rows, u, kGruResetBeforeMix, xp, ldx, cand, u, h, ldh, z, nullptr, out, ldo, attention, att, lda});
}

void PackedGru::Forward(const GruLayout& l, const float* x, const bool* mask, const float* att, const float* h0,
                        int64_t b0, int64_t b1, float* seq, float* final_state, float* scratch) const {
  const int64_t rows = b1 - b0, T = l.steps, d = input_dim_, u = units_, g = 3 * u;
  if (rows <= 0) return;
  const bool at_once = ProjectAtOnce(l, rows);
  float* xp = scratch;
  float* step_scratch = xp + (at_once ? rows * T : rows) * g;
  // Element (b, t) of x / seq / mask, and the row stride between examples of one step.
  auto row = [&](int64_t b, int64_t t) { return l.time_major ? t * l.batch + b : b * T + t; };
  const int64_t stride = l.time_major ? 1 : T;
  if (at_once && T > 0) kernels_->dense(input_.Args(x + row(b0, 0) * d, d, rows * T, xp, g));
  MaskedState masked{step_scratch + 6 * rows * u, rows, u};
  if (mask != nullptr) masked.Start(h0 + b0 * u);
  const float* h = mask != nullptr ? masked.state : h0 + b0 * u;
  int64_t ldh = u;
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = xp;
    int64_t ldx = g;
    if (at_once) {
      xt = xp + (l.time_major ? t * rows : t) * g;
      ldx = stride * g;
    } else {
      kernels_->dense(input_.Args(x + row(b0, t) * d, stride * d, rows, xp, g));
    }
    float* out = seq + row(b0, t) * u;
    const float* at = att != nullptr ? att + row(b0, t) : nullptr;
    if (mask == nullptr) {
      Step(xt, ldx, h, ldh, rows, at, stride, out, stride * u, step_scratch);
      h = out;
      ldh = stride * u;
    } else {
      Step(xt, ldx, masked.state, u, rows, at, stride, masked.fresh, u, step_scratch);
      masked.Advance([&](int64_t b) { return mask[row(b0 + b, t)]; }, out, stride * u);
    }
  }
  for (int64_t b = 0; b < rows; ++b) std::memcpy(final_state + (b0 + b) * u, h + b * ldh, u * sizeof(float));
}

}  // namespace recopt
