#include "onednn_mlp.h"

#include <cstdlib>
#include <cstring>

#include "activation.h"

namespace recopt {
namespace {

// Row count whose primitive decides the weights' layout at Pack; oneDNN
// picks the same layout for every fixed row count (checked for fp32 and bf16
// brgemm, 1 to 512 rows), and each later primitive is asked for it exactly.
constexpr int64_t kPackRows = 64;
// Row counts with primitives kept at once; past it
// one of them goes (a serving batch size seen once should not pin memory forever).
constexpr size_t kMaxShapes = 64;

const OnednnApi& Api() { return *Onednn(); }

bool Ok(dnnl_status_t s) { return s == dnnl_success; }

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

dnnl_memory_desc_t Desc(int64_t rows, int64_t cols, dnnl_data_type_t dt, dnnl_format_tag_t tag = dnnl_ab) {
  dnnl_dims_t dims = {rows, cols};
  dnnl_memory_desc_t md = nullptr;
  return Ok(Api().dnnl_memory_desc_create_with_tag(&md, 2, dims, dt, tag)) ? md : nullptr;
}

// Owns the C handles it collects and frees them on every exit path.
struct Handles {
  std::vector<dnnl_memory_desc_t> mds;
  std::vector<dnnl_primitive_desc_t> pds;
  std::vector<dnnl_memory_t> mems;
  dnnl_primitive_attr_t attr = nullptr;
  dnnl_post_ops_t po = nullptr;
  dnnl_memory_desc_t md(dnnl_memory_desc_t m) { mds.push_back(m); return m; }
  ~Handles() {
    for (auto m : mems) Api().dnnl_memory_destroy(m);
    for (auto p : pds) Api().dnnl_primitive_desc_destroy(p);
    for (auto m : mds) if (m) Api().dnnl_memory_desc_destroy(m);
    if (attr) Api().dnnl_primitive_attr_destroy(attr);
    if (po) Api().dnnl_post_ops_destroy(po);
  }
};

std::string ImplName(const_dnnl_primitive_desc_t pd) {
  const char* name = nullptr;
  Api().dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name);
  return name ? name : "";
}

struct AlignedFree { void operator()(void* p) const { std::free(p); } };

std::shared_ptr<void> AlignedBuffer(size_t bytes) {
  return std::shared_ptr<void>(std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64), AlignedFree());
}

// The calling thread's stream; oneDNN's OpenMP team held to this thread.
dnnl_stream_t ThreadStream() {
  thread_local dnnl_stream_t stream = [] {
    if (Api().omp_set_num_threads) Api().omp_set_num_threads(1);
    dnnl_stream_t s = nullptr;
    Api().dnnl_stream_create(&s, Api().engine, dnnl_stream_default_flags);
    return s;
  }();
  return stream;
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
  std::vector<dnnl_primitive_t> prims;      // one matmul per layer
  std::vector<dnnl_memory_desc_t> src_mds, dst_mds, bias_mds;
  dnnl_primitive_t to_bf16 = nullptr;      // bf16 only: x -> bf16 rows
  dnnl_memory_desc_t x_md = nullptr;       // [rows, k0] fp32
  size_t scratch_bytes = 0;                // the largest primitive scratchpad
  std::vector<dnnl_memory_desc_t> scratch_mds;
  ~Shape() {
    if (Onednn() == nullptr) return;
    for (auto p : prims) Api().dnnl_primitive_destroy(p);
    if (to_bf16) Api().dnnl_primitive_destroy(to_bf16);
    for (auto* v : {&src_mds, &dst_mds, &bias_mds, &scratch_mds}) {
      for (auto m : *v) if (m) Api().dnnl_memory_desc_destroy(m);
    }
    if (x_md) Api().dnnl_memory_desc_destroy(x_md);
  }
};

OnednnMlp::~OnednnMlp() {
  shapes_.clear();
  if (Onednn() == nullptr) return;
  for (Layer& l : layers_) if (l.weights_md) Api().dnnl_memory_desc_destroy(l.weights_md);
}

