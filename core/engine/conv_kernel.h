// One convolution of a plan behind one interface, whichever engine runs it: oneDNN's
// primitives or our blocked micro-kernels. Activations are in the blocked layout (the first
// layer's source may be plain NCHW where the engine supports it); weights are packed by the
// engine from PyTorch's [C_out, C_in/groups, KH, KW] into buffers the plan owns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "kernels/ops.h"

namespace nns::engine {

inline constexpr int kNhwc = -1;

struct ConvSpec {
  int n = 1, c_in = 1, h = 1, w = 1, c_out = 1, kh = 1, kw = 1;
  int stride_h = 1, stride_w = 1, pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int dil_h = 1, dil_w = 1, groups = 1;
  // Layouts of the source and the destination: channels per block (16 or 8: nChw16c /
  // nChw8c), kNhwc, or 0 for plain NCHW (the source of a first layer with few channels).
  int src_lanes = 16, dst_lanes = 16;
  bool bias = false;
  bool residual = false;   // forward adds a residual (the output's shape and layout) before act
  ops::Activation act = ops::Activation::None;
  bool training = false;   // a backward follows
  bool backward_data = false, backward_weights = false, backward_bias = false;
  // bf16 convolutions with fp32 accumulation and fp32 outputs (splitter.precision: bf16): the
  // oneDNN engine only (make_native_conv returns null).
  bool bf16 = false;
  int out_h() const { return (h + pad_t + pad_b - (dil_h * (kh - 1) + 1)) / stride_h + 1; }
  int out_w() const { return (w + pad_l + pad_r - (dil_w * (kw - 1) + 1)) / stride_w + 1; }
  std::string key() const;  // every field, for caches of measured choices
};

class ConvKernel {
 public:
  virtual ~ConvKernel() = default;
  virtual const char* engine() const = 0;  // "onednn" or "native"
  virtual std::string impl() const = 0;
  // Buffer sizes in bytes: packed forward weights, packed backward-data weights, the
  // backward-weights intermediate, scratch.
  virtual size_t fwd_weights_bytes() const = 0;
  virtual size_t bwd_weights_bytes() const = 0;
  virtual size_t diff_weights_bytes() const = 0;
  virtual size_t scratch_bytes() const = 0;
  virtual void pack(const float* oihw, void* fwd, void* bwd) const = 0;
  // dst = act(conv(src) + bias + residual); residual may alias dst.
  virtual void forward(const float* src, const void* w, const float* bias, const float* residual,
                       float* dst, void* scratch) const = 0;
  virtual void backward_data(const float* dy, const void* w, float* dx, void* scratch) const = 0;
  // dw_oihw, db [C_out] (or null): the gradient in PyTorch's layout of at least the listed
  // output filters (all when filters is null; an engine may compute more). diff_w: the
  // intermediate buffer (diff_weights_bytes()).
  virtual void backward_weights(const float* src, const float* dy, void* diff_w, float* dw_oihw,
                                float* db, const int32_t* filters, int n_filters,
                                void* scratch) const = 0;
};

// The engine of one convolution: the one asked for (native falls back to oneDNN where our
// kernels do not run the spec), or with `measure` the faster of the two on this spec, timed
// once per process (forward, and the backward passes the spec needs) on scratch buffers:
// cuDNN's benchmark mode. `choice` receives the engine, its implementation and the timings.
struct ConvChoice;
std::unique_ptr<ConvKernel> choose_conv_kernel(const ConvSpec& s, bool want_native, bool measure,
                                               int n_filters, ConvChoice& choice);

// The oneDNN kernel; throws std::runtime_error when oneDNN cannot make the primitives.
std::unique_ptr<ConvKernel> make_onednn_conv(const ConvSpec& s);
// Our blocked micro-kernels, or null where they do not support the spec.
std::unique_ptr<ConvKernel> make_native_conv(const ConvSpec& s);

}  // namespace nns::engine
