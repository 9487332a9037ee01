#include "core/engine/plan.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "core/engine/conv_kernel.h"
#include "core/nn/layers.h"
#include "kernels/cpu/blocked/eltwise.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/onednn/conv.h"
#include "kernels/ops.h"

namespace nns::engine {

namespace blk = ops::cpu::blocked;
using graph::Graph;
using graph::Node;
using graph::OpKind;
using graph::ValueId;
using ops::Activation;

// ------------------------------------------------------------------------------ engine choice
namespace {
CpuEngine g_engine = CpuEngine::Auto;
bool g_engine_set = false;
}  // namespace

void set_cpu_engine(CpuEngine e) {
  g_engine = e;
  g_engine_set = true;
}

CpuEngine cpu_engine() {
  if (!g_engine_set) {
    if (const char* env = std::getenv("NNS_CPU_ENGINE"); env && *env) {
      g_engine = parse_cpu_engine(env);
    }
    g_engine_set = true;
  }
  return g_engine;
}

const char* cpu_engine_name(CpuEngine e) {
  switch (e) {
    case CpuEngine::Layers: return "layers";
    case CpuEngine::Native: return "native";
    case CpuEngine::Onednn: return "onednn";
    case CpuEngine::Auto: return "auto";
  }
  return "?";
}

CpuEngine parse_cpu_engine(const std::string& s) {
  if (s == "layers") return CpuEngine::Layers;
  if (s == "native") return CpuEngine::Native;
  if (s == "onednn") return CpuEngine::Onednn;
  if (s == "auto") return CpuEngine::Auto;
  throw std::invalid_argument("unknown CPU engine '" + s +
                              "' (expected native, onednn, auto or layers)");
}

namespace {
Precision g_precision = Precision::Fp32;
}  // namespace

void set_search_precision(Precision p) {
  if (p == Precision::Bf16)
    if (std::string why = bf16_unavailable(); !why.empty())
      throw std::invalid_argument("bf16 steps: " + why);
  g_precision = p;
}

Precision search_precision() { return g_precision; }

const char* precision_name(Precision p) { return p == Precision::Bf16 ? "bf16" : "fp32"; }

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::Fp32;
  if (s == "bf16") return Precision::Bf16;
  throw std::invalid_argument("unknown precision '" + s + "' (expected fp32 or bf16)");
}

std::string bf16_unavailable(Device dev) {
  if (dev != Device::CPU) return "bf16 steps run on the CPU engine only (this run is on CUDA)";
  const CpuEngine e = cpu_engine();
  if (e == CpuEngine::Native || e == CpuEngine::Layers)
    return std::string("the CPU engine is ") + cpu_engine_name(e) +
           "; bf16 convolutions run on oneDNN (--cpu-engine onednn or auto)";
  if (!ops::cpu::onednn::bf16_supported())
    return "this CPU has no avx512_bf16 (or NNS_CPU_ISA=avx2 limits oneDNN to AVX2): bf16 "
           "would be emulated, slower than fp32";
  return "";
}

namespace {

int lanes_now() {
  return ops::cpu::cpu_isa() == ops::cpu::CpuIsa::Avx512 ? 16 : 8;
}

// Whether a BatchNorm node runs folded into the conv before it: eval mode and no gradient
// wanted for its parameters.
bool bn_foldable(const nn::BatchNorm2d* bn, bool grad) {
  return !bn->training() && !(grad && bn->param_grad());
}

Activation act_of(OpKind op) {
  return op == OpKind::Relu ? Activation::ReLU : Activation::ReLU6;
}

bool is_act(OpKind op) { return op == OpKind::Relu || op == OpKind::Relu6; }

// Auto's measured choices, per convolution spec, for the whole process.
std::mutex g_choice_mutex;
std::map<std::string, ConvChoice> g_choices;

}  // namespace

// ----------------------------------------------------------------------------------- the plan
struct Plan::Impl {
  enum class Layout { Blocked, Plain };
  struct Val {
    Layout layout = Layout::Plain;
    int lanes = 0;  // Blocked: channels per block (16, 8, or all of them: NHWC)
    Shape shape;  // concrete NCHW / [N, F] shape
    int c = 1, hw = 1;
    int64_t floats = 0;  // in this layout, padding included
    int act = -1, grad = -1;
  };
  struct Buf {
    int64_t bytes = 0;
    int first = INT_MAX, last = -1;
    int64_t offset = 0;
  };
  struct Unit {
    std::string name;
    virtual ~Unit() = default;
    virtual void forward(Impl& p) = 0;
    // Creates the gradient buffers this unit's backward writes, at backward step `step`.
    virtual void declare_backward(Impl&, int) {}
    virtual void backward(Impl&) {}
    virtual void bind(Impl&) {}
    virtual std::string what() const = 0;
  };

  const Graph* g = nullptr;
  int64_t batch = 0;
  bool grad = false;
  CpuEngine engine = CpuEngine::Auto;
  int lanes = 16;       // the ISA's vector width in floats
  bool nhwc = false;    // small-channel network: every 4-d value in NHWC (one block of C lanes)
  bool masked = false;  // some weight gradient restricted to a subset of filters
  bool bf16 = false;    // the convolutions in bf16 (a masked plan with splitter.precision bf16)
  bool packed_once = false;
  std::vector<Val> vals;
  std::vector<Buf> bufs;
  std::vector<std::unique_ptr<Unit>> units;
  int forward_steps = 0;
  char* arena = nullptr;
  size_t arena_size = 0;
  const float* input = nullptr;  // the current forward's x
  Tensor out, out_grad_in;
  std::vector<ConvChoice> choices;
  bool forward_done = false;

  ~Impl() {
    if (profile && prof_passes) print_profile();
    std::free(arena);
  }

  // Buffers and lifetimes.
  int new_buf(int64_t bytes, int step) {
    Buf b;
    b.bytes = (std::max<int64_t>(bytes, 4) + 63) / 64 * 64;
    b.first = b.last = step;
    bufs.push_back(b);
    return int(bufs.size()) - 1;
  }
  void use(int buf, int step) {
    if (buf < 0) return;
    bufs[size_t(buf)].first = std::min(bufs[size_t(buf)].first, step);
    bufs[size_t(buf)].last = std::max(bufs[size_t(buf)].last, step);
  }
  float* f(int buf) const { return reinterpret_cast<float*>(arena + bufs[size_t(buf)].offset); }
  void* raw(int buf) const { return arena + bufs[size_t(buf)].offset; }
  const float* act_ptr(ValueId v) const {
    const int b = vals[size_t(v)].act;
    return b < 0 ? input : f(b);
  }
  blk::Dims dims(ValueId v) const {
    const Val& x = vals[size_t(v)];
    return blk::Dims{int(batch), x.c, x.hw, x.lanes};
  }

  // The gradient buffer of v for a backward step that writes it: created (overwrite) the first
  // time, accumulated into afterwards.
  int grad_for_write(ValueId v, int step, bool& accumulate) {
    Val& x = vals[size_t(v)];
    accumulate = x.grad >= 0;
    if (!accumulate) x.grad = new_buf(x.floats * 4, step);
    use(x.grad, step);
    return x.grad;
  }
  // Makes `buf` (holding exactly v's gradient contribution) v's gradient, when v has none yet.
  bool adopt_grad(ValueId v, int buf, int step) {
    Val& x = vals[size_t(v)];
    if (x.grad >= 0) return false;
    x.grad = buf;
    use(buf, step);
    return true;
  }
  ValueId input_blocked = -1;  // the blocked copy of the input, when one is made
  bool wants_grad(ValueId v) const { return v != g->input() && v != input_blocked; }

