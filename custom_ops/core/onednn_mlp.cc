#include "onednn_mlp.h"

#include <algorithm>
#include <cstring>

#include "activation.h"
#include "quantize.h"

namespace recopt {
namespace {

// Row counts whose primitives decide the weights' layouts at Pack. fp32 and
// bf16 brgemm chose one layout for every row count from 1 to 512; int8
// chose two on the AMX host (VNNI's, with s8 compensation, at one row; AMX's
// from a few rows up), so both ends are probed and each distinct layout kept.
constexpr int64_t kProbeRows[] = {64, 1};
// Row counts with primitives kept at once; past it one of them goes (a
// serving batch size seen once should not pin memory forever).
constexpr size_t kMaxShapes = 64;

const OnednnApi& Api() { return *Onednn(); }
bool Ok(dnnl_status_t s) { return OnednnOk(s); }

// MakeShape's refusal of an int8 layer, which Pack answers by running the
// int8 layers in fp32 instead of giving up oneDNN.
const char kNoInt8Kernel[] = "no VNNI or AMX int8 kernel in oneDNN here, only ";

// Activations whose outputs are never negative: the next int8 layer then
// rounds its input to uint8 over [0, max], one more bit than int8 gives.
bool NonNegative(int act) {
  return act == kActRelu || act == kActRelu6 || act == kActSigmoid || act == kActSoftplus;
}

// Appends the activation as eltwise post-ops; false for one oneDNN lacks.
bool AppendActivation(dnnl_post_ops_t po, int act, float alpha) {
  auto add = [&](dnnl_alg_kind_t alg, float a, float b) { return Ok(Api().dnnl_post_ops_append_eltwise(po, alg, a, b)); };
  switch (act) {
    case kActNone: return true;
    case kActRelu: return add(dnnl_eltwise_relu, 0.f, 0.f);
    case kActLeakyRelu: return add(dnnl_eltwise_relu, alpha, 0.f);
    case kActRelu6: return add(dnnl_eltwise_clip_v2, 0.f, 6.f);
    case kActElu: return add(dnnl_eltwise_elu, 1.f, 0.f);
    case kActSelu:
      return add(dnnl_eltwise_elu, 1.6732632423543772848170429916717f, 0.f) &&
             add(dnnl_eltwise_linear, 1.0507009873554804934193349852946f, 0.f);
    case kActSigmoid: return add(dnnl_eltwise_logistic, 0.f, 0.f);
    case kActTanh: return add(dnnl_eltwise_tanh, 0.f, 0.f);
    case kActSoftplus: return add(dnnl_eltwise_soft_relu, 1.f, 0.f);
    case kActSwish: return add(dnnl_eltwise_swish, 1.f, 0.f);
    case kActGeluExact: return add(dnnl_eltwise_gelu_erf, 0.f, 0.f);
    case kActGeluTanh: return add(dnnl_eltwise_gelu_tanh, 0.f, 0.f);
    default: return false;
  }
}

// No NaN or Inf among n floats: an exponent of all ones is either. A plain
// integer OR-reduction, so the compiler vectorises it at any -m level.
bool AllFinite(const float* x, int64_t n) {
  uint32_t seen = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    seen |= ((bits & 0x7F800000u) == 0x7F800000u);
  }
  return seen == 0;
}

}  // namespace

struct OnednnMlp::Shape {
  std::vector<dnnl_primitive_t> prims;  // one matmul per layer
  std::vector<int> pack;                // the layer's Packed each matmul reads (-1 in a probe)
  // int8 layers: dst = act(dst * row_scale + bias) in one pass, as a binary
  // primitive (a [rows, 1] operand of a matmul post-op gets only oneDNN's
  // reference kernel in 3.2); null for the other layers.
  std::vector<dnnl_primitive_t> epilogues;
  dnnl_memory_desc_t row_scales_md = nullptr;  // [rows, 1] fp32
  std::vector<dnnl_memory_desc_t> src_mds, dst_mds, bias_mds;
  dnnl_primitive_t to_bf16 = nullptr;  // bf16 only: x -> bf16 rows
  dnnl_memory_desc_t x_md = nullptr;   // [rows, k0] fp32
  size_t scratch_bytes = 0;            // the largest primitive scratchpad
  std::vector<dnnl_memory_desc_t> scratch_mds;
  Shape() = default;
  Shape(const Shape&) = delete;
  Shape& operator=(const Shape&) = delete;
  ~Shape() {
    if (Onednn() == nullptr) return;
    for (auto p : prims) Api().dnnl_primitive_destroy(p);
    for (auto p : epilogues) if (p) Api().dnnl_primitive_destroy(p);
    if (to_bf16) Api().dnnl_primitive_destroy(to_bf16);
    for (auto* v : {&src_mds, &dst_mds, &bias_mds, &scratch_mds}) {
      for (auto m : *v) if (m) Api().dnnl_memory_desc_destroy(m);
    }
    for (auto m : {x_md, row_scales_md}) if (m) Api().dnnl_memory_desc_destroy(m);
  }
};

