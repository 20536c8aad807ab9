#include "interaction.h"

#include <algorithm>

namespace recopt {

namespace {
constexpr int32_t kRowsPerChunk = 4;  // the score kernel's row group
}  // namespace

std::string PairsFromFlat(const std::vector<int64_t>& flat, int64_t num_features, InteractionPairs* pairs) {
  const int64_t limit = num_features * num_features;
  for (size_t t = 0; t < flat.size(); ++t) {
    if ((flat[t] < 0 && flat[t] != kZeroColumn) || flat[t] >= limit) {
      return "indices[" + std::to_string(t) + "] = " + std::to_string(flat[t]) + " is not in [0, " +
             std::to_string(limit) + ") or -1 (a zero column)";
    }
  }
  const int64_t chunks = (num_features + kRowsPerChunk - 1) / kRowsPerChunk;
  pairs->chunk_count.assign(chunks, 0);
  for (const int64_t v : flat) {
    if (v == kZeroColumn) continue;
    int32_t& count = pairs->chunk_count[v / num_features / kRowsPerChunk];
    count = std::max(count, static_cast<int32_t>(v % num_features + 1));
  }
  // Chunk c's [rows, count] block starts at c * kRowsPerChunk * F.
  pairs->offset.clear();
  for (const int64_t v : flat) {
    if (v == kZeroColumn) {
      pairs->offset.push_back(static_cast<int32_t>(limit));  // the scratch's trailing 0.0
      continue;
    }
    const int64_t i = v / num_features, j = v % num_features, c = i / kRowsPerChunk;
    pairs->offset.push_back(
        static_cast<int32_t>(c * kRowsPerChunk * num_features + (i - c * kRowsPerChunk) * pairs->chunk_count[c] + j));
  }
  const int stride = GramPairsStride(static_cast<int>(num_features));
  pairs->row_count.assign(num_features, 0);
  pairs->padded.clear();
  for (const int64_t v : flat) {
    if (v == kZeroColumn) {
      pairs->padded.push_back(static_cast<int>(num_features * stride));
      continue;
    }
    const int64_t i = v / num_features, j = v % num_features;
    pairs->row_count[i] = std::max(pairs->row_count[i], static_cast<int>(j + 1));
    pairs->padded.push_back(static_cast<int>(i * stride + j));
  }
  return "";
}

int64_t InteractionScratchFloats(int64_t num_features, int64_t dim) {
  if (dim <= kGramPairsMaxDim) return GramPairsScratchFloats(static_cast<int>(num_features), static_cast<int>(dim));
  return num_features * num_features + 1;
}

void DotInteraction(const IsaKernels& kernels, const float* x, int64_t b0, int64_t b1, int64_t num_features,
                    int64_t dim, const InteractionPairs& pairs, float* out, int64_t ldo, float* scratch) {
  const int64_t f = num_features, p = static_cast<int64_t>(pairs.offset.size());
  if (dim <= kGramPairsMaxDim) {
    GramPairsArgs args{nullptr, static_cast<int>(f), static_cast<int>(dim), pairs.row_count.data(),
                       pairs.padded.data(), p, nullptr, scratch};
    for (int64_t b = b0; b < b1; ++b) {
      args.x = x + b * f * dim;
      args.out = out + b * ldo;
      kernels.gram_pairs(args);
    }
    return;
  }
  float* gram = scratch;
  gram[f * f] = 0.0f;
  ScoreArgs args{};
  args.dim = static_cast<int>(dim);
  args.storage = kScoreF32;
  args.first = 0;
  args.scale = 1.0f;
  const int64_t chunks = static_cast<int64_t>(pairs.chunk_count.size());
  const int32_t* offset = pairs.offset.data();
  for (int64_t b = b0; b < b1; ++b) {
    const float* xb = x + b * f * dim;
    args.rows = xb;
    for (int64_t c = 0; c < chunks; ++c) {
      if (pairs.chunk_count[c] == 0) continue;
      args.q = xb + c * kRowsPerChunk * dim;
      args.batch = std::min<int64_t>(kRowsPerChunk, f - c * kRowsPerChunk);
      args.count = pairs.chunk_count[c];
      args.out = gram + c * kRowsPerChunk * f;
      kernels.score(args);
    }
    float* ob = out + b * ldo;
    for (int64_t t = 0; t < p; ++t) ob[t] = gram[offset[t]];
  }
}

}  // namespace recopt
