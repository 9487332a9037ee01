// Per-element optimizer updates with PyTorch semantics (torch.optim.SGD and torch.optim.Adam,
// L2 weight decay added to the gradient). Scalars that depend only on the step are computed
// once by the caller (AdamStepConsts) and shared by every element.
#pragma once

#include <math.h>

#include "kernels/common/hd.h"

namespace nns::ops::common {

// SGD with momentum (dampening 0). buf may be null when momentum == 0.
//   g' = g + wd*w; buf = first ? g' : momentum*buf + g';
//   step = nesterov ? g' + momentum*buf : buf; w -= lr * step.
NNS_HD inline void sgd_element(float& w, float g, float* buf, float lr, float momentum,
                               float weight_decay, bool nesterov, bool first_step) {
  float d = g + weight_decay * w;
  if (momentum != 0.0f) {
    float b = first_step ? d : momentum * (*buf) + d;
    *buf = b;
    d = nesterov ? d + momentum * b : b;
  }
  w -= lr * d;
}

// Step-dependent Adam scalars: step_size = lr / (1 - beta1^t), inv_sqrt_bc2 = 1/sqrt(1 - beta2^t).
struct AdamStepConsts {
  float step_size;
  float inv_sqrt_bc2;
};

NNS_HD inline AdamStepConsts adam_step_consts(float lr, float beta1, float beta2, long long t) {
  double bc1 = 1.0 - pow(static_cast<double>(beta1), static_cast<double>(t));
  double bc2 = 1.0 - pow(static_cast<double>(beta2), static_cast<double>(t));
  AdamStepConsts c;
  c.step_size = static_cast<float>(lr / bc1);
  c.inv_sqrt_bc2 = static_cast<float>(1.0 / sqrt(bc2));
  return c;
}

// m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2; w -= step_size * m / (sqrt(v)/sqrt(bc2) + eps),
// which is lr * mhat / (sqrt(vhat) + eps), computed the way PyTorch does.
NNS_HD inline void adam_element(float& w, float g, float& m, float& v, float beta1, float beta2,
                                float eps, float weight_decay, AdamStepConsts c) {
  float d = g + weight_decay * w;
  m = beta1 * m + (1.0f - beta1) * d;
  v = beta2 * v + (1.0f - beta2) * d * d;
  float denom = sqrtf(v) * c.inv_sqrt_bc2 + eps;
  w -= c.step_size * m / denom;
}

}  // namespace nns::ops::common