  // Debugging (NNS_PLAN_GUARDS=1): every buffer its own memory followed by guard bytes, checked
  // after every step; an overrun throws naming the step.
  static constexpr int kGuardBytes = 256;
  static constexpr unsigned char kGuardByte = 0xA5;
  bool guards = std::getenv("NNS_PLAN_GUARDS") != nullptr;
  void check_guards(const std::string& after) const;
  // Profiling (NNS_PLAN_PROFILE=1): seconds per step, forward and backward, printed to stderr
  // when the plan is destroyed.
  bool profile = std::getenv("NNS_PLAN_PROFILE") != nullptr;
  std::vector<double> prof_f, prof_b;
  int64_t prof_passes = 0;
  void print_profile() const;

  void build();
  void allocate();
  void fuse_and_make_units();
  void place_values();
};

namespace {

using Impl = Plan::Impl;

// ---------------------------------------------------------------------------------- to blocked
struct ToBlockedUnit : Impl::Unit {
  ValueId x, y;
  ToBlockedUnit(ValueId x_, ValueId y_) : x(x_), y(y_) { name = "input.to_blocked"; }
  void forward(Impl& p) override { blk::to_blocked(p.dims(y), p.input, p.f(p.vals[size_t(y)].act)); }
  std::string what() const override { return "to_blocked"; }
};

// ---------------------------------------------------------------------------------------- conv
// conv [+ folded BN] [+ residual add] [+ ReLU/ReLU6], one step forward and one backward.
struct ConvUnit : Impl::Unit {
  nn::Conv2d* conv;
  nn::BatchNorm2d* bn = nullptr;  // folded
  Activation act = Activation::None;
  ValueId x, y, residual = -1;
  ConvSpec spec;
  std::unique_ptr<ConvKernel> kernel;
  int w_fwd = -1, w_bwd = -1, w_scaled = -1, bias = -1, scale = -1;
  int scratch_f = -1, scratch_b = -1, diff_w = -1, dw_plain = -1, db = -1, dx_tmp = -1;
  int step_f = -1, step_b = -1;
  bool need_dx = false, dx_accumulate = false, res_adopted = false, res_accumulate = false;
  int res_grad = -1;
  nn::WeightGrad wgrad = nn::WeightGrad::None;  // what this plan's backward computes
  nn::WeightGrad module_wgrad = nn::WeightGrad::All;  // the module's mode (frozen when None)
  std::vector<int32_t> filters;
  bool alias_residual = false;  // inference: the output overwrites the dead residual in place

  std::string what() const override {
    std::string s = std::string("conv ") + (kernel ? kernel->engine() : "?");
    if (bn) s += " +bn(folded)";
    if (residual >= 0) s += " +add";
    if (act != Activation::None) s += act == Activation::ReLU ? " +relu" : " +relu6";
    return s;
  }

  // Packs the weights (scaled by the folded BatchNorm) and the bias of this layer.
  void refresh(Impl& p) {
    const int c_out = conv->c_out;
    const float* w = conv->weight.value.f32();
    const int64_t per = conv->weight.value.numel() / c_out;
    float* sc = bn ? p.f(scale) : nullptr;
    if (bn) {
      float* sh = p.f(bias);
      ops::batchnorm_fold(ops::Context{}, c_out, bn->weight.value.f32(), bn->bias.value.f32(),
                          bn->running_mean.f32(), bn->running_var.f32(), bn->eps, sc, sh);
      // bias' = scale * b + shift
      if (conv->has_bias) {
        const float* b = conv->bias.value.f32();
        for (int o = 0; o < c_out; ++o) sh[o] += sc[o] * b[o];
      }
    } else if (conv->has_bias) {
      std::memcpy(p.f(bias), conv->bias.value.f32(), sizeof(float) * size_t(c_out));
    }
    if (bn) {
      float* ws = p.f(w_scaled);
      for (int o = 0; o < c_out; ++o)
        for (int64_t i = 0; i < per; ++i) ws[o * per + i] = w[o * per + i] * sc[o];
      w = ws;
    }
    kernel->pack(w, p.raw(w_fwd), w_bwd >= 0 ? p.raw(w_bwd) : nullptr);
  }

  void forward(Impl& p) override {
    // When weights are re-read (plan.h): always in a training plan; in a masked plan (the
    // obfuscation) the layers whose weights move; in an inference plan when it starts serving.
    bool full = !p.packed_once;
    if (!full) full = p.masked ? module_wgrad != nn::WeightGrad::None : p.grad;
    if (full) refresh(p);
    const float* res = residual >= 0 ? p.act_ptr(residual) : nullptr;
    kernel->forward(p.act_ptr(x), p.raw(w_fwd), spec.bias ? p.f(bias) : nullptr, res,
                    p.f(p.vals[size_t(y)].act), p.raw(scratch_f));
  }

  void declare_backward(Impl& p, int step) override {
    step_b = step;
    const int dy = p.vals[size_t(y)].grad;
    p.use(dy, step);
    p.use(p.vals[size_t(y)].act, step);
    if (wgrad != nn::WeightGrad::None) p.use(p.vals[size_t(x)].act, step);
    p.use(w_bwd, step);
    p.use(scale, step);
    scratch_b = p.new_buf(int64_t(kernel->scratch_bytes()), step);
    if (wgrad != nn::WeightGrad::None) {
      diff_w = p.new_buf(int64_t(kernel->diff_weights_bytes()), step);
      dw_plain = p.new_buf(conv->weight.value.numel() * 4, step);
      if (conv->has_bias) db = p.new_buf(int64_t(conv->c_out) * 4, step);
    }
    if (residual >= 0 && p.wants_grad(residual)) {
      // g = dy * act'(y) is computed in place in dy; it is the residual's gradient.
      res_adopted = p.adopt_grad(residual, dy, step);
      if (!res_adopted) res_grad = p.grad_for_write(residual, step, res_accumulate);
    }
    need_dx = spec.backward_data;
    if (need_dx) {
      const int dxb = p.grad_for_write(x, step, dx_accumulate);
      (void)dxb;
      if (dx_accumulate) dx_tmp = p.new_buf(p.vals[size_t(x)].floats * 4, step);
    }
  }

  void backward(Impl& p) override {
    float* g = p.f(p.vals[size_t(y)].grad);
    const int64_t count = p.vals[size_t(y)].floats;
    if (act != Activation::None)
      blk::act_backward(count, act, p.f(p.vals[size_t(y)].act), g, g, false);
    if (residual >= 0 && !res_adopted && res_grad >= 0) {
      if (res_accumulate)
        blk::accumulate(count, g, p.f(res_grad));
      else
        std::memcpy(p.f(res_grad), g, size_t(count) * 4);
    }
    if (wgrad != nn::WeightGrad::None) {
      float* dwp = p.f(dw_plain);
      float* dbp = db >= 0 ? p.f(db) : nullptr;
      const bool subset = wgrad == nn::WeightGrad::Subset;
      kernel->backward_weights(p.act_ptr(x), g, p.raw(diff_w), dwp, dbp,
                               subset ? filters.data() : nullptr,
                               subset ? int(filters.size()) : 0, p.raw(scratch_b));
      const int c_out = conv->c_out;
      const int64_t per = conv->weight.value.numel() / c_out;
      conv->weight.ensure_grad();
      float* dst = conv->weight.grad.f32();
      float* dstb = nullptr;
      if (conv->has_bias) {
        conv->bias.ensure_grad();
        dstb = conv->bias.grad.f32();
      }
      const float* sc = bn ? p.f(scale) : nullptr;
      auto put = [&](int o) {
        const float k = sc ? sc[o] : 1.0f;
        for (int64_t i = 0; i < per; ++i) dst[o * per + i] = dwp[o * per + i] * k;
        if (dstb) dstb[o] = dbp[o] * k;
      };
      if (wgrad == nn::WeightGrad::All)
        for (int o = 0; o < c_out; ++o) put(o);
      else
        for (int32_t o : filters) put(o);
    }
    if (need_dx) {
      const int dxg = p.vals[size_t(x)].grad;
      if (dx_accumulate) {
        kernel->backward_data(g, p.raw(w_bwd), p.f(dx_tmp), p.raw(scratch_b));
        blk::accumulate(p.vals[size_t(x)].floats, p.f(dx_tmp), p.f(dxg));
      } else {
        kernel->backward_data(g, p.raw(w_bwd), p.f(dxg), p.raw(scratch_b));
      }
    }
  }
};

// ----------------------------------------------------------------------------------------- bn
// A BatchNorm that stays a step: batch statistics (training), or eval mode with its
// parameters' gradients wanted; with its residual add and activation.
struct BnUnit : Impl::Unit {
  nn::BatchNorm2d* bn;
  bool batch_stats = true;
  Activation act = Activation::None;
  ValueId x, y, residual = -1;
  int save_mean = -1, save_invstd = -1, partial_f = -1, partial_b = -1, dx_tmp = -1, res_grad = -1;
  bool dx_accumulate = false, res_adopted = false, res_accumulate = false;