OnednnMlp::~OnednnMlp() {
  shapes_.clear();
  if (Onednn() == nullptr) return;
  for (Layer& l : layers_) {
    for (Packed& p : l.packs) Api().dnnl_memory_desc_destroy(p.md);
    if (l.scales_md) Api().dnnl_memory_desc_destroy(l.scales_md);
  }
}

std::string OnednnMlp::MakeShape(int64_t rows, bool probe, Shape* s) const {
  const dnnl_data_type_t act_dt = bf16_ ? dnnl_bf16 : dnnl_f32;
  s->row_scales_md = OnednnDesc(rows, 1, dnnl_f32);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    const bool last = l + 1 == layers_.size();
    OnednnHandles h;
    if (!Ok(Api().dnnl_primitive_attr_create(&h.attr)) || !Ok(Api().dnnl_post_ops_create(&h.po))) return "oneDNN could not create primitive attributes";
    if (!AppendActivation(h.po, layer.activation, layer.alpha)) {
      return std::string("no oneDNN post-op for ") + ActivationName(static_cast<Activation>(layer.activation));
    }
    // Scratchpads come from each call, so concurrent calls share nothing.
    Api().dnnl_primitive_attr_set_scratchpad_mode(h.attr, dnnl_scratchpad_mode_user);
    // An int8 layer's matmul only scales by the weight columns; the row
    // scale, bias and activation follow in its epilogue.
    if (layer.int8) {
      Api().dnnl_primitive_attr_set_scales_mask(h.attr, DNNL_ARG_WEIGHTS, 1 << 1);
    } else {
      Api().dnnl_primitive_attr_set_post_ops(h.attr, h.po);
    }
    const dnnl_data_type_t src_dt = !layer.int8 ? act_dt : layer.src_u8 ? dnnl_u8 : dnnl_s8;
    s->src_mds.push_back(OnednnDesc(rows, layer.k, src_dt));
    s->dst_mds.push_back(OnednnDesc(rows, layer.n, last || layer.int8 ? dnnl_f32 : act_dt));
    s->bias_mds.push_back(OnednnDesc(1, layer.n, dnnl_f32));
    std::vector<const_dnnl_memory_desc_t> layouts;
    if (probe) {
      layouts.push_back(h.md(OnednnDesc(layer.k, layer.n, layer.int8 ? dnnl_s8 : act_dt, dnnl_format_tag_any)));
    } else {
      for (const Packed& p : layer.packs) layouts.push_back(p.md);
    }
    dnnl_primitive_desc_t pd = nullptr;
    std::string why = "oneDNN has no matmul for layer " + std::to_string(l);
    for (size_t i = 0; i < layouts.size() && pd == nullptr; ++i) {
      if (!Ok(Api().dnnl_matmul_primitive_desc_create(&pd, Api().engine, s->src_mds.back(), layouts[i],
                                                      layer.int8 ? nullptr : s->bias_mds.back(), s->dst_mds.back(), h.attr))) {
        pd = nullptr;
        continue;
      }
      const std::string impl = OnednnImplName(pd);
      // A reference implementation is slower than the hand kernels by far;
      // an int8 product pays only on VNNI or AMX (brgemm), not plain AVX2.
      if (impl.find("ref") != std::string::npos) {
        why = "oneDNN offers only " + impl + " for layer " + std::to_string(l);
      } else if (layer.int8 && impl.find("brg") == std::string::npos) {
        why = kNoInt8Kernel + impl;
      } else {
        s->pack.push_back(probe ? -1 : static_cast<int>(i));
        break;
      }
      Api().dnnl_primitive_desc_destroy(pd);
      pd = nullptr;
    }
    if (pd == nullptr) return why;
    h.pds.push_back(pd);
    dnnl_memory_desc_t scratch = nullptr;
    Api().dnnl_memory_desc_clone(&scratch, Api().dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    s->scratch_mds.push_back(scratch);
    s->scratch_bytes = std::max(s->scratch_bytes, Api().dnnl_memory_desc_get_size(scratch));
    dnnl_primitive_t prim = nullptr;
    if (!Ok(Api().dnnl_primitive_create(&prim, pd))) return "oneDNN could not create a matmul";
    s->prims.push_back(prim);
    s->epilogues.push_back(nullptr);
    if (!layer.int8) continue;
    OnednnHandles e;
    Api().dnnl_primitive_attr_create(&e.attr);
    Api().dnnl_post_ops_create(&e.po);
    Api().dnnl_post_ops_append_binary(e.po, dnnl_binary_add, s->bias_mds.back());
    AppendActivation(e.po, layer.activation, layer.alpha);
    Api().dnnl_primitive_attr_set_post_ops(e.attr, e.po);
    dnnl_primitive_desc_t epd = nullptr;
    if (!Ok(Api().dnnl_binary_primitive_desc_create(&epd, Api().engine, dnnl_binary_mul, s->dst_mds.back(),
                                                    s->row_scales_md, s->dst_mds.back(), e.attr))) {
      return "oneDNN has no int8 epilogue for layer " + std::to_string(l);
    }
    e.pds.push_back(epd);
    if (!Ok(Api().dnnl_primitive_create(&s->epilogues.back(), epd))) return "oneDNN could not create an epilogue";
  }
  if (bf16_) {
    s->x_md = OnednnDesc(rows, layers_[0].k, dnnl_f32);
    OnednnHandles h;
    dnnl_primitive_desc_t pd = nullptr;
    if (!Ok(Api().dnnl_reorder_primitive_desc_create(&pd, s->x_md, Api().engine, s->src_mds[0], Api().engine, nullptr))) {
      return "oneDNN has no fp32 -> bf16 reorder";
    }
    h.pds.push_back(pd);
    if (!Ok(Api().dnnl_primitive_create(&s->to_bf16, pd))) return "oneDNN could not create a reorder";
  }
  return "";
}

