// oneDNN convolution primitives on the blocked channel layout (nChw16c with AVX-512, nChw8c
// with AVX2): one of the CPU engine's two convolution engines (the other: kernels/cpu/blocked/).
// A Conv is created once per (shape, options) when a plan is built, then run many times on
// caller-owned memory: its weights in oneDNN's own blocked format (reorder_weights fills them),
// activations in the blocked layout of kernels/cpu/blocked/eltwise.h, which is exactly oneDNN's
// nChw{L}c with zero-padded channels. Every primitive runs with a user scratchpad: nothing is
// allocated while it runs.
//
// Which oneDNN implementation was chosen is recorded (impl(), "jit:avx512_core" etc.) and shown
// by `nnsplitter bench --verbose`; a reference (ref:any) or gemm fallback on a shape where we
// expected a JIT kernel is a performance bug, not an error.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "kernels/ops.h"

namespace nns::ops::cpu::onednn {

// The NHWC layout in a ConvDesc's src_lanes / dst_lanes.
inline constexpr int kNhwc = -1;

struct ConvDesc {
  int n = 1, c_in = 1, h = 1, w = 1, c_out = 1, kh = 1, kw = 1;
  int stride_h = 1, stride_w = 1, pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int dil_h = 1, dil_w = 1, groups = 1;
  // Activation layouts: 16 (nChw16c), 8 (nChw8c), kNhwc or 0 (NCHW).
  int src_lanes = 16, dst_lanes = 16;
  int out_h() const { return (h + pad_t + pad_b - (dil_h * (kh - 1) + 1)) / stride_h + 1; }
  int out_w() const { return (w + pad_l + pad_r - (dil_w * (kw - 1) + 1)) / stride_w + 1; }
};

struct ConvOptions {
  bool bias = false;          // forward adds a per-channel bias
  bool sum = false;           // forward adds the dst's previous contents (a residual) before act
  Activation act = Activation::None;  // None, ReLU or ReLU6
  bool training = false;      // forward_training (a backward follows) or forward_inference
  bool backward_data = false;
  bool backward_weights = false;
  bool backward_bias = false;
  // bf16 convolutions (splitter.precision: bf16): sources, weights and incoming gradients are
  // rounded to bfloat16 (round to nearest even) right before each primitive, which accumulates
  // in fp32 and writes fp32 (dst, diff_src, diff_weights, diff_bias). The caller's buffers stay
  // fp32; the rounded copies live in the scratch (scratch_bytes() counts them). Needs
  // bf16_supported().
  bool bf16 = false;
};

class Conv {
 public:
  Conv(const ConvDesc& d, const ConvOptions& o);
  ~Conv();
  Conv(const Conv&) = delete;
  Conv& operator=(const Conv&) = delete;

  // Bytes of the weights in the forward / backward-data formats, of the backward-weights
  // result, and of the largest scratchpad of the primitives.
  size_t forward_weights_bytes() const;
  size_t backward_weights_bytes() const;  // 0 without backward_data
  size_t diff_weights_bytes() const;      // 0 without backward_weights
  size_t scratch_bytes() const;

  // Fills the forward (and, with backward_data, the backward-data) weights from PyTorch's
  // [C_out, C_in/groups, KH, KW].
  void reorder_weights(const float* oihw, void* fwd, void* bwd) const;
  // dst = act(conv(src, w) + bias [+ dst]) (sum: dst holds the residual on entry).
  void forward(const float* src, const void* w, const float* bias, float* dst, void* scratch) const;
  void backward_data(const float* diff_dst, const void* w, float* diff_src, void* scratch) const;
  // diff_oihw [C_out, C_in/groups, KH, KW] (PyTorch's layout); diff_w is the primitive's own
  // result buffer (diff_weights_bytes()), reordered into diff_oihw; diff_bias [C_out] or null.
  void backward_weights(const float* src, const float* diff_dst, void* diff_w, float* diff_oihw,
                        float* diff_bias, void* scratch) const;

  // The oneDNN implementations chosen: "fwd=jit:avx512_core bwd_d=... bwd_w=...".
  std::string impl() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> p_;
};

// Limits oneDNN's instruction set (NNS_CPU_ISA=avx2 runs its AVX2 kernels too); call before the
// first primitive is created. Returns false when oneDNN refused (primitives already made).
bool limit_isa_to_avx2();
// Whether bf16 convolutions run natively here: the CPU has avx512_bf16 (and AVX-512) and
// oneDNN's instruction set is not limited to AVX2. Elsewhere oneDNN would emulate or refuse.
bool bf16_supported();
// oneDNN's version, "2.6.3".
std::string version();

}  // namespace nns::ops::cpu::onednn