std::string OnednnMlp::MakeShape(int64_t rows, Shape* s) const {
  const dnnl_data_type_t act_dt = bf16_ ? dnnl_bf16 : dnnl_f32;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    const bool last = l + 1 == layers_.size();
    Handles h;
    if (!Ok(Api().dnnl_primitive_attr_create(&h.attr)) || !Ok(Api().dnnl_post_ops_create(&h.po))) return "oneDNN could not create primitive attributes";
    if (!AppendActivation(h.po, layer.activation, layer.alpha)) {
      return std::string("no oneDNN post-op for ") + ActivationName(static_cast<Activation>(layer.activation));
    }
    Api().dnnl_primitive_attr_set_post_ops(h.attr, h.po);
    // Scratchpads come from each call, so concurrent calls share nothing.
    Api().dnnl_primitive_attr_set_scratchpad_mode(h.attr, dnnl_scratchpad_mode_user);
    s->src_mds.push_back(Desc(rows, layer.k, act_dt));
    s->dst_mds.push_back(Desc(rows, layer.n, last ? dnnl_f32 : act_dt));
    s->bias_mds.push_back(Desc(1, layer.n, dnnl_f32));
    dnnl_memory_desc_t w_md = layer.weights_md ? layer.weights_md : h.md(Desc(layer.k, layer.n, act_dt, dnnl_format_tag_any));
    dnnl_primitive_desc_t pd = nullptr;
    if (!Ok(Api().dnnl_matmul_primitive_desc_create(&pd, Api().engine, s->src_mds.back(), w_md, s->bias_mds.back(),
                                                    s->dst_mds.back(), h.attr))) {
      return "oneDNN has no matmul for layer " + std::to_string(l);
    }
    h.pds.push_back(pd);
    const std::string impl = ImplName(pd);
    // A reference implementation is slower than the hand kernels by far.
    if (impl.find("ref") != std::string::npos) return "oneDNN offers only " + impl + " here";
    dnnl_memory_desc_t scratch = nullptr;
    Api().dnnl_memory_desc_clone(&scratch, Api().dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    s->scratch_mds.push_back(scratch);
    s->scratch_bytes = std::max(s->scratch_bytes, Api().dnnl_memory_desc_get_size(scratch));
    dnnl_primitive_t prim = nullptr;
    if (!Ok(Api().dnnl_primitive_create(&prim, pd))) return "oneDNN could not create a matmul";
    s->prims.push_back(prim);
  }
  if (bf16_) {
    s->x_md = Desc(rows, layers_[0].k, dnnl_f32);
    dnnl_primitive_desc_t pd = nullptr;
    if (!Ok(Api().dnnl_reorder_primitive_desc_create(&pd, s->x_md, Api().engine, s->src_mds[0], Api().engine, nullptr))) {
      return "oneDNN has no fp32 -> bf16 reorder";
    }
    Handles h;
    h.pds.push_back(pd);
    if (!Ok(Api().dnnl_primitive_create(&s->to_bf16, pd))) return "oneDNN could not create a reorder";
  }
  return "";
}

