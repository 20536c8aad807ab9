// RecoptScoreTopK on GPU: one kernel scores a stretch of candidates for up
// to 8 queries and keeps only the scores at or above each query's
// threshold, so the [batch, n] score matrix never reaches memory.
//
// Why not cuBLAS + a separate TopK: at batch <= 64 the scoring is bound by
// reading the candidates (2*batch flops per candidate byte), and a GEMM
// would write n*batch scores that the TopK then reads back. The seed's
// cublasLt route fused only the output transform into its TopK; here the
// filter is the GEMM's epilogue.
//
// Layout: rows stay row-major as the SavedModel stores them (no transform
// at optimize time, so the same model runs on CPU and GPU). Eight lanes
// share a row and each loads 16 bytes per step: a warp reads four whole
// rows per load when a row is 128 bytes (d = 64 in fp16/bf16).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "select.cuh"

namespace recopt {
namespace gpu {
namespace {

constexpr int kScoreThreads = 256;
constexpr int kLanesPerRow = 8;
enum ScoreMode : int { kScoreSample = 0, kScoreFilter = 1, kScoreAll = 2 };

struct ScoreParams {
  ScoreTopKArgs a;
  int64_t b0 = 0;  // this launch's queries: [b0, b0 + nq)
  int nq = 0;
  int mode = kScoreFilter;
  int64_t rows = 0;  // rows scored: f.s (sample) or a.n
  FilterBuffers f;
  float* full = nullptr;  // kScoreAll: [nq, n]
};

template <typename Tc>
struct Widen;

template <>
struct Widen<float> {
  static constexpr int kPerVec = 4;
  __device__ static float One(float x) { return x; }
  __device__ static void Vec(uint4 raw, float* out) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
  }
};

template <>
struct Widen<__half> {
  static constexpr int kPerVec = 8;
  __device__ static float One(__half x) { return __half2float(x); }
  __device__ static void Vec(uint4 raw, float* out) {
    const __half2* h = reinterpret_cast<const __half2*>(&raw);
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(h[i]);
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  }
};

template <>
struct Widen<__nv_bfloat16> {
  static constexpr int kPerVec = 8;
  __device__ static float One(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static void Vec(uint4 raw, float* out) {
    const uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __uint_as_float(w[i] << 16);
      out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};

template <>
struct Widen<int8_t> {
  static constexpr int kPerVec = 16;
  __device__ static float One(int8_t x) { return static_cast<float>(x); }
  __device__ static void Vec(uint4 raw, float* out) {
    const int8_t* b = reinterpret_cast<const int8_t*>(&raw);
    for (int i = 0; i < 16; ++i) out[i] = static_cast<float>(b[i]);
  }
};

// This lane's partial dot products of one row with the block's queries.
template <typename Tc, int QB, bool kVec>
__device__ inline void PartialDots(const Tc* row, const float* q, int dim, int lane, float* acc) {
  if (kVec) {
    constexpr int V = Widen<Tc>::kPerVec;
    for (int e0 = lane * V; e0 < dim; e0 += kLanesPerRow * V) {
      float c[V];
      Widen<Tc>::Vec(__ldg(reinterpret_cast<const uint4*>(row + e0)), c);
#pragma unroll
      for (int b = 0; b < QB; ++b) {
#pragma unroll
        for (int v = 0; v < V; ++v) acc[b] += c[v] * q[b * dim + e0 + v];
      }
    }
  } else {
    for (int e = lane; e < dim; e += kLanesPerRow) {
      const float c = Widen<Tc>::One(row[e]);
#pragma unroll
      for (int b = 0; b < QB; ++b) acc[b] += c * q[b * dim + e];
    }
  }
}

__device__ inline void Emit(const ScoreParams& p, int b, int64_t r, int64_t j, float dot) {
  const ScoreTopKArgs& a = p.a;
  if (a.row_scales) dot *= a.row_scales[j];
  dot *= a.scale;
  if (a.bias) dot += a.bias[j];
  const int64_t query = p.b0 + b;
  if (p.mode == kScoreAll) {
    p.full[b * a.n + j] = dot;
    return;
  }
  const uint64_t key = MakeKey(dot, static_cast<uint32_t>(j));
  const FilterBuffers& f = p.f;
  if (p.mode == kScoreSample) {
    f.samples[query * f.s + r] = key;
    return;
  }
  const int32_t rank = f.ranks[query];
  if (rank == 0 || key > f.samples[query * f.s + rank - 1]) return;
  const int32_t pos = atomicAdd(&f.counts[query], 1);
  if (pos < f.cap) f.survivors[query * f.cap + pos] = key;
}

template <typename Tc, int QB, bool kVec>
__global__ void ScoreKernel(ScoreParams p) {
  extern __shared__ float q[];  // [QB, dim]
  const int dim = p.a.dim;
  for (int i = threadIdx.x; i < QB * dim; i += blockDim.x) {
    const int b = i / dim;
    q[i] = b < p.nq ? p.a.queries[(p.b0 + b) * dim + (i - b * dim)] : 0.f;
  }
  __syncthreads();
  const int lane = threadIdx.x % kLanesPerRow;
  const int group = threadIdx.x / kLanesPerRow;
  const int64_t groups_per_grid = static_cast<int64_t>(gridDim.x) * (blockDim.x / kLanesPerRow);
  const Tc* cand = static_cast<const Tc*>(p.a.candidates);
  // The four groups of a warp step together so their shuffles stay uniform.
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kLanesPerRow) + (group & ~3);
       base < p.rows; base += groups_per_grid) {
    const int64_t r = base + (group & 3);
    const bool valid = r < p.rows;
    const int64_t j = !valid ? 0 : (p.mode == kScoreSample ? SamplePos(r, p.a.n, p.f.s) : r);
    float acc[QB];
#pragma unroll
    for (int b = 0; b < QB; ++b) acc[b] = 0.f;
    if (valid) PartialDots<Tc, QB, kVec>(cand + j * dim, q, dim, lane, acc);
#pragma unroll
    for (int b = 0; b < QB; ++b) {
      for (int o = kLanesPerRow / 2; o > 0; o >>= 1) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], o);
    }
    if (!valid) continue;
    // Lane b of the group finishes query b (QB <= kLanesPerRow).
#pragma unroll
    for (int b = 0; b < QB; ++b) {
      if (b == lane && b < p.nq) Emit(p, b, r, j, acc[b]);
    }
  }
}

