#include "core/engine/conv_kernel.h"

#include <cstring>

#include "kernels/cpu/onednn/conv.h"

namespace nns::engine {

std::string ConvSpec::key() const {
  std::string k;
  for (int v : {n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_t, pad_l, pad_b, pad_r,
                dil_h, dil_w, groups, src_lanes, dst_lanes, int(bias), int(residual), int(act),
                int(training), int(backward_data), int(backward_weights), int(backward_bias)})
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
                        float* db, void* scratch) const override {
    conv_.backward_weights(src, dy, diff_w, dw_oihw, db, scratch);
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
    return o;
  }
  ConvSpec s_;
  ops::cpu::onednn::Conv conv_;
};

}  // namespace

std::unique_ptr<ConvKernel> make_onednn_conv(const ConvSpec& s) {
  return std::make_unique<OnednnConv>(s);
}

std::unique_ptr<ConvKernel> make_native_conv(const ConvSpec&) {
  return nullptr;  // the blocked micro-kernels are wired in with kernels/cpu/blocked/conv
}

}  // namespace nns::engine
