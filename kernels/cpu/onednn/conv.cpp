#include "kernels/cpu/onednn/conv.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace nns::ops::cpu::onednn {

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& cpu_stream() {
  static dnnl::stream s(cpu_engine());
  return s;
}

tag layout_tag(int lanes) {
  if (lanes == 0) return tag::nchw;
  if (lanes == kNhwc) return tag::nhwc;
  if (lanes == 16) return tag::nChw16c;
  if (lanes == 8) return tag::nChw8c;
  throw std::invalid_argument("onednn conv: no layout of " + std::to_string(lanes) + " lanes");
}

std::string shape_text(const ConvDesc& d) {
  return "n=" + std::to_string(d.n) + " c_in=" + std::to_string(d.c_in) + " " +
         std::to_string(d.h) + "x" + std::to_string(d.w) + " c_out=" + std::to_string(d.c_out) +
         " k=" + std::to_string(d.kh) + "x" + std::to_string(d.kw) + " s=" +
         std::to_string(d.stride_h) + " groups=" + std::to_string(d.groups);
}

// A memory object without a buffer yet (set_data_handle before each use).
memory unbound(const memory::desc& md) { return memory(md, cpu_engine(), DNNL_MEMORY_NONE); }
void bind(const memory& m, const void* p) { m.set_data_handle(const_cast<void*>(p)); }

// Runs a primitive through the C API with the arguments on the stack: the C++ execute takes
// an std::unordered_map, an allocation per call, and the plan allows none in steady state.
void run(const dnnl::primitive& prim, std::initializer_list<std::pair<int, const memory*>> args) {
  dnnl_exec_arg_t a[8];
  int n = 0;
  for (const auto& [k, m] : args) a[n++] = {k, m->get()};
  const dnnl_status_t st = dnnl_primitive_execute(prim.get(), cpu_stream().get(), n, a);
  if (st != dnnl_success)
    throw std::runtime_error("onednn: primitive execution failed (status " +
                             std::to_string(int(st)) + ")");
}

}  // namespace

struct Conv::Impl {
  ConvDesc d;
  ConvOptions o;
  memory::desc src_md, dst_md, bias_md, plain_w_md;
  dnnl::convolution_forward::primitive_desc fwd_pd;
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data::primitive_desc bwd_d_pd;
  dnnl::convolution_backward_data bwd_d;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd;
  dnnl::convolution_backward_weights bwd_w;
  dnnl::reorder w_to_fwd, w_to_bwd, dw_to_plain;
  size_t scratch = 0;
  std::string impl;
  // Memory objects made once, pointed at the caller's buffers before each call.
  memory src, dst, bias, plain_w, w_fwd, w_bwd, dw, sp_fwd, sp_bwd_d, sp_bwd_w;
  // bf16: the rounded copies of the source and of the incoming gradient, at these offsets of
  // the scratch (after the primitives' own scratchpad), and the reorders that make them.
  size_t src_lo_at = 0, dy_lo_at = 0;
  dnnl::reorder src_to_lo, dy_to_lo;
  memory src_lo, dy_lo;

  // The source the primitives read: the caller's, or (bf16) its rounded copy in the scratch.
  const memory& lo_src(const float* p, void* scratch) const {
    bind(src, p);
    if (!o.bf16) return src;
    bind(src_lo, static_cast<char*>(scratch) + src_lo_at);
    run(src_to_lo, {{DNNL_ARG_FROM, &src}, {DNNL_ARG_TO, &src_lo}});
    return src_lo;
  }
  const memory& lo_dy(const float* p, void* scratch) const {
    bind(dst, p);
    if (!o.bf16) return dst;
    bind(dy_lo, static_cast<char*>(scratch) + dy_lo_at);
    run(dy_to_lo, {{DNNL_ARG_FROM, &dst}, {DNNL_ARG_TO, &dy_lo}});
    return dy_lo;
  }
};

