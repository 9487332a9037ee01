// BatchNorm element math shared by both backends. Statistics are per channel over the M = N*HW
// elements of that channel.
#pragma once

#include <math.h>

#include "kernels/common/hd.h"

namespace nns::ops::common {

NNS_HD inline float bn_invstd(float var, float eps) { return 1.0f / sqrtf(var + eps); }

// y = (x - mean) * invstd * gamma + beta, written as x * a + b with the per-channel
// a = gamma * invstd and b = beta - mean * a.
struct BnAffine {
  float a;
  float b;
};
NNS_HD inline BnAffine bn_affine(float mean, float invstd, float gamma, float beta) {
  BnAffine r;
  r.a = gamma * invstd;
  r.b = beta - mean * r.a;
  return r;
}
NNS_HD inline float bn_apply(float x, BnAffine t) { return x * t.a + t.b; }

// running = (1 - momentum) * running + momentum * batch_stat.
NNS_HD inline float bn_running_update(float running, float batch_stat, float momentum) {
  return (1.0f - momentum) * running + momentum * batch_stat;
}

// Training-mode backward for one element, with per-channel sums over the M elements
// sum_dy = sum(dy), sum_dy_xhat = sum(dy * xhat):
//   dx = gamma * invstd * (dy - sum_dy/M - xhat * sum_dy_xhat/M).
struct BnBackwardConsts {
  float k;        // gamma * invstd
  float mean_dy;  // sum_dy / M
  float mean_dy_xhat;  // sum_dy_xhat / M
};
NNS_HD inline float bn_backward_dx(float x, float dy, float mean, float invstd,
                                   BnBackwardConsts c) {
  float xhat = (x - mean) * invstd;
  return c.k * (dy - c.mean_dy - xhat * c.mean_dy_xhat);
}

}  // namespace nns::ops::common