template <typename Tc, int QB>
std::string LaunchQB(const ScoreParams& p, cudaStream_t stream) {
  const bool vec = (p.a.dim * sizeof(Tc)) % 16 == 0 && (reinterpret_cast<uintptr_t>(p.a.candidates) & 15) == 0;
  const int64_t groups = kScoreThreads / kLanesPerRow;
  int64_t blocks = (p.rows + groups - 1) / groups;
  blocks = blocks < 8192 ? (blocks > 0 ? blocks : 1) : 8192;
  const size_t shared = static_cast<size_t>(QB) * p.a.dim * sizeof(float);
  if (vec) {
    ScoreKernel<Tc, QB, true><<<static_cast<unsigned>(blocks), kScoreThreads, shared, stream>>>(p);
  } else {
    ScoreKernel<Tc, QB, false><<<static_cast<unsigned>(blocks), kScoreThreads, shared, stream>>>(p);
  }
  return CudaError("scoring candidates");
}

template <typename Tc>
std::string LaunchTyped(const ScoreParams& p, cudaStream_t stream) {
  return p.nq == 1 ? LaunchQB<Tc, 1>(p, stream) : LaunchQB<Tc, kLanesPerRow>(p, stream);
}

std::string Launch(const ScoreParams& p, cudaStream_t stream) {
  switch (p.a.storage) {
    case kStoreF16: return LaunchTyped<__half>(p, stream);
    case kStoreBF16: return LaunchTyped<__nv_bfloat16>(p, stream);
    case kStoreI8: return LaunchTyped<int8_t>(p, stream);
    default: return LaunchTyped<float>(p, stream);
  }
}

