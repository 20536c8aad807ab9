// Device pieces shared by the TopK and ScoreTopK launchers: the sortable key,
// the one-block sort and radix select, and the threshold loop that drives
// them (sample -> sort -> filter -> exact select on the survivors).
//
// Every element becomes a 64-bit key: the float's bits mapped so that a
// smaller key means a larger value (high half), then the index (low half).
// Keys are unique, so "the k smallest keys" is exactly TopKV2's answer with
// ties to the lower index, and a threshold key splits ties by index too:
// an all-equal row is no harder than a random one.
#ifndef RECOPT_GPU_SELECT_CUH_
#define RECOPT_GPU_SELECT_CUH_

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gpu_core.h"

namespace recopt {
namespace gpu {

constexpr int kSelectThreads = 1024;
constexpr uint64_t kKeyMax = ~0ull;

__host__ __device__ inline uint32_t FloatBits(float v) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(v);
#else
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
#endif
}

__host__ __device__ inline float BitsFloat(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float v;
  memcpy(&v, &u, 4);
  return v;
#endif
}

// NaN ranks above +inf, and -0 equals +0 (TopKV2 compares with >).
__host__ __device__ inline uint64_t MakeKey(float v, uint32_t index) {
  uint32_t bits = v != v ? 0x7fc00000u : (v == 0.f ? 0u : FloatBits(v));
  const uint32_t ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  return (static_cast<uint64_t>(~ascending) << 32) | index;
}

__host__ __device__ inline float KeyValue(uint64_t key) {
  const uint32_t ascending = ~static_cast<uint32_t>(key >> 32);
  return BitsFloat((ascending & 0x80000000u) ? (ascending & 0x7fffffffu) : ~ascending);
}

__host__ __device__ inline int32_t KeyIndex(uint64_t key) { return static_cast<int32_t>(key & 0xffffffffu); }

// Evenly spaced strata with a hashed offset inside each, so the sample is
// deterministic (same answer every call) but not aligned with any period.
__host__ __device__ inline int64_t SamplePos(int64_t r, int64_t n, int64_t s) {
  const int64_t stride = n / s;
  const int64_t base = r * n / s;
  if (stride <= 1) return base;
  const uint32_t h = static_cast<uint32_t>(r) * 2654435761u;
  return base + static_cast<int64_t>(h % static_cast<uint32_t>(stride));
}

inline int64_t SampleCount(int64_t n) { return n < kSampleSize ? n : kSampleSize; }

// Ascending bitonic sort of p (a power of two) keys in shared memory.
__device__ inline void BlockSort(uint64_t* keys, int p) {
  for (int size = 2; size <= p; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < p; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const bool ascending = (i & size) == 0;
          const uint64_t a = keys[i], b = keys[j];
          if ((a > b) == ascending) {
            keys[i] = b;
            keys[j] = a;
          }
        }
      }
      __syncthreads();
    }
  }
}

// Kernels are TU-local: each .cu that includes this file gets its own copy.
namespace {

// One block per row: sorts that row's s sample keys in place.
__global__ void SortSamplesKernel(uint64_t* samples, int s) {
  __shared__ uint64_t keys[kSampleSize];
  uint64_t* row = samples + static_cast<int64_t>(blockIdx.x) * s;
  const int p = 1 << (32 - __clz(s - 1 | 1));
  for (int i = threadIdx.x; i < p; i += blockDim.x) keys[i] = i < s ? row[i] : kKeyMax;
  __syncthreads();
  BlockSort(keys, p);
  for (int i = threadIdx.x; i < s; i += blockDim.x) row[i] = keys[i];
}

}  // namespace

enum RowMode : int32_t { kModeSurvivors = 0, kModeFull = 1, kModeSkip = 2 };

struct SelectParams {
  const int32_t* modes;       // per row
  const int32_t* lengths;     // survivors per row
  const uint64_t* survivors;  // [rows, cap]
  int64_t cap;
  const float* full;          // full-row values for row `row0`, then every full_stride
  int64_t full_stride;
  int64_t n;
  int k;
  const float* original;      // when set, output values are read back from it ([rows, n])
  float* values;              // [rows, k]
  int32_t* indices;
  int64_t row0;
  int32_t only_mode;
};