Conv::Conv(const ConvDesc& d, const ConvOptions& o) : p_(std::make_unique<Impl>()) {
  Impl& s = *p_;
  s.d = d;
  s.o = o;
  const auto& eng = cpu_engine();
  const memory::dims src_dims = {d.n, d.c_in, d.h, d.w};
  const memory::dims dst_dims = {d.n, d.c_out, d.out_h(), d.out_w()};
  const bool grouped = d.groups > 1;
  const memory::dims w_dims =
      grouped ? memory::dims{d.groups, d.c_out / d.groups, d.c_in / d.groups, d.kh, d.kw}
              : memory::dims{d.c_out, d.c_in, d.kh, d.kw};
  s.src_md = memory::desc(src_dims, dt::f32, layout_tag(d.src_lanes));
  s.dst_md = memory::desc(dst_dims, dt::f32, layout_tag(d.dst_lanes));
  s.bias_md = memory::desc({d.c_out}, dt::f32, tag::x);
  s.plain_w_md = memory::desc(w_dims, dt::f32, grouped ? tag::goihw : tag::oihw);
  // What the primitives read: fp32, or with bf16 the rounded source, weights and dst gradient.
  const dt lo = o.bf16 ? dt::bf16 : dt::f32;
  if (o.bf16 && !bf16_supported())
    throw std::runtime_error("onednn conv (" + shape_text(d) +
                             "): bf16 needs a CPU with avx512_bf16 and oneDNN not limited to AVX2");
  const memory::desc src_lo_md(src_dims, lo, layout_tag(d.src_lanes));
  const memory::desc dst_lo_md(dst_dims, lo, layout_tag(d.dst_lanes));
  const memory::desc any_w(w_dims, lo, tag::any);
  const memory::desc any_dw(w_dims, dt::f32, tag::any);
  const memory::dims strides = {d.stride_h, d.stride_w}, dil = {d.dil_h - 1, d.dil_w - 1};
  const memory::dims pad_l = {d.pad_t, d.pad_l}, pad_r = {d.pad_b, d.pad_r};

  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::post_ops po;
  if (o.sum) po.append_sum(1.0f);
  if (o.act == Activation::ReLU)
    po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  else if (o.act == Activation::ReLU6)
    po.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, 0.0f, 6.0f);
  else if (o.act != Activation::None)
    throw std::invalid_argument("onednn conv: unsupported activation");
  // A primitive_attr is a handle: copying it shares the object, so the forward's own.
  dnnl::primitive_attr fwd_attr;
  fwd_attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  fwd_attr.set_post_ops(po);
  const char* stage = "forward";
  try {
    const auto prop = o.training ? dnnl::prop_kind::forward_training
                                 : dnnl::prop_kind::forward_inference;
    const auto algo = dnnl::algorithm::convolution_direct;
    auto fd = o.bias ? dnnl::convolution_forward::desc(prop, algo, src_lo_md, any_w, s.bias_md,
                                                       s.dst_md, strides, dil, pad_l, pad_r)
                     : dnnl::convolution_forward::desc(prop, algo, src_lo_md, any_w, s.dst_md,
                                                       strides, dil, pad_l, pad_r);
    s.fwd_pd = dnnl::convolution_forward::primitive_desc(fd, fwd_attr, eng);
    s.fwd = dnnl::convolution_forward(s.fwd_pd);
    s.scratch = s.fwd_pd.scratchpad_desc().get_size();
    s.w_to_fwd = dnnl::reorder(
        dnnl::reorder::primitive_desc(eng, s.plain_w_md, eng, s.fwd_pd.weights_desc()));
    s.impl = std::string("fwd=") + s.fwd_pd.impl_info_str();
    // The backward primitives take a forward hint without post-ops (oneDNN 2.6 finds no
    // backward implementation for a hint with an eltwise post-op).
    dnnl::convolution_forward::primitive_desc hint = s.fwd_pd;
    if (o.sum || o.act != Activation::None)
      hint = dnnl::convolution_forward::primitive_desc(fd, attr, eng);
    if (o.backward_data) {
      stage = "backward data";
      auto bd = dnnl::convolution_backward_data::desc(algo, s.src_md, any_w, dst_lo_md, strides,
                                                      dil, pad_l, pad_r);
      s.bwd_d_pd = dnnl::convolution_backward_data::primitive_desc(bd, attr, eng, hint);
      s.bwd_d = dnnl::convolution_backward_data(s.bwd_d_pd);
      s.scratch = std::max(s.scratch, s.bwd_d_pd.scratchpad_desc().get_size());
      s.w_to_bwd = dnnl::reorder(
          dnnl::reorder::primitive_desc(eng, s.plain_w_md, eng, s.bwd_d_pd.weights_desc()));
      s.impl += std::string(" bwd_d=") + s.bwd_d_pd.impl_info_str();
    }
    if (o.backward_weights) {
      stage = "backward weights";
      auto wd = o.backward_bias
                    ? dnnl::convolution_backward_weights::desc(algo, src_lo_md, any_dw, s.bias_md,
                                                               dst_lo_md, strides, dil, pad_l,
                                                               pad_r)
                    : dnnl::convolution_backward_weights::desc(algo, src_lo_md, any_dw,
                                                               dst_lo_md, strides, dil, pad_l,
                                                               pad_r);
      s.bwd_w_pd = dnnl::convolution_backward_weights::primitive_desc(wd, attr, eng, hint);
      s.bwd_w = dnnl::convolution_backward_weights(s.bwd_w_pd);
      s.scratch = std::max(s.scratch, s.bwd_w_pd.scratchpad_desc().get_size());
      s.dw_to_plain = dnnl::reorder(
          dnnl::reorder::primitive_desc(eng, s.bwd_w_pd.diff_weights_desc(), eng, s.plain_w_md));
      s.impl += std::string(" bwd_w=") + s.bwd_w_pd.impl_info_str();
    }
    if (o.bf16) {
      stage = "bf16 conversion";
      // The rounded copies go after the primitives' scratchpad, 64-byte aligned.
      auto up = [](size_t b) { return (b + 63) / 64 * 64; };
      s.src_lo_at = up(s.scratch);
      s.dy_lo_at = s.src_lo_at + up(src_lo_md.get_size());
      s.scratch = s.dy_lo_at + up(dst_lo_md.get_size());
      // Same layout, fp32 -> bf16 (round to nearest even); a reorder that wanted a scratchpad
      // of its own would break the no-allocation rule, so it is refused.
      auto convert = [&](const memory::desc& from, const memory::desc& to) {
        dnnl::primitive_attr ra;
        ra.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        dnnl::reorder::primitive_desc rp(eng, from, eng, to, ra);
        if (rp.scratchpad_desc().get_size() != 0)
          throw std::runtime_error("the fp32 -> bf16 reorder wants a scratchpad");
        return dnnl::reorder(rp);
      };
      s.src_to_lo = convert(s.src_md, src_lo_md);
      s.dy_to_lo = convert(s.dst_md, dst_lo_md);
      s.src_lo = unbound(src_lo_md);
      s.dy_lo = unbound(dst_lo_md);
      s.impl += " bf16";
    }
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("onednn conv ") + stage + " (" + shape_text(d) +
                             "): " + e.what());
  }
  s.src = unbound(s.src_md);
  s.dst = unbound(s.dst_md);
  s.bias = unbound(s.bias_md);
  s.plain_w = unbound(s.plain_w_md);
  s.w_fwd = unbound(s.fwd_pd.weights_desc());
  s.sp_fwd = unbound(s.fwd_pd.scratchpad_desc());
  if (o.backward_data) {
    s.w_bwd = unbound(s.bwd_d_pd.weights_desc());
    s.sp_bwd_d = unbound(s.bwd_d_pd.scratchpad_desc());
  }
  if (o.backward_weights) {
    s.dw = unbound(s.bwd_w_pd.diff_weights_desc());
    s.sp_bwd_w = unbound(s.bwd_w_pd.scratchpad_desc());
  }
}