  std::string what() const override {
    std::string s = batch_stats ? "batchnorm(batch stats)" : "batchnorm(eval)";
    if (residual >= 0) s += " +add";
    if (act != Activation::None) s += act == Activation::ReLU ? " +relu" : " +relu6";
    return s;
  }

  void forward(Impl& p) override {
    const blk::Dims d = p.dims(x);
    const float* res = residual >= 0 ? p.act_ptr(residual) : nullptr;
    float* out = p.f(p.vals[size_t(y)].act);
    double* part = reinterpret_cast<double*>(p.raw(partial_f));
    if (batch_stats) {
      const bool track = bn->tracks_stats();
      blk::bn_train_forward(d, p.act_ptr(x), bn->weight.value.f32(), bn->bias.value.f32(), res,
                            act, bn->momentum, bn->eps, track ? bn->running_mean.f32() : nullptr,
                            track ? bn->running_var.f32() : nullptr, p.f(save_mean),
                            p.f(save_invstd), out, part);
      if (track) bn->num_batches_tracked.i64()[0] += 1;
    } else {
      // Eval: y = act(scale * x + shift + residual); mean/invstd kept for the parameters'
      // gradients.
      float* mean = p.f(save_mean);
      float* invstd = p.f(save_invstd);
      const int c = bn->c;
      float* sc = invstd + c;  // save_invstd holds 2c: invstd, then scale
      float* sh = mean + c;    // save_mean holds 2c: mean, then shift
      for (int i = 0; i < c; ++i) {
        mean[i] = bn->running_mean.f32()[i];
        invstd[i] = 1.0f / std::sqrt(bn->running_var.f32()[i] + bn->eps);
      }
      ops::batchnorm_fold(ops::Context{}, c, bn->weight.value.f32(), bn->bias.value.f32(),
                          bn->running_mean.f32(), bn->running_var.f32(), bn->eps, sc, sh);
      blk::affine_forward(d, p.act_ptr(x), sc, sh, res, act, out, part);
    }
  }

  void declare_backward(Impl& p, int step) override {
    const int dy = p.vals[size_t(y)].grad;
    p.use(dy, step);
    p.use(p.vals[size_t(y)].act, step);
    p.use(p.vals[size_t(x)].act, step);
    p.use(save_mean, step);
    p.use(save_invstd, step);
    partial_b = p.new_buf(blk::partial_doubles(p.dims(x), omp_get_max_threads()) * 8, step);
    if (residual >= 0 && p.wants_grad(residual)) {
      // The residual's gradient is g = dy * act'(y): written by the BN backward pass itself.
      res_grad = p.grad_for_write(residual, step, res_accumulate);
    }
    if (p.wants_grad(x)) {
      p.grad_for_write(x, step, dx_accumulate);
      if (dx_accumulate) dx_tmp = p.new_buf(p.vals[size_t(x)].floats * 4, step);
    }
  }