namespace {

__device__ inline uint64_t SelectItem(const SelectParams& p, int32_t mode, int64_t row, int64_t i) {
  if (mode == kModeSurvivors) return p.survivors[row * p.cap + i];
  return MakeKey(p.full[(row - p.row0) * p.full_stride + i], static_cast<uint32_t>(i));
}

// One block per row: the k smallest keys (exact, 8 passes of 8-bit radix
// select over the row's items), sorted, written as values and indices.
__global__ void SelectKernel(SelectParams p) {
  __shared__ uint64_t winners[kMaxK];
  __shared__ int32_t hist[256];
  __shared__ uint64_t prefix;
  __shared__ int32_t remaining, taken;
  const int64_t row = p.row0 + blockIdx.x;
  const int32_t mode = p.modes[row];
  if (mode != p.only_mode) return;
  const int64_t m = mode == kModeSurvivors ? p.lengths[row] : p.n;
  if (threadIdx.x == 0) {
    prefix = 0;
    remaining = p.k;
    taken = 0;
  }
  uint64_t mask = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int d = threadIdx.x; d < 256; d += blockDim.x) hist[d] = 0;
    __syncthreads();
    const uint64_t want = prefix;
    for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
      const uint64_t key = SelectItem(p, mode, row, i);
      if ((key & mask) == want) atomicAdd(&hist[(key >> shift) & 255], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int32_t below = 0, d = 0;
      while (d < 255 && below + hist[d] < remaining) below += hist[d++];
      remaining -= below;
      prefix |= static_cast<uint64_t>(d) << shift;
    }
    mask |= 0xffull << shift;
    __syncthreads();
  }
  const uint64_t kth = prefix;  // the k-th smallest key: keys are unique
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    const uint64_t key = SelectItem(p, mode, row, i);
    if (key <= kth) winners[atomicAdd(&taken, 1)] = key;
  }
  const int pk = 1 << (32 - __clz(p.k - 1 | 1));
  __syncthreads();
  for (int i = p.k + threadIdx.x; i < pk; i += blockDim.x) winners[i] = kKeyMax;
  __syncthreads();
  BlockSort(winners, pk);
  for (int i = threadIdx.x; i < p.k; i += blockDim.x) {
    const uint64_t key = winners[i];
    const int32_t index = KeyIndex(key);
    p.values[row * p.k + i] = p.original ? p.original[row * p.n + index] : KeyValue(key);
    p.indices[row * p.k + i] = index;
  }
}

}  // namespace

inline std::string CudaError(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return "";
  return std::string(what) + ": " + cudaGetErrorString(e);
}

// The workspace of the threshold loop, carved from one caller buffer.
struct FilterBuffers {
  uint64_t* samples = nullptr;    // [rows, s], sorted in place
  uint64_t* survivors = nullptr;  // [rows, cap]
  int32_t* counts = nullptr;      // [rows]
  int32_t* ranks = nullptr;       // [rows], 1-based; 0 = row not filtered this attempt
  int32_t* modes = nullptr;       // [rows]
  int32_t* lengths = nullptr;     // [rows]
  int64_t s = 0;
  int64_t cap = 0;
};

// Survivor room per row: ~4x the expected survivors of the first attempt
// (2k + n/s), so an overflow, which costs a full-row select, is rare.
inline int64_t SurvivorCap(int64_t n, int k) {
  const int64_t s = SampleCount(n);
  const int64_t expected = 2 * static_cast<int64_t>(k) + (s ? n / s : 0) + 1;
  const int64_t cap = 4 * expected > 8192 ? 4 * expected : 8192;
  return cap < n ? cap : n;
}

inline size_t Align256(size_t x) { return (x + 255) & ~static_cast<size_t>(255); }

inline size_t FilterBytes(int64_t rows, int64_t n, int k) {
  const int64_t s = SampleCount(n), cap = SurvivorCap(n, k);
  return Align256(rows * s * 8) + Align256(rows * cap * 8) + 4 * Align256(rows * 4);
}