Conv::~Conv() = default;

size_t Conv::forward_weights_bytes() const { return p_->fwd_pd.weights_desc().get_size(); }
size_t Conv::backward_weights_bytes() const {
  return p_->o.backward_data ? p_->bwd_d_pd.weights_desc().get_size() : 0;
}
size_t Conv::diff_weights_bytes() const {
  return p_->o.backward_weights ? p_->bwd_w_pd.diff_weights_desc().get_size() : 0;
}
size_t Conv::scratch_bytes() const { return p_->scratch; }
std::string Conv::impl() const { return p_->impl; }

void Conv::reorder_weights(const float* oihw, void* fwd, void* bwd) const {
  const Impl& s = *p_;
  bind(s.plain_w, oihw);
  bind(s.w_fwd, fwd);
  run(s.w_to_fwd, {{DNNL_ARG_FROM, &s.plain_w}, {DNNL_ARG_TO, &s.w_fwd}});
  if (s.o.backward_data && bwd) {
    bind(s.w_bwd, bwd);
    run(s.w_to_bwd, {{DNNL_ARG_FROM, &s.plain_w}, {DNNL_ARG_TO, &s.w_bwd}});
  }
}

void Conv::forward(const float* src, const void* w, const float* bias, float* dst,
                   void* scratch) const {
  const Impl& s = *p_;
  const memory& x = s.lo_src(src, scratch);
  bind(s.w_fwd, w);
  bind(s.dst, dst);
  bind(s.sp_fwd, scratch);
  if (s.o.bias) {
    bind(s.bias, bias);
    run(s.fwd, {{DNNL_ARG_SRC, &x},
                {DNNL_ARG_WEIGHTS, &s.w_fwd},
                {DNNL_ARG_BIAS, &s.bias},
                {DNNL_ARG_DST, &s.dst},
                {DNNL_ARG_SCRATCHPAD, &s.sp_fwd}});
  } else {
    run(s.fwd, {{DNNL_ARG_SRC, &x},
                {DNNL_ARG_WEIGHTS, &s.w_fwd},
                {DNNL_ARG_DST, &s.dst},
                {DNNL_ARG_SCRATCHPAD, &s.sp_fwd}});
  }
}