  void backward(Impl& p) override {
    const blk::Dims d = p.dims(x);
    const float* dy = p.f(p.vals[size_t(y)].grad);
    const float* yv = p.f(p.vals[size_t(y)].act);
    float* dx = nullptr;
    if (p.wants_grad(x)) dx = dx_accumulate ? p.f(dx_tmp) : p.f(p.vals[size_t(x)].grad);
    float* dres = res_grad >= 0 ? p.f(res_grad) : nullptr;
    float *dg = nullptr, *dbeta = nullptr;
    if (bn->param_grad()) {
      bn->weight.ensure_grad();
      bn->bias.ensure_grad();
      dg = bn->weight.grad.f32();
      dbeta = bn->bias.grad.f32();
    }
    double* part = reinterpret_cast<double*>(p.raw(partial_b));
    if (batch_stats) {
      blk::bn_train_backward(d, p.act_ptr(x), yv, dy, act, bn->weight.value.f32(),
                             p.f(save_mean), p.f(save_invstd), dx, dres, res_accumulate, dg, dbeta,
                             part);
    } else {
      const int c = bn->c;
      blk::affine_backward(d, p.act_ptr(x), yv, dy, act, p.f(save_invstd) + c, p.f(save_mean),
                           p.f(save_invstd), dx, dres, res_accumulate, dg, dbeta, part);
    }
    if (dx && dx_accumulate)
      blk::accumulate(p.vals[size_t(x)].floats, dx, p.f(p.vals[size_t(x)].grad));
  }
};

// ------------------------------------------------------------------------- add / activation
// y = act(a [+ b]) over blocked (or plain) values of one shape.
struct EltUnit : Impl::Unit {
  ValueId a, b = -1, y;
  Activation act = Activation::None;
  int ga = -1, gb = -1;
  bool a_adopted = false, a_acc = false, b_acc = false;
  std::string what() const override {
    std::string s = b >= 0 ? "add" : "act";
    if (act != Activation::None) s += act == Activation::ReLU ? " +relu" : " +relu6";
    return s;
  }
  void forward(Impl& p) override {
    blk::add_act(p.vals[size_t(y)].floats, p.act_ptr(a), b >= 0 ? p.act_ptr(b) : nullptr, act,
                 p.f(p.vals[size_t(y)].act));
  }
  void declare_backward(Impl& p, int step) override {
    const int dy = p.vals[size_t(y)].grad;
    p.use(dy, step);
    if (act != Activation::None) p.use(p.vals[size_t(y)].act, step);
    if (p.wants_grad(a)) {
      a_adopted = p.adopt_grad(a, dy, step);
      if (!a_adopted) ga = p.grad_for_write(a, step, a_acc);
    }
    if (b >= 0 && p.wants_grad(b)) gb = p.grad_for_write(b, step, b_acc);
  }
  void backward(Impl& p) override {
    const int64_t n = p.vals[size_t(y)].floats;
    float* g = p.f(p.vals[size_t(y)].grad);
    if (act != Activation::None) blk::act_backward(n, act, p.f(p.vals[size_t(y)].act), g, g, false);
    auto give = [&](int buf, bool acc) {
      if (buf < 0) return;
      if (acc)
        blk::accumulate(n, g, p.f(buf));
      else
        std::memcpy(p.f(buf), g, size_t(n) * 4);
    };
    give(ga, a_acc);
    give(gb, b_acc);
  }
};

// ------------------------------------------------------------------------------------ pooling
struct PoolUnit : Impl::Unit {
  bool max = true;
  ValueId x, y;
  blk::Pool pool;
  int argmax = -1, dx_grad = -1;
  bool acc = false;
  std::string what() const override { return max ? "maxpool" : "avgpool"; }
  void forward(Impl& p) override {
    const blk::Dims d = p.dims(x);
    if (max)
      blk::maxpool_forward(d, pool, p.act_ptr(x), p.f(p.vals[size_t(y)].act),
                           reinterpret_cast<int32_t*>(p.raw(argmax)));
    else
      blk::avgpool_forward(d, pool, p.act_ptr(x), p.f(p.vals[size_t(y)].act));
  }
  void declare_backward(Impl& p, int step) override {
    p.use(p.vals[size_t(y)].grad, step);
    p.use(argmax, step);
    if (p.wants_grad(x)) dx_grad = p.grad_for_write(x, step, acc);
  }
  void backward(Impl& p) override {
    if (dx_grad < 0) return;
    const blk::Dims d = p.dims(x);
    if (max)
      blk::maxpool_backward(d, pool, p.f(p.vals[size_t(y)].grad),
                            reinterpret_cast<const int32_t*>(p.raw(argmax)), p.f(dx_grad), acc);
    else
      blk::avgpool_backward(d, pool, p.f(p.vals[size_t(y)].grad), p.f(dx_grad), acc);
  }
};

// Global average pool: blocked [N, C, H, W] -> plain [N, C] (= [N, C, 1, 1]).
struct GapUnit : Impl::Unit {
  ValueId x, y;
  int dx_grad = -1;
  bool acc = false;
  std::string what() const override { return "global_avgpool"; }
  void forward(Impl& p) override {
    blk::global_avgpool_forward(p.dims(x), p.act_ptr(x), p.f(p.vals[size_t(y)].act));
  }
  void declare_backward(Impl& p, int step) override {
    p.use(p.vals[size_t(y)].grad, step);
    if (p.wants_grad(x)) dx_grad = p.grad_for_write(x, step, acc);
  }
  void backward(Impl& p) override {
    if (dx_grad >= 0)
      blk::global_avgpool_backward(p.dims(x), p.f(p.vals[size_t(y)].grad), p.f(dx_grad), acc);
  }
};

// Blocked [N, C, H, W] -> plain [N, C*H*W] (PyTorch's flatten order).
struct FlattenUnit : Impl::Unit {
  ValueId x, y;
  int dx_grad = -1, tmp = -1;
  bool acc = false;
  std::string what() const override { return "flatten"; }
  void forward(Impl& p) override {
    blk::from_blocked(p.dims(x), p.act_ptr(x), p.f(p.vals[size_t(y)].act));
  }
  void declare_backward(Impl& p, int step) override {
    p.use(p.vals[size_t(y)].grad, step);
    if (p.wants_grad(x)) {
      dx_grad = p.grad_for_write(x, step, acc);
      if (acc) tmp = p.new_buf(p.vals[size_t(x)].floats * 4, step);
    }
  }
  void backward(Impl& p) override {
    if (dx_grad < 0) return;
    float* dst = acc ? p.f(tmp) : p.f(dx_grad);
    blk::to_blocked(p.dims(x), p.f(p.vals[size_t(y)].grad), dst);
    if (acc) blk::accumulate(p.vals[size_t(x)].floats, dst, p.f(dx_grad));
  }
};

// A value that is the same memory as its input (flatten of a plain value, identity, dropout
// in eval mode): forward aliases, backward hands the gradient through.
struct AliasUnit : Impl::Unit {
  ValueId x, y;
  int dx_grad = -1;
  bool adopted = false, acc = false;
  std::string kind;
  std::string what() const override { return kind + " (alias)"; }
  void forward(Impl&) override {}
  void declare_backward(Impl& p, int step) override {
    const int dy = p.vals[size_t(y)].grad;
    p.use(dy, step);
    if (!p.wants_grad(x)) return;
    adopted = p.adopt_grad(x, dy, step);
    if (!adopted) dx_grad = p.grad_for_write(x, step, acc);
  }
  void backward(Impl& p) override {
    if (adopted || dx_grad < 0) return;
    const int64_t n = p.vals[size_t(x)].floats;
    if (acc)
      blk::accumulate(n, p.f(p.vals[size_t(y)].grad), p.f(dx_grad));
    else
      std::memcpy(p.f(dx_grad), p.f(p.vals[size_t(y)].grad), size_t(n) * 4);
  }
};

// Linear on plain [N, in] -> [N, out], with a ReLU/ReLU6 epilogue.
struct LinearUnit : Impl::Unit {
  nn::Linear* lin;
  Activation act = Activation::None;
  ValueId x, y;
  int dx_grad = -1, tmp = -1;
  bool acc = false;
  std::string what() const override {
    return std::string("linear") + (act == Activation::None ? "" : " +act");
  }
  void forward(Impl& p) override {
    ops::Epilogue e;
    if (lin->has_bias) e.bias = lin->bias.value.f32();
    e.act = act;
    ops::linear_forward(ops::Context{}, int(p.batch), lin->in, lin->out, p.act_ptr(x),
                        lin->weight.value.f32(), e, p.f(p.vals[size_t(y)].act));
  }
  void declare_backward(Impl& p, int step) override {
    p.use(p.vals[size_t(y)].grad, step);
    if (act != Activation::None) p.use(p.vals[size_t(y)].act, step);
    if (lin->weight_grad() != nn::WeightGrad::None) p.use(p.vals[size_t(x)].act, step);
    if (p.wants_grad(x)) {
      dx_grad = p.grad_for_write(x, step, acc);
      if (acc) tmp = p.new_buf(p.vals[size_t(x)].floats * 4, step);
    }
  }
  void backward(Impl& p) override {
    const int n = int(p.batch);
    float* g = p.f(p.vals[size_t(y)].grad);
    const int64_t count = int64_t(n) * lin->out;
    if (act != Activation::None) blk::act_backward(count, act, p.f(p.vals[size_t(y)].act), g, g, false);
    const ops::Context ctx{};
    if (lin->weight_grad() != nn::WeightGrad::None) {
      lin->weight.ensure_grad();
      float* db = nullptr;
      if (lin->has_bias) {
        lin->bias.ensure_grad();
        db = lin->bias.grad.f32();
      }
      if (lin->weight_grad() == nn::WeightGrad::All)
        ops::linear_backward_weight(ctx, n, lin->in, lin->out, p.act_ptr(x), g,
                                    lin->weight.grad.f32(), db, nullptr, 0);
      else if (!lin->weight_grad_rows().empty())
        ops::linear_backward_weight(ctx, n, lin->in, lin->out, p.act_ptr(x), g,
                                    lin->weight.grad.f32(), db, lin->weight_grad_rows().data(),
                                    int(lin->weight_grad_rows().size()));
    }
    if (dx_grad >= 0) {
      float* dst = acc ? p.f(tmp) : p.f(dx_grad);
      ops::linear_backward_data(ctx, n, lin->in, lin->out, g, lin->weight.value.f32(), dst);
      if (acc) blk::accumulate(int64_t(n) * lin->in, dst, p.f(dx_grad));
    }
  }
};

// Dropout in training mode (plain values): the module's own seed sequence.
struct DropoutUnit : Impl::Unit {
  nn::Dropout* mod;
  ValueId x, y;
  int mask = -1, dx_grad = -1, tmp = -1;
  bool acc = false;
  std::string what() const override { return "dropout"; }
  void forward(Impl& p) override {
    const int64_t n = p.vals[size_t(y)].floats;
    ops::dropout_forward(ops::Context{}, n, mod->p(), mod->next_seed(), p.act_ptr(x),
                         p.f(p.vals[size_t(y)].act), reinterpret_cast<uint8_t*>(p.raw(mask)));
  }
  void declare_backward(Impl& p, int step) override {
    p.use(p.vals[size_t(y)].grad, step);
    p.use(mask, step);
    if (p.wants_grad(x)) {
      dx_grad = p.grad_for_write(x, step, acc);
      if (acc) tmp = p.new_buf(p.vals[size_t(x)].floats * 4, step);
    }
  }
  void backward(Impl& p) override {
    if (dx_grad < 0) return;
    const int64_t n = p.vals[size_t(y)].floats;
    float* dst = acc ? p.f(tmp) : p.f(dx_grad);
    ops::dropout_backward(ops::Context{}, n, mod->p(), reinterpret_cast<const uint8_t*>(p.raw(mask)),
                          p.f(p.vals[size_t(y)].grad), dst);
    if (acc) blk::accumulate(n, dst, p.f(dx_grad));
  }
};

}  // namespace

