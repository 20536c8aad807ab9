// RecoptTopK on GPU: sampled-threshold filter, then an exact select of the
// few survivors (../shared/seeds/003: a filter pass is an elementwise compare
// plus a small append, so it runs at memory speed where a radix sort of the
// whole row would read it several times).
#include "select.cuh"

namespace recopt {
namespace gpu {
namespace {

constexpr int kFilterThreads = 256;

__global__ void SampleRowsKernel(const float* in, int64_t n, int64_t s, uint64_t* samples) {
  const int64_t row = blockIdx.y;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= s) return;
  const int64_t j = SamplePos(r, n, s);
  samples[row * s + r] = MakeKey(in[row * n + j], static_cast<uint32_t>(j));
}

__device__ inline void Offer(float v, int64_t j, uint64_t threshold, int64_t row, int64_t cap, int32_t* counts,
                             uint64_t* survivors) {
  const uint64_t key = MakeKey(v, static_cast<uint32_t>(j));
  if (key > threshold) return;
  const int32_t pos = atomicAdd(&counts[row], 1);
  if (pos < cap) survivors[row * cap + pos] = key;
}

// Grid-stride over one row per blockIdx.y; float4 loads when the row allows.
__global__ void FilterRowsKernel(const float* in, int64_t n, FilterBuffers f) {
  const int64_t row = blockIdx.y;
  const int32_t rank = f.ranks[row];
  if (rank == 0) return;
  const uint64_t threshold = f.samples[row * f.s + rank - 1];
  const float* x = in + row * n;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if ((reinterpret_cast<uintptr_t>(x) & 15) == 0) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    const int64_t n4 = n / 4;
    for (int64_t i = start; i < n4; i += step) {
      const float4 v = __ldg(x4 + i);
      Offer(v.x, 4 * i, threshold, row, f.cap, f.counts, f.survivors);
      Offer(v.y, 4 * i + 1, threshold, row, f.cap, f.counts, f.survivors);
      Offer(v.z, 4 * i + 2, threshold, row, f.cap, f.counts, f.survivors);
      Offer(v.w, 4 * i + 3, threshold, row, f.cap, f.counts, f.survivors);
    }
    start += 4 * n4;  // the < 4-element tail, if any, below
  }
  for (int64_t i = start; i < n; i += step) Offer(__ldg(x + i), i, threshold, row, f.cap, f.counts, f.survivors);
}

// Enough blocks to fill the GPU whatever the row count (rows go in grid y).
unsigned FilterBlocks(int64_t rows, int64_t n) {
  const int64_t per_row = (n / 4 + kFilterThreads - 1) / kFilterThreads;
  const int64_t want = (1024 + rows - 1) / rows;
  const int64_t blocks = per_row < want ? per_row : want;
  return static_cast<unsigned>(blocks > 0 ? blocks : 1);
}

}  // namespace

size_t TopKWorkspaceBytes(int64_t rows, int64_t n, int k) { return FilterBytes(rows, n, k); }

std::string TopK(const float* input, int64_t rows, int64_t n, int k, float* values, int32_t* indices,
                 void* workspace, size_t workspace_bytes, void* stream_ptr) {
  if (k < 0 || k > n) return "k must be in [0, n]: k=" + std::to_string(k) + ", n=" + std::to_string(n);
  if (k > kMaxK) return "k=" + std::to_string(k) + " is above the GPU limit " + std::to_string(kMaxK);
  if (n > 0x7fffffff) return "rows longer than INT_MAX: n=" + std::to_string(n);
  if (rows > 65535) return "more than 65535 rows: " + std::to_string(rows);
  if (rows == 0 || k == 0) return "";
  if (workspace_bytes < TopKWorkspaceBytes(rows, n, k)) return "workspace too small";
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const FilterBuffers f = CarveFilter(workspace, rows, n, k);
  auto sample = [&]() {
    const dim3 grid(static_cast<unsigned>((f.s + kFilterThreads - 1) / kFilterThreads), static_cast<unsigned>(rows));
    SampleRowsKernel<<<grid, kFilterThreads, 0, stream>>>(input, n, f.s, f.samples);
    return CudaError("sampling rows");
  };
  auto filter = [&]() {
    const dim3 grid(FilterBlocks(rows, n), static_cast<unsigned>(rows));
    FilterRowsKernel<<<grid, kFilterThreads, 0, stream>>>(input, n, f);
    return CudaError("filtering rows");
  };
  std::vector<int32_t> modes;
  std::string err = ThresholdLoop(rows, n, k, f, stream, sample, filter, &modes);
  if (!err.empty()) return err;
  SelectParams p = SurvivorSelect(f, n, k, values, indices);
  p.original = input;
  p.full = input;
  p.full_stride = n;
  SelectKernel<<<static_cast<unsigned>(rows), kSelectThreads, 0, stream>>>(p);
  p.only_mode = kModeFull;
  SelectKernel<<<static_cast<unsigned>(rows), kSelectThreads, 0, stream>>>(p);
  return CudaError("selecting top k");
}

}  // namespace gpu
}  // namespace recopt