std::string OnednnMlp::Pack(const std::vector<DenseLayerSpec>& specs, bool bf16, const std::vector<bool>& int8) {
  if (Onednn() == nullptr) return "oneDNN unavailable: " + OnednnUnavailableReason();
  if (specs.empty()) return "no layers";
  if (!int8.empty() && int8.size() != specs.size()) return "int8 needs one flag per layer";
  bf16_ = bf16;
  layers_.clear();
  for (size_t l = 0; l < specs.size(); ++l) {
    const DenseLayerSpec& s = specs[l];
    if (s.k <= 0 || s.n <= 0) return "layer " + std::to_string(l) + ": empty weight matrix";
    if (l > 0 && s.k != specs[l - 1].n) return "layer " + std::to_string(l) + ": shapes do not chain";
    Layer layer;
    layer.k = s.k;
    layer.n = s.n;
    layer.activation = s.activation;
    layer.alpha = s.alpha;
    layer.bias.assign(s.bias, s.bias + s.n);
    layer.int8 = !int8.empty() && int8[l];
    if (layer.int8 && bf16) return "layer " + std::to_string(l) + ": int8 and bf16 do not mix in one stack";
    layer.src_u8 = layer.int8 && l > 0 && NonNegative(specs[l - 1].activation);
    layers_.push_back(std::move(layer));
    if (l + 1 < specs.size()) max_hidden_ = std::max(max_hidden_, s.n);
  }
  for (int64_t rows : kProbeRows) {
    Shape probe;
    std::string err = MakeShape(rows, true, &probe);
    if (rows != kProbeRows[0]) {
      // A later probe only adds layouts: where it finds no fast kernel,
      // calls of those rows refuse (and PackedMlp runs them).
      if (err.empty()) err = PackWeights(specs, probe);
      else err.clear();
      if (!err.empty()) return err;
      continue;
    }
    if (err.rfind(kNoInt8Kernel, 0) == 0) {
      int8_note_ = "int8 layers run in fp32: " + err;
      for (Layer& layer : layers_) layer.int8 = layer.src_u8 = false;
      Shape fp32;
      err = MakeShape(rows, true, &fp32);
      if (err.empty()) err = PackWeights(specs, fp32);
    } else if (err.empty()) {
      err = PackWeights(specs, probe);
    }
    if (!err.empty()) return err;
  }
  for (const Layer& layer : layers_) if (layer.int8) max_int8_k_ = std::max(max_int8_k_, layer.k);
  constexpr int64_t kNever = int64_t{1} << 62;
  if (bf16_) {
    auto_min_rows_ = impl_.find("amx") != std::string::npos ? 4 : kNever;
  } else {
    auto_min_rows_ = impl_.find("avx512") != std::string::npos ? 16 : 32;
  }
  return "";
}