// ------------------------------------------------------------------------ building the plan
void Plan::Impl::place_values() {
  const std::vector<Shape> shapes = g->shapes(batch);
  vals.assign(g->values().size(), Val{});
  for (size_t v = 0; v < vals.size(); ++v) {
    Val& x = vals[v];
    x.shape = shapes[v];
    if (x.shape.size() == 4) {
      x.c = int(x.shape[1]);
      x.hw = int(x.shape[2] * x.shape[3]);
    } else if (x.shape.size() == 2) {
      x.c = int(x.shape[1]);
      x.hw = 1;
    }
  }
  // oneDNN runs a convolution whose input has fewer channels than a block with its reference
  // code on the blocked layout (40x slower), but well in NHWC; so a network with such a layer
  // past its first (lenet5: 6 channels) runs in NHWC throughout, when no value has more than
  // 16 channels (one block of C lanes); otherwise in nChw{L}c.
  int widest = 0;
  bool narrow_inner = false;
  for (const Node& n : g->nodes()) {
    for (ValueId v : n.outputs)
      if (vals[size_t(v)].shape.size() == 4) widest = std::max(widest, vals[size_t(v)].c);
    if (n.op == OpKind::Conv && n.inputs[0] != g->input() && n.attr.conv.c_in < lanes)
      narrow_inner = true;
  }
  nhwc = narrow_inner && widest <= 16;
  // Layouts: the input is plain NCHW; 4-d values are blocked (NHWC in nhwc mode) but for a
  // global pool's [N, C, 1, 1] result, which is plain; 2-d values are plain.
  for (size_t v = 0; v < vals.size(); ++v) {
    Val& x = vals[v];
    const int prod = g->producer(ValueId(v));
    const bool from_gap = prod >= 0 && g->nodes()[size_t(prod)].op == OpKind::GlobalAvgPool;
    const bool blocked = x.shape.size() == 4 && ValueId(v) != g->input() && !from_gap;
    x.layout = blocked ? Layout::Blocked : Layout::Plain;
    x.lanes = blocked ? (nhwc ? x.c : lanes) : 0;
    x.floats = blocked ? blk::Dims{int(batch), x.c, x.hw, x.lanes}.size() : shape_numel(x.shape);
  }
}

std::string Plan::unsupported(const Graph& g) {
  for (const Node& n : g.nodes()) {
    auto bad = [&](const std::string& why) {
      return "node '" + n.name + "' (" + graph::op_name(n.op) + "): " + why;
    };
    const auto& in = g.value(n.inputs.at(0)).dims;
    switch (n.op) {
      case OpKind::Conv:
      case OpKind::Linear:
      case OpKind::Relu:
      case OpKind::Relu6:
      case OpKind::Identity:
      case OpKind::GlobalAvgPool:
        break;
      case OpKind::BatchNorm:
        if (in.size() != 4) return bad("only 4-d BatchNorm runs in the CPU engine");
        break;
      case OpKind::Add:
        if (g.value(n.inputs[0]).dims != g.value(n.inputs[1]).dims)
          return bad("broadcasting add is not in the CPU engine");
        break;
      case OpKind::MaxPool:
      case OpKind::AvgPool:
        if (n.attr.pool.ceil_mode) return bad("ceil_mode pooling is not in the CPU engine");
        if (n.op == OpKind::AvgPool && !n.attr.pool.count_include_pad &&
            (n.attr.pool.pad_t || n.attr.pool.pad_l || n.attr.pool.pad_b || n.attr.pool.pad_r))
          return bad("count_include_pad=false is not in the CPU engine");
        break;
      case OpKind::Flatten:
        if (n.attr.axis != 1) return bad("flatten other than at axis 1");
        break;
      case OpKind::Dropout:
        if (in.size() != 2) return bad("dropout on a 4-d value");
        break;
      default: return bad("op not in the CPU engine");
    }
  }
  return "";
}

std::string Plan::signature(const Graph& g, int64_t batch, bool grad, CpuEngine engine) {
  std::ostringstream o;
  o << batch << '|' << grad << '|' << int(engine) << '|' << lanes_now() << '|'
    << int(g_precision) << '|';
  for (const Node& n : g.nodes()) {
    if (auto* c = dynamic_cast<nn::Conv2d*>(n.module)) {
      o << 'c' << int(c->weight_grad());
      if (c->weight_grad() == nn::WeightGrad::Subset)
        for (int32_t f : c->weight_grad_filters()) o << ',' << f;
    } else if (auto* l = dynamic_cast<nn::Linear*>(n.module)) {
      o << 'l' << int(l->weight_grad());
      if (l->weight_grad() == nn::WeightGrad::Subset)
        for (int32_t r : l->weight_grad_rows()) o << ',' << r;
    } else if (auto* b = dynamic_cast<nn::BatchNorm2d*>(n.module)) {
      o << 'b' << b->training() << b->tracks_stats() << b->param_grad();
    } else if (auto* d = dynamic_cast<nn::Dropout*>(n.module)) {
      o << 'd' << d->active();
    }
    o << ';';
  }
  return o.str();
}