void Conv::backward_data(const float* diff_dst, const void* w, float* diff_src,
                         void* scratch) const {
  const Impl& s = *p_;
  if (!s.o.backward_data) throw std::logic_error("onednn conv: built without backward data");
  const memory& dy = s.lo_dy(diff_dst, scratch);
  bind(s.w_bwd, w);
  bind(s.src, diff_src);
  bind(s.sp_bwd_d, scratch);
  run(s.bwd_d, {{DNNL_ARG_DIFF_DST, &dy},
                {DNNL_ARG_WEIGHTS, &s.w_bwd},
                {DNNL_ARG_DIFF_SRC, &s.src},
                {DNNL_ARG_SCRATCHPAD, &s.sp_bwd_d}});
}

void Conv::backward_weights(const float* src, const float* diff_dst, void* diff_w,
                            float* diff_oihw, float* diff_bias, void* scratch) const {
  const Impl& s = *p_;
  if (!s.o.backward_weights) throw std::logic_error("onednn conv: built without backward weights");
  const memory& x = s.lo_src(src, scratch);
  const memory& dy = s.lo_dy(diff_dst, scratch);
  bind(s.dw, diff_w);
  bind(s.sp_bwd_w, scratch);
  if (s.o.backward_bias) {
    bind(s.bias, diff_bias);
    run(s.bwd_w, {{DNNL_ARG_SRC, &x},
                  {DNNL_ARG_DIFF_DST, &dy},
                  {DNNL_ARG_DIFF_WEIGHTS, &s.dw},
                  {DNNL_ARG_DIFF_BIAS, &s.bias},
                  {DNNL_ARG_SCRATCHPAD, &s.sp_bwd_w}});
  } else {
    run(s.bwd_w, {{DNNL_ARG_SRC, &x},
                  {DNNL_ARG_DIFF_DST, &dy},
                  {DNNL_ARG_DIFF_WEIGHTS, &s.dw},
                  {DNNL_ARG_SCRATCHPAD, &s.sp_bwd_w}});
  }
  bind(s.plain_w, diff_oihw);
  run(s.dw_to_plain, {{DNNL_ARG_FROM, &s.dw}, {DNNL_ARG_TO, &s.plain_w}});
}

bool limit_isa_to_avx2() {
  return dnnl::set_max_cpu_isa(dnnl::cpu_isa::avx2) == dnnl::status::success;
}

bool bf16_supported() {
  static const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bf16");
  if (!cpu) return false;
  const char* env = std::getenv("NNS_CPU_ISA");
  if (env && std::string(env) == "avx2") return false;
  // oneDNN's ISA values are bit sets: a level holds every bit of the levels below it.
  const unsigned isa = unsigned(dnnl::get_effective_cpu_isa());
  const unsigned need = unsigned(dnnl::cpu_isa::avx512_core_bf16);
  return isa == unsigned(dnnl::cpu_isa::all) || (isa & need) == need;
}

std::string version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch);
}

}  // namespace nns::ops::cpu::onednn