inline FilterBuffers CarveFilter(void* workspace, int64_t rows, int64_t n, int k) {
  FilterBuffers f;
  f.s = SampleCount(n);
  f.cap = SurvivorCap(n, k);
  char* p = static_cast<char*>(workspace);
  f.samples = reinterpret_cast<uint64_t*>(p);
  p += Align256(rows * f.s * 8);
  f.survivors = reinterpret_cast<uint64_t*>(p);
  p += Align256(rows * f.cap * 8);
  int32_t** ints[] = {&f.counts, &f.ranks, &f.modes, &f.lengths};
  for (int32_t** q : ints) {
    *q = reinterpret_cast<int32_t*>(p);
    p += Align256(rows * 4);
  }
  return f;
}

// The seed's schedule: start at the (2*ceil(k*s/n)+1)-th largest sample,
// and on too few survivors move down the sorted sample (doubling the rank).
// Rank >= k always yields >= k survivors: those sample elements are in the row.
inline int64_t FirstRank(int64_t n, int k, int64_t s) {
  const int64_t r = 2 * ((static_cast<int64_t>(k) * s + n - 1) / n) + 1;
  return r < s ? r : s;
}

// Runs the loop for `rows` rows. sample() fills f.samples (unsorted);
// filter() appends each row's keys <= samples[row][ranks[row]-1] to its
// survivors and counts them (rows with rank 0 untouched). Afterwards each
// row's mode says where its exact select reads: its survivors, or the full
// row (overflow). Waits for the stream once per attempt.
template <typename SampleFn, typename FilterFn>
std::string ThresholdLoop(int64_t rows, int64_t n, int k, const FilterBuffers& f, cudaStream_t stream,
                          SampleFn sample, FilterFn filter, std::vector<int32_t>* modes) {
  std::string err = sample();
  if (!err.empty()) return err;
  SortSamplesKernel<<<static_cast<unsigned>(rows), kSelectThreads, 0, stream>>>(f.samples, static_cast<int>(f.s));
  if (!(err = CudaError("sorting samples")).empty()) return err;
  std::vector<int32_t> rank(rows, static_cast<int32_t>(FirstRank(n, k, f.s)));
  std::vector<int32_t> counts(rows), lengths(rows, 0);
  modes->assign(rows, kModeSkip);
  for (int64_t pending = rows; pending > 0;) {
    cudaMemcpyAsync(f.ranks, rank.data(), rows * 4, cudaMemcpyHostToDevice, stream);
    cudaMemsetAsync(f.counts, 0, rows * 4, stream);
    if (!(err = filter()).empty()) return err;
    cudaMemcpyAsync(counts.data(), f.counts, rows * 4, cudaMemcpyDeviceToHost, stream);
    if (cudaStreamSynchronize(stream) != cudaSuccess) return CudaError("threshold filter");
    pending = 0;
    for (int64_t r = 0; r < rows; ++r) {
      if (rank[r] == 0) continue;
      if (counts[r] > f.cap || (counts[r] < k && rank[r] >= f.s)) {
        (*modes)[r] = kModeFull;
        rank[r] = 0;
      } else if (counts[r] >= k) {
        (*modes)[r] = kModeSurvivors;
        lengths[r] = counts[r];
        rank[r] = 0;
      } else {
        rank[r] = static_cast<int32_t>(2 * rank[r] < f.s ? 2 * rank[r] : f.s);
        ++pending;
      }
    }
  }
  cudaMemcpyAsync(f.modes, modes->data(), rows * 4, cudaMemcpyHostToDevice, stream);
  cudaMemcpyAsync(f.lengths, lengths.data(), rows * 4, cudaMemcpyHostToDevice, stream);
  return CudaError("threshold loop");
}

inline SelectParams SurvivorSelect(const FilterBuffers& f, int64_t n, int k, float* values, int32_t* indices) {
  SelectParams p{};
  p.modes = f.modes;
  p.lengths = f.lengths;
  p.survivors = f.survivors;
  p.cap = f.cap;
  p.n = n;
  p.k = k;
  p.values = values;
  p.indices = indices;
  p.only_mode = kModeSurvivors;
  return p;
}

}  // namespace gpu
}  // namespace recopt

#endif  // RECOPT_GPU_SELECT_CUH_
