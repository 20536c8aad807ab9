// The per-ISA kernel table (IsaKernels): every vector loop that is compiled
// once per ISA (isa_generic.cc, isa_avx2.cc, isa_avx512.cc, with the flags
// of custom_ops/isa_flags.bzl): dense layers, candidate scoring, GRU steps,
// softmax rows, embedding rows and fused attention heads.
//
// Dense layers compute C = act(A * B + bias) on a pre-packed B. B is packed once (at kernel construction, not per call), as fp32 or bf16, into column
// panels of `nr` floats: panel p holds columns [p*nr, p*nr + nr) for every k,
// contiguous, zero padded past N. The ISA is picked once at load time from
// CPUID (override with RECOPT_ISA=generic|avx2|avx512|avx512vnni to test every path).
#ifndef RECOPT_CORE_ISA_KERNELS_H_
#define RECOPT_CORE_ISA_KERNELS_H_

#include <cstdint>

namespace recopt {

struct DenseArgs {
  const float* a;       // [rows, k], row stride lda
  int64_t lda;
  int64_t rows;
  const void* packed;   // k x n_pad, panel-major (see above): float, or bf16 pairs in uint32
  bool weights_bf16;
  const float* bias;    // [n_pad], zero padded
  int k;
  int n;
  float* c;             // [rows, n], row stride ldc
  int64_t ldc;
  int activation;       // recopt::Activation
  float alpha;          // leaky_relu slope
};

// Candidate storage for scoring (RecoptScoreTopK).
enum ScoreStorage { kScoreF32 = 0, kScoreBF16 = 1, kScoreInt8 = 2 };
// kScoreRows: [n, dim] row-major. kScoreBlocks: [ceil(n / kScoreLanes), dim,
// kScoreLanes], candidate j's element e at ((j / L) * dim + e) * L + j % L,
// the last block zero-padded; chosen at optimize time for constant
// candidates so a score needs no horizontal sum (score_isa.inc).
enum ScoreLayout { kScoreRows = 0, kScoreBlocks = 1 };
constexpr int kScoreLanes = 16;

struct ScoreQueryInts;  // below

// out[b, j] = dot(q[b], rows[first + j]) * row_scales[first + j] * scale
//             + bias[first + j], for j in [0, count); null scales/bias are skipped.
struct ScoreArgs {
  const float* q;           // [batch, dim], contiguous
  int64_t batch;
  int dim;
  const void* rows;         // the candidates in `storage` and `layout`
  int storage;              // ScoreStorage
  int layout;               // ScoreLayout
  int64_t first, count;     // kScoreBlocks: first % kScoreLanes == 0
  const float* row_scales;  // [n] or nullptr (int8: the dequantisation scale)
  const float* bias;        // [n] or nullptr
  float scale;
  float* out;               // [batch, count]
  // kScoreBlocks only, both or neither: may_pass[b * ceil(count / L) + i] = 1
  // where block i's scores for query b may reach floors[b] (some score >= it,
  // or NaN), else 0, so the caller need not rescan blocks that cannot enter.
  const float* floors;      // [batch] or nullptr
  unsigned char* may_pass;  // [batch, ceil(count / kScoreLanes)] or nullptr
  // The queries as IsaKernels::prepare_queries rounded them, once for a
  // whole scan of many ranges, or nullptr (the kernel rounds them itself).
  const ScoreQueryInts* query_ints = nullptr;
  // kScoreBlocks only: out[b, j] += row_bounds[first + j] * slack[b], so the
  // scan sees upper bounds of the exact scores (core/score_exact.h).
  const float* row_bounds = nullptr;  // [n] or nullptr
  const float* slack = nullptr;       // [batch]
  // fp32 kScoreRows, batch 1 only: out[0, j] scores row row_ids[j] (first
  // unused), each exactly as the contiguous scan scores it.
  const int32_t* row_ids = nullptr;
};

// Queries rounded to int16 with a scale each, for kernels that score int8
// candidates in integers (score_vnni.inc): query b's elements 2i and 2i+1
// are the low and high halves of pairs[b * half + i].
struct ScoreQueryInts {
  static constexpr int kMaxBatch = 64;
  static constexpr int kMaxDim = 512;  // keeps every int32 sum in range: 2 * 32767 * 128 * 256 < 2^31
  int pairs[kMaxBatch * kMaxDim / 2];
  float scale[kMaxBatch];  // query b ~ its int16 values * scale[b]
  int half;                // ceil(dim / 2)
};

// One GRU time step's element-wise part for `rows` examples, after the
// matrix products. Gate order z (update), r (reset), h (candidate), as Keras.
//   kGruResetAfter: x = [xz|xr|xh] + input bias, rec = [hz|hr|hh] + recurrent
//     bias; out = z*h + (1-z)*tanh(xh + r*hh).
//   kGruResetBeforeGates: rec = [hz|hr]; writes z to `z` and r*h to `rh`.
//   kGruResetBeforeMix: rec = (r*h) Wh; out = z*h + (1-z)*tanh(xh + rec).
// With an attention score a per row (DIEN's AUGRU), z is first replaced by
//   kGruAttendUpdate: 1 - a*(1-z)  (the paper: a scales the update weight)
//   kGruAttendKeep:   (1-a)*z      (DIEN's released code, DeepCTR's AUGRU)
enum GruPhase { kGruResetAfter = 0, kGruResetBeforeGates = 1, kGruResetBeforeMix = 2 };
enum GruAttention { kGruAttendNone = 0, kGruAttendUpdate = 1, kGruAttendKeep = 2 };

struct GruStepArgs {
  int64_t rows;
  int units;
  int phase;               // GruPhase
  const float* x;          // [rows, 3u], row stride ldx
  int64_t ldx;
  const float* rec;        // [rows, 3u | 2u | u], row stride ldr
  int64_t ldr;
  const float* h;          // previous state [rows, u], row stride ldh
  int64_t ldh;
  float* z;                // [rows, u] contiguous, reset-before only
  float* rh;               // [rows, u] contiguous, reset-before only
  float* out;              // new state [rows, u], row stride ldo
  int64_t ldo;
  int attention = kGruAttendNone;  // GruAttention
  const float* att = nullptr;      // [rows] scores, row stride lda
  int64_t lda = 0;
};

// Attention weights in place, row by row: x = x * scale, masked as the model
// wrote it, then softmax along the row. A row of the mask applies to a row
// of x; mask_ld = 0 repeats mask row 0 for every row (a [B, 1, S] mask).
//   kMaskSelect: a masked-out score becomes mask_value (Keras 3: where()).
//   kMaskAdd:    a masked-out score gets mask_value added (tf_keras' adder).
// zero_masked: Keras 3's explicit-scores path also zeroes masked weights.
enum MaskMode { kMaskSelect = 0, kMaskAdd = 1 };

struct SoftmaxArgs {
  float* x;               // [rows, cols], row stride ld
  int64_t ld;
  int64_t rows;
  int64_t cols;
  float scale;
  const bool* mask;       // [rows, cols] row stride mask_ld, or nullptr
  int64_t mask_ld;
  int mask_mode;          // MaskMode
  float mask_value;
  bool zero_masked;       // masked-out weights are 0 after the softmax too (a fully masked row sums to 0)
  bool causal = false;    // also masked where column > row: band_part(ones, -1, 0), Keras' causal mask
};

// One attention head, fused: out = softmax(mask(scale * q k^T)) v, with
// the scale, mask and causal flag of `softmax` (its x, ld and rows unused;
// mask row r belongs to query row r). A tile of query rows keeps its scores
// in registers from the product through the softmax, so no [t, s] score
// matrix is written and reread, and v is read in place, unpacked.
struct AttentionHeadArgs {
  const float* q;         // [t, key_dim], row stride ldq
  int64_t ldq;
  const float* k;         // [s, key_dim], row stride ldk
  int64_t ldk;
  const float* v;         // [s, value_dim], row stride ldv
  int64_t ldv;
  int64_t t, s;
  int key_dim, value_dim;
  SoftmaxArgs softmax;
  float* out;             // [t, value_dim], row stride ldo
  int64_t ldo;
  float* scratch;         // kAttentionScratchRows + key_dim rows of s rounded up to kAttentionLanes
};
constexpr int kAttentionLanes = 16;
constexpr int kAttentionScratchRows = 4;

// AFM's attention pooling (Xiao et al. 2017) over one example's field
// pairs t = (rows[t], cols[t]), t < pairs:
//   e_t = x[rows[t]] * x[cols[t]]                      (element-wise, [dim])
//   s_t = h . act(e_t W + bias),  a = softmax(s),  out = sum_t a_t e_t.
// Pairs are scored a vector's width at a time with the pairs in the vector
// lanes, so no score needs a horizontal sum; units must be a multiple of
// kPairUnitBlock (pad W's columns, bias and h with zeros).
struct PairAttentionArgs {
  const float* x;         // [num_features, dim], one example
  const int* rows;        // [pairs], each in [0, num_features)
  const int* cols;        // [pairs]
  int64_t pairs;
  int dim, units;
  const float* w;         // [dim, units] row-major
  const float* bias;      // [units]
  const float* h;         // [units]
  int activation;         // recopt::Activation
  float alpha;
  float* out;             // [dim]
  float* scratch;         // PairAttentionScratchFloats(pairs, dim)
};
constexpr int kPairUnitBlock = 8;
constexpr int kPairMaxLanes = 16;
inline int64_t PairAttentionScratchFloats(int64_t pairs, int dim) {
  return (pairs + kPairMaxLanes - 1) / kPairMaxLanes * kPairMaxLanes * (dim + 1);
}

// FiBiNET's bilinear interaction (Huang et al. 2019) for a block of
// examples: out[e, t] = (x[e, rows[t]] W_g + bias_g) * x[e, cols[t]], with
// g = weight_of[t] (one W per pair, per field or shared, as the model
// wrote it). Pair-major, so each W_g is read once per block, not per example.
struct BilinearArgs {
  const float* x;         // [examples, num_features, dim]
  int64_t examples;
  int num_features, dim;
  const int* rows;        // [pairs], fields
  const int* cols;        // [pairs], fields
  const int* weight_of;   // [pairs], in [0, groups)
  int64_t pairs;
  const float* w;         // [groups, dim, dim]
  const float* bias;      // [groups, dim]
  float* out;             // [examples, pairs, dim]
};

// Selected entries of one example's Gram matrix x x^T for narrow fields
// (dim <= kGramPairsMaxDim): x is transposed into scratch so a row of the
// Gram matrix is dim broadcast FMAs per vector of columns, with no
// horizontal sums; row i is computed for columns [0, row_count[i]) only.
struct GramPairsArgs {
  const float* x;         // [num_features, dim], one example
  int num_features, dim;
  const int* row_count;   // [num_features]
  const int* padded;      // [pairs]: i * GramPairsStride(F) + j, or F * stride (a zero column)
  int64_t pairs;
  float* out;             // [pairs]
  float* scratch;         // GramPairsScratchFloats(F, dim)
};
constexpr int kGramPairsMaxDim = 16;
inline int GramPairsStride(int num_features) { return (num_features + kPairMaxLanes - 1) / kPairMaxLanes * kPairMaxLanes; }
inline int64_t GramPairsScratchFloats(int num_features, int dim) {
  return static_cast<int64_t>(GramPairsStride(num_features)) * (dim + num_features) + 1;
}

// TopKV2's sorted top k of one float row of n <= kShortTopKMaxCols with
// no NaN (the caller checks): element c goes to rank #{j : x[j] > x[c], or
// x[j] == x[c] and j < c}, counted for a vector of c at once, so no branch
// depends on the data.
constexpr int kShortTopKMaxCols = 64;

struct EmbeddingTableView;  // embedding.h
struct EmbeddingBag;

struct IsaKernels {
  const char* isa;
  int nr;  // panel width in floats
  void (*dense)(const DenseArgs& args);
  void (*score)(const ScoreArgs& args);
  void (*gru_step)(const GruStepArgs& args);
  void (*softmax_rows)(const SoftmaxArgs& args);
  // EmbeddingBagRows (embedding.h).
  void (*embedding_rows)(const EmbeddingTableView& table, const EmbeddingBag& bag, int64_t r0, int64_t r1);
  // Fills `out` for score() calls over many ranges with the same args.q;
  // false (or a null hook) when score() does not use it for these args.
  bool (*prepare_queries)(const ScoreArgs& args, ScoreQueryInts* out);
  // false, having done nothing, where s is too long for the registers: the
  // caller then runs dense + softmax_rows + dense.
  bool (*attention_head)(const AttentionHeadArgs& args);
  void (*pair_attention)(const PairAttentionArgs& args);
  void (*bilinear)(const BilinearArgs& args);
  void (*gram_pairs)(const GramPairsArgs& args);
  void (*short_topk_row)(const float* x, int n, int k, float* values, int* indices);
  // core/fm.h FactorizationMachine for `rows` examples of x [rows, fields, k].
  void (*factorization_machine)(const float* x, int64_t rows, int64_t fields, int64_t k, bool reduce, float scale,
                                float* out);
};

namespace generic { const IsaKernels& Kernels(); }
namespace avx2 { const IsaKernels& Kernels(); }
namespace avx512 {
const IsaKernels& Kernels();
// The avx512 kernels with int8 blocks16 scoring on AVX512-VNNI (score_vnni.inc).
const IsaKernels& VnniKernels();
}  // namespace avx512

// The best kernels this CPU supports, chosen on first use.
const IsaKernels& SelectedIsaKernels();
// Kernels for a named ISA, or nullptr when the CPU or the build lacks it.
const IsaKernels* IsaKernelsFor(const char* isa);

}  // namespace recopt

#endif  // RECOPT_CORE_ISA_KERNELS_H_
