#include "core/engine/conv_kernel.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include <omp.h>

#include "core/engine/plan.h"

#include "kernels/cpu/blocked/conv_blocked.h"
#include "kernels/cpu/onednn/conv.h"

namespace nns::engine {

std::string ConvSpec::key() const {
  std::string k;
  for (int v : {n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_t, pad_l, pad_b, pad_r,
                dil_h, dil_w, groups, src_lanes, dst_lanes, int(bias), int(residual), int(act),
                int(training), int(backward_data), int(backward_weights), int(backward_bias),
                int(bf16)})
    k += std::to_string(v) + ",";
  return k;
}

namespace {

class OnednnConv : public ConvKernel {
 public:
  explicit OnednnConv(const ConvSpec& s) : s_(s), conv_(desc(s), options(s)) {}
  const char* engine() const override { return "onednn"; }
  std::string impl() const override { return conv_.impl(); }
  size_t fwd_weights_bytes() const override { return conv_.forward_weights_bytes(); }
  size_t bwd_weights_bytes() const override { return conv_.backward_weights_bytes(); }
  size_t diff_weights_bytes() const override { return conv_.diff_weights_bytes(); }
  size_t scratch_bytes() const override { return conv_.scratch_bytes(); }
  void pack(const float* oihw, void* fwd, void* bwd) const override {
    conv_.reorder_weights(oihw, fwd, bwd);
  }
  void forward(const float* src, const void* w, const float* bias, const float* residual,
               float* dst, void* scratch) const override {
    // oneDNN's sum post-op adds what dst holds.
    if (s_.residual && residual != dst) {
      const size_t L = s_.dst_lanes == kNhwc ? size_t(s_.c_out) : size_t(s_.dst_lanes);
      const size_t bytes = sizeof(float) * size_t(s_.n) * ((size_t(s_.c_out) + L - 1) / L) * L *
                           size_t(s_.out_h()) * size_t(s_.out_w());
      std::memcpy(dst, residual, bytes);
    }
    conv_.forward(src, w, bias, dst, scratch);
  }
  void backward_data(const float* dy, const void* w, float* dx, void* scratch) const override {
    conv_.backward_data(dy, w, dx, scratch);
  }
  void backward_weights(const float* src, const float* dy, void* diff_w, float* dw_oihw,
                        float* db, const int32_t*, int, void* scratch) const override {
    conv_.backward_weights(src, dy, diff_w, dw_oihw, db, scratch);  // every filter
  }

