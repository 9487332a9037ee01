// CPU twins of the method's ops: mask selection, fused masked Adam + clamp, gather/scatter,
// LSTM pointwise cells, and batch assembly from uint8 images.
#include <algorithm>
#include <vector>

#include "kernels/common/method.h"
#include "kernels/cpu/cpu_ops.h"

namespace nns::ops::cpu {

int64_t mask_select(const float* w, int64_t row_size, const int32_t* rows, int n_rows, float c,
                    float eps, int64_t* out, int64_t max_out) {
  int64_t count = 0;
  for (int r = 0; r < n_rows; ++r) {
    const int64_t base = int64_t(rows[r]) * row_size;
    for (int64_t j = 0; j < row_size; ++j) {
      if (common::mask_hit(w[base + j], c, eps)) {
        if (count < max_out) out[count] = base + j;
        ++count;
      }
    }
  }
  return count;
}

void masked_adam_clamp(int64_t count, const int64_t* idx, float* w, const float* grad, float* m,
                       float* v, float lr, float beta1, float beta2, float eps, int64_t t,
                       float grad_scale, float l1, float lo, float hi) {
  const common::AdamStepConsts k = common::adam_step_consts(lr, beta1, beta2, t);
  // A few hundred entries: a plain loop beats a parallel region.
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = idx[i];
    common::masked_adam_clamp_element(w[j], grad[j], m[i], v[i], beta1, beta2, eps, k, grad_scale,
                                      l1, lo, hi);
  }
}

void gather(int64_t count, const int64_t* idx, const float* src, float* dst) {
  for (int64_t i = 0; i < count; ++i) dst[i] = src[idx[i]];
}

void scatter(int64_t count, const int64_t* idx, const float* src, float* dst) {
  for (int64_t i = 0; i < count; ++i) dst[idx[i]] = src[i];
}

void lstm_pointwise_forward(int batch, int hidden, const float* gates, const float* c_prev,
                            float* act, float* h, float* c) {
  for (int b = 0; b < batch; ++b) {
    const float* g = gates + int64_t(b) * 4 * hidden;
    float* a = act + int64_t(b) * 4 * hidden;
    for (int u = 0; u < hidden; ++u) {
      const int64_t o = int64_t(b) * hidden + u;
      common::lstm_unit_forward(g[u], g[hidden + u], g[2 * hidden + u], g[3 * hidden + u],
                                c_prev[o], &a[u], &a[hidden + u], &a[2 * hidden + u],
                                &a[3 * hidden + u], &c[o], &h[o]);
    }
  }
}

void lstm_pointwise_backward(int batch, int hidden, const float* act, const float* c_prev,
                             const float* c, const float* dh, const float* dc, float* dgates,
                             float* dc_prev) {
  for (int b = 0; b < batch; ++b) {
    const float* a = act + int64_t(b) * 4 * hidden;
    float* d = dgates + int64_t(b) * 4 * hidden;
    for (int u = 0; u < hidden; ++u) {
      const int64_t o = int64_t(b) * hidden + u;
      common::lstm_unit_backward(a[u], a[hidden + u], a[2 * hidden + u], a[3 * hidden + u],
                                 c_prev[o], c[o], dh[o], dc[o], &d[u], &d[hidden + u],
                                 &d[2 * hidden + u], &d[3 * hidden + u], &dc_prev[o]);
    }
  }
}

void gather_normalize_u8(int batch, int c, int h, int w, int out_size, const uint8_t* images,
                         const int32_t* idx, const float* mean, const float* std, float* out) {
  const int top = (out_size - h) / 2, left = (out_size - w) / 2;
  const int64_t img = int64_t(c) * h * w, plane = int64_t(out_size) * out_size;
#pragma omp parallel for schedule(static) if (batch >= 16)
  for (int b = 0; b < batch; ++b) {
    const uint8_t* src = images + int64_t(idx[b]) * img;
    for (int ch = 0; ch < c; ++ch) {
      float* dst = out + (int64_t(b) * c + ch) * plane;
      const float zero = common::normalize_u8(0, mean[ch], std[ch]);
      for (int y = 0; y < out_size; ++y) {
        const int sy = y - top;
        for (int x = 0; x < out_size; ++x) {
          const int sx = x - left;
          const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
          dst[int64_t(y) * out_size + x] =
              inside ? common::normalize_u8(src[(int64_t(ch) * h + sy) * w + sx], mean[ch], std[ch])
                     : zero;
        }
      }
    }
  }
}

}  // namespace nns::ops::cpu