// Scores every query in chunks of 8 in the given mode.
std::string ScoreChunks(ScoreParams p, int mode, int64_t rows, cudaStream_t stream) {
  p.mode = mode;
  p.rows = rows;
  for (int64_t b0 = 0; b0 < p.a.batch; b0 += kLanesPerRow) {
    p.b0 = b0;
    p.nq = static_cast<int>(p.a.batch - b0 < kLanesPerRow ? p.a.batch - b0 : kLanesPerRow);
    const std::string err = Launch(p, stream);
    if (!err.empty()) return err;
  }
  return "";
}

std::string CheckArgs(const ScoreTopKArgs& a) {
  if (a.k < 0 || a.k > a.n) return "k must be in [0, n]: k=" + std::to_string(a.k) + ", n=" + std::to_string(a.n);
  if (a.k > kMaxK) return "k=" + std::to_string(a.k) + " is above the GPU limit " + std::to_string(kMaxK);
  if (a.n > 0x7fffffff) return "more than INT_MAX candidates: n=" + std::to_string(a.n);
  if (a.dim < 0 || a.dim > kMaxScoreDim) {
    return "dim=" + std::to_string(a.dim) + " is outside the GPU limit [0, " + std::to_string(kMaxScoreDim) + "]";
  }
  if (a.storage == kStoreI8 && a.row_scales == nullptr) return "int8 candidates need row_scales";
  if (a.storage < kStoreF32 || a.storage > kStoreI8) return "unknown candidate storage " + std::to_string(a.storage);
  return "";
}

}  // namespace

size_t ScoreTopKWorkspaceBytes(int64_t batch, int64_t n, int k) {
  return FilterBytes(batch, n, k) + Align256(static_cast<size_t>(n) * sizeof(float));
}

std::string ScoreTopK(const ScoreTopKArgs& args, float* values, int32_t* indices, void* workspace,
                      size_t workspace_bytes, void* stream_ptr) {
  std::string err = CheckArgs(args);
  if (!err.empty() || args.batch == 0 || args.k == 0) return err;
  if (workspace_bytes < ScoreTopKWorkspaceBytes(args.batch, args.n, args.k)) return "workspace too small";
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  ScoreParams p;
  p.a = args;
  p.f = CarveFilter(workspace, args.batch, args.n, args.k);
  p.full = reinterpret_cast<float*>(static_cast<char*>(workspace) + FilterBytes(args.batch, args.n, args.k));
  auto sample = [&]() { return ScoreChunks(p, kScoreSample, p.f.s, stream); };
  auto filter = [&]() { return ScoreChunks(p, kScoreFilter, args.n, stream); };
  std::vector<int32_t> modes;
  if (!(err = ThresholdLoop(args.batch, args.n, args.k, p.f, stream, sample, filter, &modes)).empty()) return err;
  SelectParams sel = SurvivorSelect(p.f, args.n, args.k, values, indices);
  SelectKernel<<<static_cast<unsigned>(args.batch), kSelectThreads, 0, stream>>>(sel);
  if (!(err = CudaError("selecting survivors")).empty()) return err;
  // Overflowed queries (rare: adversarial scores): all n scores, one query at a time.
  for (int64_t b = 0; b < args.batch; ++b) {
    if (modes[b] != kModeFull) continue;
    ScoreParams one = p;
    one.mode = kScoreAll;
    one.rows = args.n;
    one.b0 = b;
    one.nq = 1;
    if (!(err = Launch(one, stream)).empty()) return err;
    sel.only_mode = kModeFull;
    sel.row0 = b;
    sel.full = p.full;
    sel.full_stride = 0;
    SelectKernel<<<1, kSelectThreads, 0, stream>>>(sel);
    if (!(err = CudaError("selecting a full query")).empty()) return err;
  }
  return "";
}

}  // namespace gpu
}  // namespace recopt
