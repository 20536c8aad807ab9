// A stack of dense layers as oneDNN matmul primitives (bias and activation
// as post-ops), weights reordered once into the layout oneDNN picks.
//
// The other backend of Recopt>FusedMLP beside PackedMlp (mlp.h): oneDNN's
// brgemm kernels reach the FMA limit of AVX-512 at large batch, where the
// hand kernels trail, and run bf16 products on AVX512_BF16 and AMX, which
// the hand kernels do not. Which backend runs where is measured: the
// "Whole MLP" sections of BENCHMARKS.md (bench.mlp) and AutoMinRows below.
//
// Threading: a call runs on the calling thread only (oneDNN's OpenMP team
// is held to one thread); the op shards rows over TensorFlow's pool, so the
// intra-op settings users give TF Serving keep their meaning.
#ifndef RECOPT_CORE_ONEDNN_MLP_H_
#define RECOPT_CORE_ONEDNN_MLP_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mlp.h"
#include "onednn_api.h"

namespace recopt {

class OnednnMlp {
 public:
  OnednnMlp() = default;
  OnednnMlp(const OnednnMlp&) = delete;
  OnednnMlp& operator=(const OnednnMlp&) = delete;
  ~OnednnMlp();

  // "" on success, else why oneDNN cannot run this stack here (no library,
  // no fast kernel for this CPU and precision): the caller keeps PackedMlp.
  // bf16: weights and every layer's input rounded to bfloat16 (nearest
  // even), products accumulated in fp32, outputs of the last layer fp32.
  // int8[l] (not with bf16): layer l multiplies in integers. Its weights are
  // rounded to int8 with one scale per output column, and each row of its
  // input to int8 with a scale of that row's own (u8 after an activation
  // that leaves no negatives), at every call; products are summed in int32
  // (VNNI, AMX-INT8), then scaled, biased and activated in fp32. A row's
  // answer so depends on that row alone, never on the rest of the batch.
  // Where oneDNN has no VNNI/AMX kernel for them, the int8 layers run in
  // fp32 and Int8Note() says why.
  std::string Pack(const std::vector<DenseLayerSpec>& layers, bool bf16, const std::vector<bool>& int8 = {});

  int input_dim() const { return layers_.empty() ? 0 : layers_.front().k; }
  int output_dim() const { return layers_.empty() ? 0 : layers_.back().n; }
  bool bf16() const { return bf16_; }
  // Layers that run in int8, and why none do where some were asked for.
  int Int8Layers() const {
    int n = 0;
    for (const Layer& l : layers_) n += l.int8;
    return n;
  }
  const std::string& Int8Note() const { return int8_note_; }
  // Multiply-adds per input row, for work sharding.
  int64_t FlopsPerRow() const {
    int64_t flops = 0;
    for (const Layer& l : layers_) flops += 2 * static_cast<int64_t>(l.k) * l.n;
    return flops;
  }
  // The first layer's oneDNN implementation, e.g. "brg:avx512_core_amx".
  const std::string& impl() const { return impl_; }
  // Rows per thread from which this beats the hand kernels (PackedMlp):
  // fp32 from 16 rows on AVX-512, 32 on AVX2; bf16 from 4 rows on AMX,
  // never without AMX (vdpbf16ps alone ran slower than fp32 on the same
  // Sapphire Rapids, and the hand kernels read bf16 weights just as well).
  // Measured per op at 1-512 rows on one thread, on the AMX host and with
  // AVX2 forced: `python -m bench.mlp --paths in-graph --name mlp_rows ...`
  // (the "per-op time by row count" sections of BENCHMARKS.md). FusedMLP
  // runs a stack with int8 layers here at any row count (the hand kernels
  // have no int8).
  int64_t AutoMinRows() const { return auto_min_rows_; }
  // y[rows, output_dim] = mlp(x[rows, input_dim]) on the calling thread.
  // False, for the caller to run PackedMlp instead, when oneDNN refuses a
  // primitive for this row count or x holds a NaN or Inf: oneDNN's relu,
  // clip and gelu_erf post-ops turn NaN into numbers, where TensorFlow's
  // activations (and PackedMlp) pass it on; an int8 layer's input cannot
  // hold them at all. The scan costs a read of x.
  bool Forward(const float* x, int64_t rows, float* y) const;

  // Rows per primitive call: a bigger shard runs in blocks of this many, so
  // that at most two row counts per batch size need primitives.
  static constexpr int64_t kBlockRows = 512;

 private:
  // The weights in one layout oneDNN asked for, reordered once.
  struct Packed {
    dnnl_memory_desc_t md = nullptr;
    std::shared_ptr<void> data;  // 64-byte aligned
  };
  struct Layer {
    int k = 0, n = 0, activation = 0;
    float alpha = 0.f;
    bool int8 = false, src_u8 = false;  // int8: u8 input when the previous activation leaves no negatives
    // One copy per distinct layout the probes at Pack chose: oneDNN may want
    // another for few rows (int8 at one row: VNNI with a compensated layout,
    // AMX from a few rows up). Each row count takes the first that is fast.
    std::vector<Packed> packs;
    std::vector<float> bias;
    std::vector<float> weight_scales;  // int8: [n], column j ~ its int8 values * weight_scales[j]
    dnnl_memory_desc_t scales_md = nullptr;
  };
  struct Shape;  // primitives for one row count (onednn_mlp.cc)

  std::shared_ptr<const Shape> ShapeFor(int64_t rows) const;
  // Primitives for `rows`; with probe, over weights of any layout.
  std::string MakeShape(int64_t rows, bool probe, Shape* out) const;
  // Adds the layouts a probe shape chose that no pack has yet.
  std::string PackWeights(const std::vector<DenseLayerSpec>& specs, const Shape& probe);

  std::vector<Layer> layers_;
  bool bf16_ = false;
  std::string impl_;
  int64_t auto_min_rows_ = 0;
  int max_hidden_ = 0;
  int max_int8_k_ = 0;  // the widest int8 layer input, for the per-call buffer
  std::string int8_note_;
  mutable std::mutex mu_;
  mutable std::unordered_map<int64_t, std::shared_ptr<const Shape>> shapes_;
};

}  // namespace recopt

#endif  // RECOPT_CORE_ONEDNN_MLP_H_
