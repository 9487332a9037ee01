// Element functions of the NNSplitter method shared by both backends: the mask predicate and
// the fused masked Adam + clamp update.
#pragma once

#include <math.h>

#include "kernels/common/hd.h"
#include "kernels/common/optim.h"

namespace nns::ops::common {

// The mask predicate, strict as in the paper: |w - c| < eps.
NNS_HD inline bool mask_hit(float w, float c, float eps) { return fabsf(w - c) < eps; }

NNS_HD inline float sign_or_zero(float x) { return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f); }

// One masked entry: objective gradient, Adam moments, update, clamp to [lo, hi].
NNS_HD inline void masked_adam_clamp_element(float& w, float grad, float& m, float& v,
                                             float beta1, float beta2, float eps,
                                             AdamStepConsts c, float grad_scale, float l1,
                                             float lo, float hi) {
  float g = grad_scale * grad + l1 * sign_or_zero(w);
  adam_element(w, g, m, v, beta1, beta2, eps, 0.0f, c);
  w = fminf(fmaxf(w, lo), hi);
}

NNS_HD inline float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// LSTM cell pointwise forward for one hidden unit: pre-activations (i, f, g, o) -> activated
// gates, new cell state and output.
NNS_HD inline void lstm_unit_forward(float pi, float pf, float pg, float po, float c_prev,
                                     float* ai, float* af, float* ag, float* ao, float* c,
                                     float* h) {
  *ai = sigmoidf_(pi);
  *af = sigmoidf_(pf);
  *ag = tanhf(pg);
  *ao = sigmoidf_(po);
  *c = *af * c_prev + *ai * *ag;
  *h = *ao * tanhf(*c);
}

// Backward of lstm_unit_forward: dh, dc reach h and c; returns gate pre-activation gradients
// and the gradient reaching c_prev.
NNS_HD inline void lstm_unit_backward(float ai, float af, float ag, float ao, float c_prev,
                                      float c, float dh, float dc, float* dpi, float* dpf,
                                      float* dpg, float* dpo, float* dc_prev) {
  float tc = tanhf(c);
  float dct = dc + dh * ao * (1.0f - tc * tc);
  *dpo = dh * tc * ao * (1.0f - ao);
  *dpi = dct * ag * ai * (1.0f - ai);
  *dpg = dct * ai * (1.0f - ag * ag);
  *dpf = dct * c_prev * af * (1.0f - af);
  *dc_prev = dct * af;
}

// Input normalisation of one pixel: (u8 / 255 - mean) / std, as torchvision computes it.
NNS_HD inline float normalize_u8(unsigned char u, float mean, float std) {
  return (static_cast<float>(u) / 255.0f - mean) / std;
}

}  // namespace nns::ops::common
