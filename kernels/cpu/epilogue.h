// The fused per-channel epilogue of conv2d_forward / linear_forward applied to contiguous runs
// of one channel, with the activation hoisted out of the inner loop so the loop vectorises.
#pragma once

#include <cstdint>

#include "kernels/common/activation.h"
#include "kernels/ops.h"

namespace nns::ops::cpu {

inline bool epilogue_is_identity(const Epilogue& e) {
  return !e.bias && !e.scale && !e.shift && e.act == Activation::None;
}

template <Activation A>
inline void epilogue_run(const float* in, float* out, int64_t len, float bias, float scale,
                         float shift) {
  // No `omp simd`: tanh/sigmoid call libm and do not vectorise (clang warns on a failed
  // request); GCC vectorises the piecewise-linear ones unasked.
  for (int64_t i = 0; i < len; ++i) out[i] = common::epilogue_apply(in[i], bias, scale, shift, A);
}

// out[i] = act(scale[c] * (in[i] + bias[c]) + shift[c]) for i < len; out may alias in.
inline void epilogue_channel(const Epilogue& e, int c, const float* in, float* out,
                             int64_t len) {
  const float b = e.bias ? e.bias[c] : 0.0f;
  const float sc = e.scale ? e.scale[c] : 1.0f;
  const float sh = e.shift ? e.shift[c] : 0.0f;
  switch (e.act) {
    case Activation::ReLU: epilogue_run<Activation::ReLU>(in, out, len, b, sc, sh); break;
    case Activation::ReLU6: epilogue_run<Activation::ReLU6>(in, out, len, b, sc, sh); break;
    case Activation::Tanh: epilogue_run<Activation::Tanh>(in, out, len, b, sc, sh); break;
    case Activation::Sigmoid: epilogue_run<Activation::Sigmoid>(in, out, len, b, sc, sh); break;
    default: epilogue_run<Activation::None>(in, out, len, b, sc, sh); break;
  }
}

}  // namespace nns::ops::cpu