std::string OnednnMlp::Pack(const std::vector<DenseLayerSpec>& specs, bool bf16) {
  if (Onednn() == nullptr) return "oneDNN unavailable: " + OnednnUnavailableReason();
  if (specs.empty()) return "no layers";
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
    layers_.push_back(std::move(layer));
    if (l + 1 < specs.size()) max_hidden_ = std::max(max_hidden_, s.n);
  }
  // One probe shape with weights of any layout: its choices become the layout.
  Shape probe;
  std::string err = MakeShape(kPackRows, &probe);
  if (!err.empty()) return err;
  dnnl_stream_t stream = ThreadStream();
  for (size_t l = 0; l < layers_.size(); ++l) {
    Layer& layer = layers_[l];
    const_dnnl_primitive_desc_t pd = nullptr;
    Api().dnnl_primitive_get_primitive_desc(probe.prims[l], &pd);
    if (l == 0) impl_ = ImplName(pd);
    Api().dnnl_memory_desc_clone(&layer.weights_md, Api().dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
    layer.weights = AlignedBuffer(Api().dnnl_memory_desc_get_size(layer.weights_md));
    Handles h;
    dnnl_memory_desc_t plain = h.md(Desc(layer.k, layer.n, dnnl_f32));
    dnnl_primitive_desc_t rpd = nullptr;
    if (!Ok(Api().dnnl_reorder_primitive_desc_create(&rpd, plain, Api().engine, layer.weights_md, Api().engine, nullptr))) {
      return "oneDNN cannot reorder layer " + std::to_string(l) + "'s weights";
    }
    h.pds.push_back(rpd);
    dnnl_memory_t src = nullptr, dst = nullptr;
    Api().dnnl_memory_create(&src, plain, Api().engine, const_cast<float*>(specs[l].weights));
    h.mems.push_back(src);
    Api().dnnl_memory_create(&dst, layer.weights_md, Api().engine, layer.weights.get());
    h.mems.push_back(dst);
    dnnl_primitive_t reorder = nullptr;
    if (!Ok(Api().dnnl_primitive_create(&reorder, rpd))) return "oneDNN could not create a weights reorder";
    const dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
    const bool done = Ok(Api().dnnl_primitive_execute(reorder, stream, 2, args)) && Ok(Api().dnnl_stream_wait(stream));
    Api().dnnl_primitive_destroy(reorder);
    if (!done) return "oneDNN failed to reorder layer " + std::to_string(l) + "'s weights";
  }
  constexpr int64_t kNever = int64_t{1} << 62;
  if (bf16_) {
    auto_min_rows_ = impl_.find("amx") != std::string::npos ? 4 : kNever;
  } else {
    auto_min_rows_ = impl_.find("avx512") != std::string::npos ? 16 : 32;
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
  std::shared_ptr<const Shape> shape = MakeShape(rows, made.get()).empty() ? made : nullptr;
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
    std::shared_ptr<void> buffer = AlignedBuffer(scratch + 2 * hidden + xbytes);
    char* base = static_cast<char*>(buffer.get());
    void* bufs[2] = {base + scratch, base + scratch + hidden};
    dnnl_stream_t stream = ThreadStream();
    Handles h;
    auto mem = [&](const_dnnl_memory_desc_t md, const void* p) {
      dnnl_memory_t m = nullptr;
      Api().dnnl_memory_create(&m, md, Api().engine, const_cast<void*>(p));
      h.mems.push_back(m);
      return m;
    };
    const void* src = x + r * in;
    if (bf16_) {
      void* xb = base + scratch + 2 * hidden;
      const dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, mem(shape->x_md, src)}, {DNNL_ARG_TO, mem(shape->src_mds[0], xb)}};
      if (!Ok(Api().dnnl_primitive_execute(shape->to_bf16, stream, 2, args))) return false;
      src = xb;
    }
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& layer = layers_[l];
      void* dst = l + 1 == layers_.size() ? static_cast<void*>(y + r * out) : bufs[l % 2];
      const dnnl_exec_arg_t args[] = {
          {DNNL_ARG_SRC, mem(shape->src_mds[l], src)},
          {DNNL_ARG_WEIGHTS, mem(layer.weights_md, layer.weights.get())},
          {DNNL_ARG_BIAS, mem(shape->bias_mds[l], layer.bias.data())},
          {DNNL_ARG_DST, mem(shape->dst_mds[l], dst)},
          {DNNL_ARG_SCRATCHPAD, mem(shape->scratch_mds[l], base)},
      };
      if (!Ok(Api().dnnl_primitive_execute(shape->prims[l], stream, 5, args))) return false;
      src = dst;
    }
    if (!Ok(Api().dnnl_stream_wait(stream))) return false;
  }
  return true;
}

}  // namespace recopt