 private:
  static ops::cpu::onednn::ConvDesc desc(const ConvSpec& s) {
    ops::cpu::onednn::ConvDesc d;
    d.n = s.n, d.c_in = s.c_in, d.h = s.h, d.w = s.w, d.c_out = s.c_out, d.kh = s.kh, d.kw = s.kw;
    d.stride_h = s.stride_h, d.stride_w = s.stride_w;
    d.pad_t = s.pad_t, d.pad_l = s.pad_l, d.pad_b = s.pad_b, d.pad_r = s.pad_r;
    d.dil_h = s.dil_h, d.dil_w = s.dil_w, d.groups = s.groups;
    d.src_lanes = s.src_lanes, d.dst_lanes = s.dst_lanes;
    return d;
  }
  static ops::cpu::onednn::ConvOptions options(const ConvSpec& s) {
    ops::cpu::onednn::ConvOptions o;
    o.bias = s.bias;
    o.sum = s.residual;
    o.act = s.act;
    o.training = s.training;
    o.backward_data = s.backward_data;
    o.backward_weights = s.backward_weights;
    o.backward_bias = s.backward_bias;
    o.bf16 = s.bf16;
    return o;
  }
  ConvSpec s_;
  ops::cpu::onednn::Conv conv_;
};

}  // namespace

std::unique_ptr<ConvKernel> make_onednn_conv(const ConvSpec& s) {
  return std::make_unique<OnednnConv>(s);
}

namespace {

// Median seconds of `reps` runs of f after one warm-up.
template <class F>
double time_of(F&& f, int reps = 3) {
  f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// One kernel's time on this spec: forward plus the backward passes the spec asks for (the
// weight gradient for n_filters filters when > 0), on zero-filled buffers.
double measure(const ConvKernel& k, const ConvSpec& s, int n_filters) {
  auto layout_floats = [&](int lanes, int c, int h, int w) {
    const int64_t L = lanes <= 0 ? 1 : lanes;
    const int64_t cp = lanes <= 0 ? c : (c + L - 1) / L * L;
    return size_t(s.n) * size_t(cp) * size_t(h) * size_t(w);
  };
  const size_t xs = layout_floats(s.src_lanes == kNhwc ? 0 : s.src_lanes, s.c_in, s.h, s.w);
  const size_t ys = layout_floats(s.dst_lanes == kNhwc ? 0 : s.dst_lanes, s.c_out, s.out_h(), s.out_w());
  const size_t ws = size_t(s.c_out) * size_t(s.c_in / s.groups) * size_t(s.kh) * size_t(s.kw);
  std::vector<float> x(xs), y(ys), dy(ys, 0.5f), dx(xs), w(ws, 0.01f), dw(ws), b(size_t(s.c_out)),
      db(size_t(s.c_out));
  std::vector<char> wf(k.fwd_weights_bytes() + 64), wb(k.bwd_weights_bytes() + 64),
      dwi(k.diff_weights_bytes() + 64), scratch(k.scratch_bytes() + 64);
  std::vector<int32_t> filters;
  for (int f = 0; f < n_filters && f < s.c_out; ++f) filters.push_back(f);
  k.pack(w.data(), wf.data(), s.backward_data ? wb.data() : nullptr);
  double t = time_of([&] {
    k.forward(x.data(), wf.data(), s.bias ? b.data() : nullptr, s.residual ? y.data() : nullptr,
              y.data(), scratch.data());
  });
  if (s.backward_data)
    t += time_of([&] { k.backward_data(dy.data(), wb.data(), dx.data(), scratch.data()); });
  if (s.backward_weights)
    t += time_of([&] {
      k.backward_weights(x.data(), dy.data(), dwi.data(), dw.data(),
                         s.backward_bias ? db.data() : nullptr,
                         filters.empty() ? nullptr : filters.data(), int(filters.size()),
                         scratch.data());
    });
  return t;
}

std::mutex g_measured_mutex;
std::map<std::string, std::pair<double, double>> g_measured;  // spec key -> (native, onednn) s

}  // namespace

std::unique_ptr<ConvKernel> choose_conv_kernel(const ConvSpec& s, bool want_native, bool measure_both,
                                               int n_filters, ConvChoice& choice) {
  std::unique_ptr<ConvKernel> native = want_native ? make_native_conv(s) : nullptr;
  if (!native) {
    auto k = make_onednn_conv(s);
    choice.engine = k->engine();
    choice.impl = k->impl();
    return k;
  }
  if (!measure_both) {
    choice.engine = native->engine();
    choice.impl = native->impl();
    return native;
  }
  auto onednn = make_onednn_conv(s);
  const std::string key = s.key() + std::to_string(n_filters);
  std::pair<double, double> t;
  {
    std::lock_guard<std::mutex> lock(g_measured_mutex);
    auto it = g_measured.find(key);
    if (it != g_measured.end()) {
      t = it->second;
    } else {
      t = {measure(*native, s, n_filters), measure(*onednn, s, n_filters)};
      g_measured[key] = t;
    }
  }
  choice.native_ms = 1e3 * t.first;
  choice.onednn_ms = 1e3 * t.second;
  std::unique_ptr<ConvKernel>& pick = t.first <= t.second ? native : onednn;
  choice.engine = pick->engine();
  choice.impl = pick->impl();
  return std::move(pick);
}

namespace {

namespace blk = ops::cpu::blocked;

// Our micro-kernels (kernels/cpu/blocked/conv_blocked.h) on nChw16c / nChw8c, the first layer
// reading plain NCHW. They write the weight gradient straight into PyTorch's layout (no
// intermediate buffer) and, given a filter list, only those filters' rows.
class NativeConv : public ConvKernel {
 public:
  NativeConv(const ConvSpec& s, const blk::ConvDesc& d, int threads)
      : s_(s), d_(d), nchw_(s.src_lanes == 0) {
    size_t f = blk::scratch_floats(d_, blk::Pass::Forward, threads);
    if (s.backward_data) f = std::max(f, blk::scratch_floats(d_, blk::Pass::BackwardData, threads));
    if (s.backward_weights)
      f = std::max(f, blk::scratch_floats(d_, blk::Pass::BackwardWeights, threads));
    scratch_ = 4 * f;
  }
  const char* engine() const override { return "native"; }
  std::string impl() const override {
    return std::string(d_.lanes == 16 ? "avx512" : "avx2") + (nchw_ ? ":nchw-src" : "") +
           (blk::conv_is_depthwise(d_) ? ":depthwise" : "");
  }
  size_t fwd_weights_bytes() const override {
    return 4 * blk::packed_weights_floats(d_, blk::Pass::Forward);
  }
  size_t bwd_weights_bytes() const override {
    return s_.backward_data ? 4 * blk::packed_weights_floats(d_, blk::Pass::BackwardData) : 0;
  }
  size_t diff_weights_bytes() const override { return 0; }
  size_t scratch_bytes() const override { return scratch_; }
  void pack(const float* oihw, void* fwd, void* bwd) const override {
    blk::pack_weights(d_, blk::Pass::Forward, oihw, nullptr, static_cast<float*>(fwd));
    if (bwd && s_.backward_data)
      blk::pack_weights(d_, blk::Pass::BackwardData, oihw, nullptr, static_cast<float*>(bwd));
  }
  void forward(const float* src, const void* w, const float* bias, const float* residual,
               float* dst, void* scratch) const override {
    const auto* wf = static_cast<const float*>(w);
    auto* sc = static_cast<float*>(scratch);
    if (nchw_)
      blk::conv_forward_nchw_input(d_, src, wf, bias, residual, s_.act, dst, sc);
    else
      blk::conv_forward(d_, src, wf, bias, residual, s_.act, dst, sc);
  }
  void backward_data(const float* dy, const void* w, float* dx, void* scratch) const override {
    blk::conv_backward_data(d_, dy, static_cast<const float*>(w), dx, static_cast<float*>(scratch));
  }
  void backward_weights(const float* src, const float* dy, void*, float* dw_oihw, float* db,
                        const int32_t* filters, int n_filters, void* scratch) const override {
    auto* sc = static_cast<float*>(scratch);
    if (nchw_)
      blk::conv_backward_weights_nchw_input(d_, src, dy, dw_oihw, db, filters, n_filters, sc);
    else
      blk::conv_backward_weights(d_, src, dy, dw_oihw, db, filters, n_filters, sc);
  }

