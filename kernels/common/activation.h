// Activations and their derivatives. The derivative is taken from the forward OUTPUT y, so
// backward needs no saved input: ReLU'(x) = [y > 0], ReLU6'(x) = [0 < y < 6] (PyTorch's
// hardtanh backward, which is 0 at the kinks), tanh' = 1 - y^2, sigmoid' = y (1 - y).
#pragma once

#include <math.h>

#include "kernels/common/hd.h"
#include "kernels/ops.h"

namespace nns::ops::common {

// ReLU is written with comparisons, not fmaxf: without -ffast-math GCC calls the libm fmaxf
// (NaN rules) instead of vectorising, and the comparison form keeps NaN like PyTorch does.
NNS_HD inline float relu_f(float x) { return x < 0.0f ? 0.0f : x; }

NNS_HD inline float act_forward(Activation act, float x) {
  switch (act) {
    case Activation::ReLU: return relu_f(x);
    case Activation::ReLU6: {
      const float r = relu_f(x);
      return r > 6.0f ? 6.0f : r;
    }
    case Activation::Tanh: return tanhf(x);
    case Activation::Sigmoid: return 1.0f / (1.0f + expf(-x));
    default: return x;
  }
}

// act'(x) expressed through y = act(x), with PyTorch's conventions at the kinks:
// threshold_backward passes the gradient where y > 0 (so not at 0), hardtanh_backward where
// 0 < y < 6; a NaN output lets it through in both.
NNS_HD inline float act_grad_from_output(Activation act, float y) {
  switch (act) {
    case Activation::ReLU: return y <= 0.0f ? 0.0f : 1.0f;
    case Activation::ReLU6: return ((y <= 0.0f) | (y >= 6.0f)) ? 0.0f : 1.0f;
    case Activation::Tanh: return 1.0f - y * y;
    case Activation::Sigmoid: return y * (1.0f - y);
    default: return 1.0f;
  }
}

// dx = dy * act'(x) from the output y. The ReLUs select dy (as PyTorch does, so an infinite dy
// on a clipped element gives 0, not NaN); written as a select, the loop also vectorises, where
// GCC keeps dy * (cond ? 1 : 0) as a branch.
NNS_HD inline float act_backward(Activation act, float y, float dy) {
  switch (act) {
    case Activation::ReLU: return y <= 0.0f ? 0.0f : dy;
    case Activation::ReLU6: return ((y <= 0.0f) | (y >= 6.0f)) ? 0.0f : dy;
    case Activation::Tanh: return dy * (1.0f - y * y);
    case Activation::Sigmoid: return dy * (y * (1.0f - y));
    default: return dy;
  }
}

// Fused conv/linear epilogue for one element: act(scale * (acc + bias) + shift).
NNS_HD inline float epilogue_apply(float acc, float bias, float scale, float shift,
                                   Activation act) {
  return act_forward(act, scale * (acc + bias) + shift);
}

}  // namespace nns::ops::common