void Plan::Impl::fuse_and_make_units() {
  const auto& nodes = g->nodes();
  const size_t nn_ = nodes.size();
  std::vector<bool> done(nn_, false);
  // The single consumer node of value v when it is not yet part of a unit, or -1.
  auto sole_consumer = [&](ValueId v) -> int {
    if (v == g->output()) return -1;
    auto c = g->consumers(v);
    return c.size() == 1 && !done[size_t(c[0])] ? c[0] : -1;
  };
  // Folds into the unit that produces `cur` the Add that is its sole consumer (the Add's other
  // input becomes `residual`; x + x is left alone) and then an activation; returns the unit's
  // output and moves `last` to the last node folded.
  auto add_and_act = [&](ValueId cur, size_t& last, ValueId& residual, Activation& act) {
    int next = sole_consumer(cur);
    if (next >= 0 && nodes[size_t(next)].op == OpKind::Add &&
        nodes[size_t(next)].inputs[0] != nodes[size_t(next)].inputs[1]) {
      const Node& add = nodes[size_t(next)];
      residual = add.inputs[0] == cur ? add.inputs[1] : add.inputs[0];
      done[size_t(next)] = true;
      last = size_t(next);
      cur = add.outputs[0];
      next = sole_consumer(cur);
    }
    if (next >= 0 && is_act(nodes[size_t(next)].op)) {
      act = act_of(nodes[size_t(next)].op);
      done[size_t(next)] = true;
      last = size_t(next);
      cur = nodes[size_t(next)].outputs[0];
    }
    return cur;
  };
  struct Pending {
    size_t order;
    std::unique_ptr<Unit> unit;
  };
  std::vector<Pending> pending;

  for (size_t i = 0; i < nn_; ++i) {
    if (done[i]) continue;
    const Node& n = nodes[i];
    done[i] = true;
    size_t last = i;
    std::unique_ptr<Unit> unit;
    switch (n.op) {
      case OpKind::Conv: {
        auto u = std::make_unique<ConvUnit>();
        u->name = n.name;
        u->conv = static_cast<nn::Conv2d*>(n.module);
        u->x = n.inputs[0];
        ValueId cur = n.outputs[0];
        int next = sole_consumer(cur);
        if (next >= 0 && nodes[size_t(next)].op == OpKind::BatchNorm) {
          auto* bn = static_cast<nn::BatchNorm2d*>(nodes[size_t(next)].module);
          if (bn_foldable(bn, grad)) {
            u->bn = bn;
            done[size_t(next)] = true;
            last = size_t(next);
            cur = nodes[size_t(next)].outputs[0];
          }
        }
        u->y = add_and_act(cur, last, u->residual, u->act);
        unit = std::move(u);
        break;
      }
      case OpKind::BatchNorm: {
        auto* bn = static_cast<nn::BatchNorm2d*>(n.module);
        auto u = std::make_unique<BnUnit>();
        u->name = n.name;
        u->bn = bn;
        u->batch_stats = bn->training();
        u->x = n.inputs[0];
        u->y = add_and_act(n.outputs[0], last, u->residual, u->act);
        unit = std::move(u);
        break;
      }
      case OpKind::Add:
      case OpKind::Relu:
      case OpKind::Relu6: {
        auto u = std::make_unique<EltUnit>();
        u->name = n.name;
        u->a = n.inputs[0];
        ValueId cur = n.outputs[0];
        if (n.op == OpKind::Add) {
          u->b = n.inputs[1];
          int next = sole_consumer(cur);
          if (next >= 0 && is_act(nodes[size_t(next)].op)) {
            u->act = act_of(nodes[size_t(next)].op);
            done[size_t(next)] = true;
            last = size_t(next);
            cur = nodes[size_t(next)].outputs[0];
          }
        } else {
          u->act = act_of(n.op);
        }
        u->y = cur;
        unit = std::move(u);
        break;
      }
      case OpKind::MaxPool:
      case OpKind::AvgPool: {
        auto u = std::make_unique<PoolUnit>();
        u->name = n.name;
        u->max = n.op == OpKind::MaxPool;
        u->x = n.inputs[0];
        u->y = n.outputs[0];
        const auto& a = n.attr.pool;
        const Val& xv = vals[size_t(u->x)];
        const Val& yv = vals[size_t(u->y)];
        u->pool = blk::Pool{int(xv.shape[2]), int(xv.shape[3]), a.kh, a.kw, a.stride_h,
                            a.stride_w, a.pad_t, a.pad_l, int(yv.shape[2]), int(yv.shape[3])};
        unit = std::move(u);
        break;
      }
      case OpKind::GlobalAvgPool: {
        auto u = std::make_unique<GapUnit>();
        u->name = n.name;
        u->x = n.inputs[0];
        u->y = n.outputs[0];
        unit = std::move(u);
        break;
      }
      case OpKind::Flatten:
      case OpKind::Identity:
      case OpKind::Dropout: {
        const ValueId x = n.inputs[0], y = n.outputs[0];
        auto* drop = n.op == OpKind::Dropout ? static_cast<nn::Dropout*>(n.module) : nullptr;
        if (drop && drop->active()) {
          auto u = std::make_unique<DropoutUnit>();
          u->name = n.name;
          u->mod = drop;
          u->x = x;
          u->y = y;
          unit = std::move(u);
        } else if (n.op == OpKind::Flatten && vals[size_t(x)].layout == Layout::Blocked) {
          auto u = std::make_unique<FlattenUnit>();
          u->name = n.name;
          u->x = x;
          u->y = y;
          unit = std::move(u);
        } else {
          if (vals[size_t(x)].layout != vals[size_t(y)].layout)
            throw std::invalid_argument("engine: node '" + n.name + "' changes layout");
          auto u = std::make_unique<AliasUnit>();
          u->name = n.name;
          u->kind = graph::op_name(n.op);
          u->x = x;
          u->y = y;
          unit = std::move(u);
        }
        break;
      }
      case OpKind::Linear: {
        auto u = std::make_unique<LinearUnit>();
        u->name = n.name;
        u->lin = static_cast<nn::Linear*>(n.module);
        u->x = n.inputs[0];
        ValueId cur = n.outputs[0];
        int next = sole_consumer(cur);
        if (next >= 0 && is_act(nodes[size_t(next)].op)) {
          u->act = act_of(nodes[size_t(next)].op);
          done[size_t(next)] = true;
          last = size_t(next);
          cur = nodes[size_t(next)].outputs[0];
        }
        u->y = cur;
        unit = std::move(u);
        break;
      }
      default:
        throw std::invalid_argument("engine: node '" + n.name + "' (" + graph::op_name(n.op) +
                                    ") is not in the CPU engine");
    }
    pending.push_back({last, std::move(unit)});
  }
  std::stable_sort(pending.begin(), pending.end(),
                   [](const Pending& a, const Pending& b) { return a.order < b.order; });

  // Inputs read in blocked layout: a conv on the graph input reads it plain when it has few
  // channels (oneDNN's first-layer kernels) and writes blocks; every other reader needs the
  // blocked (or NHWC) copy. With one channel, NCHW is NHWC: the input itself serves.
  const ValueId in = g->input();
  Val& inv = vals[size_t(in)];
  bool need_blocked_input = false;
  auto plain_stem = [&](ConvUnit* c) {
    return !nhwc && inv.c <= 4 && c->conv->groups == 1;
  };
  for (auto& pu : pending) {
    Unit* u = pu.unit.get();
    auto reads_input = [&](ValueId v) { return v == in; };
    if (auto* c = dynamic_cast<ConvUnit*>(u)) {
      if (reads_input(c->x) && !plain_stem(c)) need_blocked_input = true;
      if (c->residual == in) need_blocked_input = true;
    } else if (auto* b = dynamic_cast<BnUnit*>(u)) {
      if (reads_input(b->x) || b->residual == in) need_blocked_input = true;
    } else if (auto* e = dynamic_cast<EltUnit*>(u)) {
      if (reads_input(e->a) || e->b == in) need_blocked_input = true;
    } else if (auto* pl = dynamic_cast<PoolUnit*>(u)) {
      if (reads_input(pl->x)) need_blocked_input = true;
    } else if (auto* gp = dynamic_cast<GapUnit*>(u)) {
      if (reads_input(gp->x)) need_blocked_input = true;
    } else if (auto* f = dynamic_cast<FlattenUnit*>(u)) {
      if (reads_input(f->x)) need_blocked_input = true;
    }
  }
  if (need_blocked_input && inv.shape.size() != 4)
    throw std::invalid_argument("engine: the input is not 4-d");
  if (need_blocked_input && nhwc && inv.c == 1) {
    // [N, 1, H, W] is the same memory in NCHW and NHWC.
    inv.layout = Layout::Blocked;
    inv.lanes = 1;
  } else if (need_blocked_input) {
    Val copy = inv;
    copy.layout = Layout::Blocked;
    copy.lanes = nhwc ? inv.c : lanes;
    copy.floats = blk::Dims{int(batch), inv.c, inv.hw, copy.lanes}.size();
    vals.push_back(copy);
    input_blocked = ValueId(vals.size() - 1);
    auto redirect = [&](ValueId& v) {
      if (v == in) v = input_blocked;
    };
    for (auto& pu : pending) {
      Unit* u = pu.unit.get();
      if (auto* c = dynamic_cast<ConvUnit*>(u)) {
        if (!plain_stem(c)) redirect(c->x);
        redirect(c->residual);
      } else if (auto* b = dynamic_cast<BnUnit*>(u)) {
        redirect(b->x);
        redirect(b->residual);
      } else if (auto* e = dynamic_cast<EltUnit*>(u)) {
        redirect(e->a);
        redirect(e->b);
      } else if (auto* pl = dynamic_cast<PoolUnit*>(u)) {
        redirect(pl->x);
      } else if (auto* gp = dynamic_cast<GapUnit*>(u)) {
        redirect(gp->x);
      } else if (auto* f = dynamic_cast<FlattenUnit*>(u)) {
        redirect(f->x);
      }
    }
    units.push_back(std::make_unique<ToBlockedUnit>(in, input_blocked));
  }
  for (auto& pu : pending) units.push_back(std::move(pu.unit));
}