std::string OnednnMlp::PackWeights(const std::vector<DenseLayerSpec>& specs, const Shape& probe) {
  dnnl_stream_t stream = OnednnThreadStream();
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    const_dnnl_primitive_desc_t pd = nullptr;
    Api().dnnl_primitive_get_primitive_desc(probe.prims[l], &pd);
    if (impl_.empty()) impl_ = OnednnImplName(pd);
    const_dnnl_memory_desc_t chosen = Api().dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (std::any_of(layer.packs.begin(), layer.packs.end(),
                    [&](const Packed& p) { return Api().dnnl_memory_desc_equal(p.md, chosen) != 0; })) {
      continue;
    }
    const void* plain_data = specs[l].weights;
    std::vector<int8_t> rounded;
    if (layer.int8) {
      rounded.resize(static_cast<size_t>(layer.k) * layer.n);
      layer.weight_scales.resize(layer.n);
      if (!QuantizeColumns(specs[l].weights, layer.k, layer.n, rounded.data(), layer.weight_scales.data())) {
        return "layer " + std::to_string(l) + ": a weight is NaN or Inf, which int8 cannot hold";
      }
      plain_data = rounded.data();
      if (layer.scales_md == nullptr) {
        const dnnl_dims_t dims = {layer.n};
        Api().dnnl_memory_desc_create_with_tag(&layer.scales_md, 1, dims, dnnl_f32, dnnl_a);
      }
    }
    Packed packed;
    Api().dnnl_memory_desc_clone(&packed.md, chosen);
    packed.data = AlignedBuffer(Api().dnnl_memory_desc_get_size(packed.md));
    layer.packs.push_back(packed);
    OnednnHandles h;
    dnnl_memory_desc_t plain = h.md(OnednnDesc(layer.k, layer.n, layer.int8 ? dnnl_s8 : dnnl_f32));
    dnnl_primitive_desc_t rpd = nullptr;
    if (!Ok(Api().dnnl_reorder_primitive_desc_create(&rpd, plain, Api().engine, packed.md, Api().engine, nullptr))) {
      return "oneDNN cannot reorder layer " + std::to_string(l) + "'s weights";
    }
    h.pds.push_back(rpd);
    dnnl_primitive_t reorder = nullptr;
    if (!Ok(Api().dnnl_primitive_create(&reorder, rpd))) return "oneDNN could not create a weights reorder";
    const dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, h.mem(plain, plain_data)}, {DNNL_ARG_TO, h.mem(packed.md, packed.data.get())}};
    const bool done = Ok(Api().dnnl_primitive_execute(reorder, stream, 2, args)) && Ok(Api().dnnl_stream_wait(stream));
    Api().dnnl_primitive_destroy(reorder);
    if (!done) return "oneDNN failed to reorder layer " + std::to_string(l) + "'s weights";
  }
  return "";
}

std::shared_ptr<const OnednnMlp::Shape> OnednnMlp::ShapeFor(int64_t rows) const {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = shapes_.find(rows);
    if (it != shapes_.end()) return it->second;
  }
  // Made outside the lock (creating primitives takes milliseconds); a
  // refusal is cached too, as null, so that row count goes to PackedMlp.
  auto made = std::make_shared<Shape>();
  std::shared_ptr<const Shape> shape = MakeShape(rows, false, made.get()).empty() ? made : nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  if (shapes_.size() >= kMaxShapes) shapes_.erase(shapes_.begin());
  return shapes_.emplace(rows, shape).first->second;
}