 private:
  ConvSpec s_;
  blk::ConvDesc d_;
  bool nchw_;
  size_t scratch_ = 0;
};

}  // namespace

std::unique_ptr<ConvKernel> make_native_conv(const ConvSpec& s) {
  // Blocked source and destination of one width (or an NCHW first layer), no dilation.
  if (s.dil_h != 1 || s.dil_w != 1 || s.bf16) return nullptr;
  const int lanes = s.dst_lanes;
  if (lanes != 16 && lanes != 8) return nullptr;
  if (s.src_lanes != lanes && s.src_lanes != 0) return nullptr;
  const blk::ConvDesc d{s.n,        s.c_in,     s.h,     s.w,     s.c_out, s.kh,     s.kw,
                        s.stride_h, s.stride_w, s.pad_t, s.pad_l, s.pad_b, s.pad_r, s.groups,
                        lanes};
  if (s.src_lanes == 0) {
    if (s.backward_data || !blk::nchw_input_supported(d)) return nullptr;
  } else {
    if (!blk::conv_supported(d, blk::Pass::Forward)) return nullptr;
    if (s.backward_data && !blk::conv_supported(d, blk::Pass::BackwardData)) return nullptr;
    if (s.backward_weights && !blk::conv_supported(d, blk::Pass::BackwardWeights)) return nullptr;
  }
  return std::make_unique<NativeConv>(s, d, omp_get_max_threads());
}

}  // namespace nns::engine