void Plan::Impl::build() {
  // NNS_CPU_ISA=avx2 holds oneDNN to AVX2 too (the AVX2 line of the comparison; clusters
  // without AVX-512), before its first primitive. A run-time set_cpu_isa (tests) does not.
  static const bool onednn_limited = [] {
    const char* env = std::getenv("NNS_CPU_ISA");
    return env && std::string(env) == "avx2" && ops::cpu::onednn::limit_isa_to_avx2();
  }();
  (void)onednn_limited;
  lanes = lanes_now();
  place_values();
  // masked: a weight gradient restricted to a subset (the obfuscation step).
  for (const Node& n : g->nodes()) {
    if (auto* c = dynamic_cast<nn::Conv2d*>(n.module))
      masked |= c->weight_grad() == nn::WeightGrad::Subset;
    if (auto* l = dynamic_cast<nn::Linear*>(n.module))
      masked |= l->weight_grad() == nn::WeightGrad::Subset;
  }
  // The search's steps in bf16 (plan.h): masked plans with a gradient.
  bf16 = grad && masked && g_precision == Precision::Bf16;
  if (bf16 && engine == CpuEngine::Native)
    throw std::invalid_argument("engine: bf16 steps run on oneDNN: --cpu-engine onednn or auto");
  fuse_and_make_units();

  // Forward declarations: activation buffers, packed weights, scratch.
  const int U = int(units.size());
  forward_steps = U;
  const int total = grad ? 2 * U + 1 : U;
  auto act_buf = [&](ValueId v, int step) {
    Val& x = vals[size_t(v)];
    if (x.act < 0) x.act = new_buf(x.floats * 4, step);
    use(x.act, step);
    return x.act;
  };
  for (int s = 0; s < U; ++s) {
    Unit* u = units[size_t(s)].get();
    if (auto* t = dynamic_cast<ToBlockedUnit*>(u)) {
      act_buf(t->y, s);
    } else if (auto* c = dynamic_cast<ConvUnit*>(u)) {
      ConvSpec& sp = c->spec;
      const Val& xv = vals[size_t(c->x)];
      const Node* node = nullptr;
      for (const Node& n : g->nodes())
        if (n.module == c->conv) node = &n;
      const auto& a = node->attr.conv;
      sp.n = int(batch), sp.c_in = a.c_in, sp.h = int(xv.shape[2]), sp.w = int(xv.shape[3]);
      sp.c_out = a.c_out, sp.kh = a.kh, sp.kw = a.kw, sp.stride_h = a.stride_h,
      sp.stride_w = a.stride_w;
      sp.pad_t = a.pad_t, sp.pad_l = a.pad_l, sp.pad_b = a.pad_b, sp.pad_r = a.pad_r;
      sp.dil_h = a.dil_h, sp.dil_w = a.dil_w, sp.groups = a.groups;
      sp.src_lanes = xv.layout == Layout::Plain ? 0 : (nhwc ? kNhwc : xv.lanes);
      sp.dst_lanes = nhwc ? kNhwc : vals[size_t(c->y)].lanes;
      sp.bias = c->conv->has_bias || c->bn != nullptr;
      sp.residual = c->residual >= 0;
      sp.act = c->act;
      c->module_wgrad = c->conv->weight_grad();
      c->wgrad = grad ? c->module_wgrad : nn::WeightGrad::None;
      c->filters = c->conv->weight_grad_filters();
      std::sort(c->filters.begin(), c->filters.end());
      c->filters.erase(std::unique(c->filters.begin(), c->filters.end()), c->filters.end());
      if (c->wgrad == nn::WeightGrad::Subset && c->filters.empty()) c->wgrad = nn::WeightGrad::None;
      sp.training = grad;
      sp.backward_data = grad && wants_grad(c->x);
      sp.backward_weights = c->wgrad != nn::WeightGrad::None;
      sp.backward_bias = sp.backward_weights && c->conv->has_bias;
      sp.bf16 = bf16;
      // The engine: oneDNN, our kernels, or (auto) the faster of the two, measured.
      ConvChoice ch;
      ch.node = c->name;
      const int nf = c->wgrad == nn::WeightGrad::Subset ? int(c->filters.size()) : 0;
      c->kernel = choose_conv_kernel(sp, engine != CpuEngine::Onednn, engine == CpuEngine::Auto,
                                     nf, ch);
      choices.push_back(ch);
      // In an inference plan the output may overwrite the residual in place when nothing reads
      // the residual later (its other readers ran before: identity shortcuts).
      c->w_fwd = new_buf(int64_t(c->kernel->fwd_weights_bytes()), 0);
      use(c->w_fwd, total);
      if (sp.backward_data) {
        c->w_bwd = new_buf(int64_t(c->kernel->bwd_weights_bytes()), 0);
        use(c->w_bwd, total);
      }
      if (c->bn) {
        c->w_scaled = new_buf(c->conv->weight.value.numel() * 4, 0);
        use(c->w_scaled, total);
        c->scale = new_buf(int64_t(c->conv->c_out) * 4, 0);
        use(c->scale, total);
      }
      if (sp.bias) {
        c->bias = new_buf(int64_t(c->conv->c_out) * 4, 0);
        use(c->bias, total);
      }
      c->scratch_f = new_buf(int64_t(c->kernel->scratch_bytes()), s);
      if (c->x != g->input()) use(vals[size_t(c->x)].act, s);
      if (c->residual >= 0) use(vals[size_t(c->residual)].act, s);
      act_buf(c->y, s);
      c->step_f = s;
    } else if (auto* b = dynamic_cast<BnUnit*>(u)) {
      use(vals[size_t(b->x)].act, s);
      if (b->residual >= 0) use(vals[size_t(b->residual)].act, s);
      const int c2 = 2 * b->bn->c;
      b->save_mean = new_buf(int64_t(c2) * 4, s);
      b->save_invstd = new_buf(int64_t(c2) * 4, s);
      b->partial_f = new_buf(blk::partial_doubles(dims(b->x), omp_get_max_threads()) * 8, s);
      act_buf(b->y, s);
    } else if (auto* e = dynamic_cast<EltUnit*>(u)) {
      use(vals[size_t(e->a)].act, s);
      if (e->b >= 0) use(vals[size_t(e->b)].act, s);
      act_buf(e->y, s);
    } else if (auto* pl = dynamic_cast<PoolUnit*>(u)) {
      use(vals[size_t(pl->x)].act, s);
      act_buf(pl->y, s);
      if (pl->max) pl->argmax = new_buf(vals[size_t(pl->y)].floats * 4, s);
    } else if (auto* gp = dynamic_cast<GapUnit*>(u)) {
      use(vals[size_t(gp->x)].act, s);
      act_buf(gp->y, s);
    } else if (auto* f = dynamic_cast<FlattenUnit*>(u)) {
      use(vals[size_t(f->x)].act, s);
      act_buf(f->y, s);
    } else if (auto* al = dynamic_cast<AliasUnit*>(u)) {
      if (al->x == g->input()) throw std::invalid_argument("engine: the input is aliased");
      vals[size_t(al->y)].act = vals[size_t(al->x)].act;
      use(vals[size_t(al->y)].act, s);
    } else if (auto* l = dynamic_cast<LinearUnit*>(u)) {
      use(vals[size_t(l->x)].act, s);
      act_buf(l->y, s);
    } else if (auto* d = dynamic_cast<DropoutUnit*>(u)) {
      use(vals[size_t(d->x)].act, s);
      act_buf(d->y, s);
      d->mask = new_buf(vals[size_t(d->y)].floats, s);
    }
  }
  // The output stays readable after the forward (and through the backward).
  const ValueId out_v = g->output();
  if (vals[size_t(out_v)].layout != Layout::Plain)
    throw std::invalid_argument("engine: the output is not a plain [N, F] value");
  use(vals[size_t(out_v)].act, total);
  // In-place residuals in inference plans: the conv writes over a residual nobody reads later.
  if (!grad) {
    for (int s = 0; s < U; ++s) {
      auto* c = dynamic_cast<ConvUnit*>(units[size_t(s)].get());
      if (!c || c->residual < 0 || c->residual == g->input()) continue;
      const int rb = vals[size_t(c->residual)].act;
      if (bufs[size_t(rb)].last != s) continue;  // read after this step
      const int yb = vals[size_t(c->y)].act;
      if (bufs[size_t(rb)].bytes != bufs[size_t(yb)].bytes || bufs[size_t(yb)].first != s) continue;
      // y takes the residual's buffer.
      for (Val& v : vals)
        if (v.act == yb) v.act = rb;
      use(rb, bufs[size_t(yb)].last);
      bufs[size_t(yb)].first = INT_MAX;  // unused
      bufs[size_t(yb)].last = -1;
      c->alias_residual = true;
    }
  }
  if (grad) {
    // The output's gradient arrives first; then every unit's backward, last unit first.
    const int s0 = U;
    Val& ov = vals[size_t(out_v)];
    ov.grad = new_buf(ov.floats * 4, s0);
    for (int i = U - 1; i >= 0; --i) {
      const int step = U + 1 + (U - 1 - i);
      Unit* u = units[size_t(i)].get();
      if (dynamic_cast<ToBlockedUnit*>(u)) continue;
      u->declare_backward(*this, step);
    }
    for (size_t v = 0; v < vals.size(); ++v)
      if (vals[v].act >= 0 && vals[v].grad < 0 && wants_grad(ValueId(v)))
        throw std::logic_error("engine: no gradient reaches value '" +
                               (v < g->values().size() ? g->values()[v].name : std::string("?")) +
                               "'");
  }
  allocate();
  for (auto& u : units) u->bind(*this);
  out = Tensor::wrap(f(vals[size_t(out_v)].act), vals[size_t(out_v)].shape);
}

