// Pooling on the CPU, parallel over (image, channel) planes.
#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/common/pool.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace nns::ops::cpu {

namespace {

void check_pool(const Pool2dShape& s, const char* op) {
  if (s.n < 1 || s.c < 1 || s.h < 1 || s.w < 1 || s.kh < 1 || s.kw < 1 || s.stride_h < 1 ||
      s.stride_w < 1 || s.pad_h < 0 || s.pad_w < 0 || s.out_h() < 1 || s.out_w() < 1 ||
      s.h + 2 * s.pad_h < s.kh || s.w + 2 * s.pad_w < s.kw)
    throw std::invalid_argument(
        std::string(op) + ": invalid pooling shape (n=" + std::to_string(s.n) +
        " c=" + std::to_string(s.c) + " h=" + std::to_string(s.h) + " w=" + std::to_string(s.w) +
        " k=" + std::to_string(s.kh) + "x" + std::to_string(s.kw) +
        " stride=" + std::to_string(s.stride_h) + "," + std::to_string(s.stride_w) +
        " pad=" + std::to_string(s.pad_h) + "," + std::to_string(s.pad_w) + ")");
  // PyTorch's rule: padding at most half the kernel, so no window lies entirely in the padding.
  if (2 * s.pad_h > s.kh || 2 * s.pad_w > s.kw)
    throw std::invalid_argument(std::string(op) + ": padding must be at most half the kernel (k=" +
                                std::to_string(s.kh) + "x" + std::to_string(s.kw) +
                                " pad=" + std::to_string(s.pad_h) + "," +
                                std::to_string(s.pad_w) + ")");
}

}  // namespace

void maxpool2d_forward(const Pool2dShape& s, const float* x, float* y, int32_t* argmax) {
  check_pool(s, "maxpool2d_forward");
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t hw = int64_t(s.h) * s.w, ohw = int64_t(oh_n) * ow_n;
  const int64_t planes = int64_t(s.n) * s.c;
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelElements)
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * hw;
    float* yp = y + p * ohw;
    int32_t* ap = argmax + p * ohw;
    for (int oh = 0; oh < oh_n; ++oh) {
      const int h0 = oh * s.stride_h - s.pad_h;
      const int hs = std::max(h0, 0), he = std::min(h0 + s.kh, s.h);
      for (int ow = 0; ow < ow_n; ++ow) {
        const int w0 = ow * s.stride_w - s.pad_w;
        const int ws = std::max(w0, 0), we = std::min(w0 + s.kw, s.w);
        // Padding is -inf and never wins; in-image values are scanned in row-major order and
        // only a strictly larger value replaces the best, so ties keep the first maximum.
        int best_i = hs * s.w + ws;
        float best = xp[best_i];
        for (int ih = hs; ih < he; ++ih) {
          for (int iw = ws; iw < we; ++iw) {
            const float v = xp[ih * s.w + iw];
            if (v > best || v != v) {  // a NaN wins, as in PyTorch
              best = v;
              best_i = ih * s.w + iw;
            }
          }
        }
        yp[oh * ow_n + ow] = best;
        ap[oh * ow_n + ow] = best_i;
      }
    }
  }
}

void maxpool2d_backward(const Pool2dShape& s, const float* dy, const int32_t* argmax, float* dx) {
  check_pool(s, "maxpool2d_backward");
  const int64_t hw = int64_t(s.h) * s.w, ohw = int64_t(s.out_h()) * s.out_w();
  const int64_t planes = int64_t(s.n) * s.c;
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelElements)
  for (int64_t p = 0; p < planes; ++p) {
    float* dxp = dx + p * hw;
    std::memset(dxp, 0, sizeof(float) * hw);
    const float* dyp = dy + p * ohw;
    const int32_t* ap = argmax + p * ohw;
    for (int64_t o = 0; o < ohw; ++o) dxp[ap[o]] += dyp[o];
  }
}

void avgpool2d_forward(const Pool2dShape& s, const float* x, float* y) {
  check_pool(s, "avgpool2d_forward");
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t hw = int64_t(s.h) * s.w, ohw = int64_t(oh_n) * ow_n;
  const int64_t planes = int64_t(s.n) * s.c;
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelElements)
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * hw;
    float* yp = y + p * ohw;
    for (int oh = 0; oh < oh_n; ++oh) {
      int hs, he, span_h;
      common::pool_window(oh, s.stride_h, s.pad_h, s.kh, s.h, &hs, &he, &span_h);
      for (int ow = 0; ow < ow_n; ++ow) {
        int ws, we, span_w;
        common::pool_window(ow, s.stride_w, s.pad_w, s.kw, s.w, &ws, &we, &span_w);
        float acc = 0.0f;
        for (int ih = hs; ih < he; ++ih)
          for (int iw = ws; iw < we; ++iw) acc += xp[ih * s.w + iw];
        const float inv =
            1.0f / float(common::avg_divisor(s.count_include_pad, hs, he, ws, we, span_h, span_w));
        yp[oh * ow_n + ow] = acc * inv;
      }
    }
  }
}

void avgpool2d_backward(const Pool2dShape& s, const float* dy, float* dx) {
  check_pool(s, "avgpool2d_backward");
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t hw = int64_t(s.h) * s.w, ohw = int64_t(oh_n) * ow_n;
  const int64_t planes = int64_t(s.n) * s.c;
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelElements)
  for (int64_t p = 0; p < planes; ++p) {
    float* dxp = dx + p * hw;
    std::memset(dxp, 0, sizeof(float) * hw);
    const float* dyp = dy + p * ohw;
    for (int oh = 0; oh < oh_n; ++oh) {
      int hs, he, span_h;
      common::pool_window(oh, s.stride_h, s.pad_h, s.kh, s.h, &hs, &he, &span_h);
      for (int ow = 0; ow < ow_n; ++ow) {
        int ws, we, span_w;
        common::pool_window(ow, s.stride_w, s.pad_w, s.kw, s.w, &ws, &we, &span_w);
        const float inv =
            1.0f / float(common::avg_divisor(s.count_include_pad, hs, he, ws, we, span_h, span_w));
        const float g = dyp[oh * ow_n + ow] * inv;
        for (int ih = hs; ih < he; ++ih)
          for (int iw = ws; iw < we; ++iw) dxp[ih * s.w + iw] += g;
      }
    }
  }
}

void global_avgpool_forward(int n, int c, int hw, const float* x, float* y) {
  const int64_t planes = int64_t(n) * c;
  const float inv = 1.0f / float(hw);
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelElements)
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * hw;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int k = 0; k < hw; ++k) acc += xp[k];
    y[p] = acc * inv;
  }
}

void global_avgpool_backward(int n, int c, int hw, const float* dy, float* dx) {
  const int64_t planes = int64_t(n) * c;
  const float inv = 1.0f / float(hw);
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelElements)
  for (int64_t p = 0; p < planes; ++p) {
    const float g = dy[p] * inv;
    float* dxp = dx + p * hw;
#pragma omp simd
    for (int k = 0; k < hw; ++k) dxp[k] = g;
  }
}

}  // namespace nns::ops::cpu