bool OnednnMlp::Forward(const float* x, int64_t rows, float* y) const {
  const int64_t in = input_dim(), out = output_dim();
  if (!AllFinite(x, rows * in)) return false;
  const size_t elem = bf16_ ? 2 : 4;
  for (int64_t r = 0; r < rows; r += kBlockRows) {
    const int64_t m = std::min(kBlockRows, rows - r);
    const std::shared_ptr<const Shape> shape = ShapeFor(m);
    if (shape == nullptr) return false;
    // Activations and scratchpads belong to this call and go when it ends.
    auto round = [](size_t b) { return (b + 63) / 64 * 64; };
    const size_t hidden = round(m * max_hidden_ * elem), xbytes = bf16_ ? round(m * in * elem) : 0;
    const size_t scratch = round(shape->scratch_bytes);
    const size_t qbytes = round(m * max_int8_k_), sbytes = max_int8_k_ ? round(m * sizeof(float)) : 0;
    std::shared_ptr<void> buffer = AlignedBuffer(scratch + 2 * hidden + xbytes + qbytes + sbytes);
    char* base = static_cast<char*>(buffer.get());
    void* bufs[2] = {base + scratch, base + scratch + hidden};
    void* quantized = base + scratch + 2 * hidden + xbytes;
    float* row_scales = reinterpret_cast<float*>(base + scratch + 2 * hidden + xbytes + qbytes);
    dnnl_stream_t stream = OnednnThreadStream();
    OnednnHandles h;
    const void* src = x + r * in;
    if (bf16_) {
      void* xb = base + scratch + 2 * hidden;
      const dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, h.mem(shape->x_md, src)}, {DNNL_ARG_TO, h.mem(shape->src_mds[0], xb)}};
      if (!Ok(Api().dnnl_primitive_execute(shape->to_bf16, stream, 2, args))) return false;
      src = xb;
    }
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      const Packed& weights = layer.packs[shape->pack[l]];
      void* dst = l + 1 == layers_.size() ? static_cast<void*>(y + r * out) : bufs[l % 2];
      std::vector<dnnl_exec_arg_t> args = {
          {DNNL_ARG_WEIGHTS, h.mem(weights.md, weights.data.get())},
          {DNNL_ARG_DST, h.mem(shape->dst_mds[l], dst)},
          {DNNL_ARG_SCRATCHPAD, h.mem(shape->scratch_mds[l], base)},
      };
      if (layer.int8) {
        // src is fp32 here (int8 never mixes with bf16) and must be complete;
        // an overflow to Inf in a hidden layer refuses the call like a NaN in x.
        if (!Ok(Api().dnnl_stream_wait(stream))) return false;
        if (!QuantizeRows(static_cast<const float*>(src), m, layer.k, layer.src_u8, quantized, row_scales)) return false;
        args.push_back({DNNL_ARG_SRC, h.mem(shape->src_mds[l], quantized)});
        args.push_back({DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS, h.mem(layer.scales_md, layer.weight_scales.data())});
      } else {
        args.push_back({DNNL_ARG_SRC, h.mem(shape->src_mds[l], src)});
        args.push_back({DNNL_ARG_BIAS, h.mem(shape->bias_mds[l], layer.bias.data())});
      }
      if (!Ok(Api().dnnl_primitive_execute(shape->prims[l], stream, args.size(), args.data()))) return false;
      if (layer.int8) {
        const dnnl_exec_arg_t epilogue[] = {
            {DNNL_ARG_SRC_0, args[1].memory},
            {DNNL_ARG_SRC_1, h.mem(shape->row_scales_md, row_scales)},
            {DNNL_ARG_DST, args[1].memory},
            {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, h.mem(shape->bias_mds[l], layer.bias.data())},
        };
        if (!Ok(Api().dnnl_primitive_execute(shape->epilogues[l], stream, 4, epilogue))) return false;
      }
      src = dst;
    }
    if (!Ok(Api().dnnl_stream_wait(stream))) return false;
  }
  return true;
}

}  // namespace recopt