void Plan::Impl::allocate() {
  // Biggest first, each at the lowest offset free over its whole lifetime.
  std::vector<int> order;
  for (size_t i = 0; i < bufs.size(); ++i)
    if (bufs[i].last >= 0) order.push_back(int(i));
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return bufs[size_t(a)].bytes > bufs[size_t(b)].bytes; });
  std::vector<int> placed;
  int64_t top = 0;
  for (int i : order) {
    Buf& b = bufs[size_t(i)];
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (int j : placed) {
      const Buf& o = bufs[size_t(j)];
      if (guards || (o.first <= b.last && b.first <= o.last))
        busy.emplace_back(o.offset, o.offset + o.bytes + (guards ? kGuardBytes : 0));
    }
    std::sort(busy.begin(), busy.end());
    int64_t at = 0;
    for (auto [s, e] : busy) {
      if (at + b.bytes <= s) break;
      at = std::max(at, e);
    }
    b.offset = at;
    top = std::max(top, at + b.bytes + (guards ? kGuardBytes : 0));
    placed.push_back(i);
  }
  arena_size = size_t(std::max<int64_t>(top, 64));
  arena = static_cast<char*>(std::aligned_alloc(64, (arena_size + 63) / 64 * 64));
  if (!arena) throw std::bad_alloc();
  std::memset(arena, 0, arena_size);  // touch every page now, not while running
  if (guards)
    for (const Buf& b : bufs)
      if (b.last >= 0) std::memset(arena + b.offset + b.bytes, kGuardByte, kGuardBytes);
}

void Plan::Impl::print_profile() const {
  double tf = 0, tb = 0;
  for (size_t i = 0; i < units.size(); ++i) tf += prof_f[i], tb += prof_b[i];
  std::fprintf(stderr, "plan profile: batch %lld, %lld passes, %.3f ms forward + %.3f ms backward per pass\n",
               (long long)batch, (long long)prof_passes, 1e3 * tf / double(prof_passes),
               1e3 * tb / double(prof_passes));
  for (size_t i = 0; i < units.size(); ++i)
    std::fprintf(stderr, "  %-28s %-40s fwd %8.3f ms  bwd %8.3f ms\n", units[i]->name.c_str(),
                 units[i]->what().c_str(), 1e3 * prof_f[i] / double(prof_passes),
                 1e3 * prof_b[i] / double(prof_passes));
}

void Plan::Impl::check_guards(const std::string& after) const {
  for (size_t i = 0; i < bufs.size(); ++i) {
    const Buf& b = bufs[i];
    if (b.last < 0) continue;
    const unsigned char* g = reinterpret_cast<const unsigned char*>(arena + b.offset + b.bytes);
    for (int k = 0; k < kGuardBytes; ++k)
      if (g[k] != kGuardByte)
        throw std::logic_error("engine: buffer " + std::to_string(i) + " (" +
                               std::to_string(b.bytes) + " bytes, steps " +
                               std::to_string(b.first) + ".." + std::to_string(b.last) +
                               ") overrun at byte " + std::to_string(k) + " after " + after);
  }
}

// ------------------------------------------------------------------------------- public API
Plan::Plan(const Graph& g, int64_t batch, bool grad, CpuEngine engine)
    : p_(std::make_unique<Impl>()) {
  if (engine == CpuEngine::Layers)
    throw std::invalid_argument("engine: a plan needs the native, onednn or auto engine");
  if (std::string why = unsupported(g); !why.empty()) throw std::invalid_argument("engine: " + why);
  if (batch < 1) throw std::invalid_argument("engine: batch must be at least 1");
  p_->g = &g;
  p_->batch = batch;
  p_->grad = grad;
  p_->engine = engine;
  p_->build();
}

Plan::~Plan() = default;

const Tensor& Plan::forward(const Tensor& x) {
  Impl& p = *p_;
  const Shape want = p.vals[size_t(p.g->input())].shape;
  if (x.device() != Device::CPU || x.dtype() != DType::F32 || x.shape() != want)
    throw std::invalid_argument("engine: plan for input " + shape_str(want) + " given " +
                                shape_str(x.shape()));
  p.input = x.f32();
  if (p.profile) p.prof_f.resize(p.units.size()), p.prof_b.resize(p.units.size()), ++p.prof_passes;
  for (size_t i = 0; i < p.units.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    p.units[i]->forward(p);
    if (p.profile)
      p.prof_f[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (p.guards) p.check_guards(p.units[i]->name + " forward");
  }
  p.packed_once = true;
  p.forward_done = true;
  return p.out;
}

void Plan::backward(const Tensor& dy) {
  Impl& p = *p_;
  if (!p.grad) throw std::logic_error("engine: backward through a plan built without gradients");
  if (!p.forward_done) throw std::logic_error("engine: backward before forward");
  const Impl::Val& ov = p.vals[size_t(p.g->output())];
  if (dy.shape() != ov.shape)
    throw std::invalid_argument("engine: output gradient " + shape_str(dy.shape()) +
                                ", expected " + shape_str(ov.shape));
  std::memcpy(p.f(ov.grad), dy.f32(), size_t(ov.floats) * 4);
  for (size_t i = p.units.size(); i-- > 0;) {
    const auto t0 = std::chrono::steady_clock::now();
    p.units[i]->backward(p);
    if (p.profile)
      p.prof_b[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (p.guards) p.check_guards(p.units[i]->name + " backward");
  }
  p.forward_done = false;
}

void Plan::weights_changed() { p_->packed_once = false; }

std::vector<float> Plan::value(ValueId v, bool grad) const {
  const Impl& p = *p_;
  const Impl::Val& x = p.vals.at(size_t(v));
  const int b = grad ? x.grad : x.act;
  if (b < 0) return {};
  std::vector<float> out(size_t(shape_numel(x.shape)));
  if (x.layout == Impl::Layout::Blocked)
    blk::from_blocked(p.dims(v), p.f(b), out.data());
  else
    std::memcpy(out.data(), p.f(b), out.size() * 4);
  return out;
}

int64_t Plan::batch() const { return p_->batch; }
size_t Plan::arena_bytes() const { return p_->arena_size; }
const std::vector<ConvChoice>& Plan::conv_choices() const { return p_->choices; }

std::string Plan::describe() const {
  std::ostringstream o;
  for (const auto& u : p_->units) o << u->name << ": " << u->what() << "\n";
  o << "arena " << p_->arena_size / (1 << 20) << " MiB (" << p_->arena_size << " bytes), "
    << p_->units.size() << " steps, " << (p_->nhwc ? std::string("NHWC") : "nChw" + std::to_string(p_->lanes) + "c") << "\n";
  for (const auto& c : p_->choices) o << "  " << c.node << ": " << c.engine << " " << c.impl << "\n";
  return o.str();
}

}  // namespace nns::engine
