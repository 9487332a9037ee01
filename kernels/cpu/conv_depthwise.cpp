// Depthwise convolution (groups == c_in == c_out, MobileNetV2) with direct loops: one input
// plane, one KH*KW filter and one output plane per (image, channel), parallel over planes.
// Stride-1 "same width" shapes treat each (kh, kw) tap as one shifted run over the whole plane
// with the padding columns masked (see im2col.h); other shapes loop over output rows.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/conv_internal.h"
#include "kernels/cpu/epilogue.h"
#include "kernels/cpu/im2col.h"

namespace nns::ops::cpu {

void depthwise_forward(const Conv2dShape& s, const float* x, const float* w, const Epilogue& epi,
                       float* y) {
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t hw = int64_t(s.h) * s.w, ohw = int64_t(oh_n) * ow_n;
  const int64_t planes = int64_t(s.n) * s.c_in;
  const bool identity = epilogue_is_identity(epi);
  const float* mask = im2col_mask(s);
#pragma omp parallel for schedule(dynamic, 16) if (planes > 1 && conv_threads(s) > 1)
  for (int64_t p = 0; p < planes; ++p) {
    const int c = static_cast<int>(p % s.c_in);
    const float* xp = x + p * hw;
    const float* wc = w + int64_t(c) * s.kh * s.kw;
    float* yp = y + p * ohw;
    for (int64_t i = 0; i < ohw; ++i) yp[i] = 0.0f;
    for (int kh = 0; kh < s.kh; ++kh) {
      int oh_lo, oh_hi;
      valid_range(oh_n, s.h, s.stride_h, s.pad_h, kh, oh_lo, oh_hi);
      for (int kw = 0; kw < s.kw; ++kw) {
        const float wv = wc[kh * s.kw + kw];
        if (mask) {
          const Run run = contiguous_run(s, kh, kw, oh_lo, oh_hi);
          const float* __restrict m = mask + int64_t(kw) * ohw + run.d0;
          const float* __restrict src = xp + run.src0;
          float* __restrict d = yp + run.d0;
#pragma omp simd
          for (int64_t i = 0; i < run.len; ++i) {
            // Select the loaded value, then multiply: GCC (with the default -ftrapping-math)
            // vectorises a select of loads but not one of speculated arithmetic.
            const float v = src[i];
            d[i] += wv * (m[i] != 0.0f ? v : 0.0f);
          }
          continue;
        }
        int lo, hi;
        valid_range(ow_n, s.w, s.stride_w, s.pad_w, kw, lo, hi);
        const int off = kw - s.pad_w, st = s.stride_w;
        for (int oh = oh_lo; oh < oh_hi; ++oh) {
          const float* __restrict xrow = xp + int64_t(oh * s.stride_h - s.pad_h + kh) * s.w;
          float* __restrict yrow = yp + int64_t(oh) * ow_n;
          for (int ow = lo; ow < hi; ++ow) yrow[ow] += wv * xrow[ow * st + off];
        }
      }
    }
    if (!identity) epilogue_channel(epi, c, yp, yp, ohw);
  }
}

void depthwise_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t hw = int64_t(s.h) * s.w, ohw = int64_t(oh_n) * ow_n;
  const int64_t planes = int64_t(s.n) * s.c_in;
  const float* mask = im2col_mask(s);
#pragma omp parallel for schedule(dynamic, 16) if (planes > 1 && conv_threads(s) > 1)
  for (int64_t p = 0; p < planes; ++p) {
    const int c = static_cast<int>(p % s.c_in);
    const float* dyp = dy + p * ohw;
    const float* wc = w + int64_t(c) * s.kh * s.kw;
    float* dxp = dx + p * hw;
    for (int64_t i = 0; i < hw; ++i) dxp[i] = 0.0f;
    for (int kh = 0; kh < s.kh; ++kh) {
      int oh_lo, oh_hi;
      valid_range(oh_n, s.h, s.stride_h, s.pad_h, kh, oh_lo, oh_hi);
      for (int kw = 0; kw < s.kw; ++kw) {
        const float wv = wc[kh * s.kw + kw];
        if (mask) {
          const Run run = contiguous_run(s, kh, kw, oh_lo, oh_hi);
          const float* __restrict m = mask + int64_t(kw) * ohw + run.d0;
          const float* __restrict g = dyp + run.d0;
          float* __restrict d = dxp + run.src0;
#pragma omp simd
          for (int64_t i = 0; i < run.len; ++i) {
            const float v = g[i];
            d[i] += wv * (m[i] != 0.0f ? v : 0.0f);
          }
          continue;
        }
        int lo, hi;
        valid_range(ow_n, s.w, s.stride_w, s.pad_w, kw, lo, hi);
        const int off = kw - s.pad_w, st = s.stride_w;
        for (int oh = oh_lo; oh < oh_hi; ++oh) {
          const float* __restrict dyrow = dyp + int64_t(oh) * ow_n;
          float* __restrict dxrow = dxp + int64_t(oh * s.stride_h - s.pad_h + kh) * s.w;
          for (int ow = lo; ow < hi; ++ow) dxrow[ow * st + off] += wv * dyrow[ow];
        }
      }
    }
  }
}

void depthwise_backward_filter(const Conv2dShape& s, const float* x, const float* dy, float* dw,
                               float* db, const std::vector<int32_t>& filters) {
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t hw = int64_t(s.h) * s.w, ohw = int64_t(oh_n) * ow_n;
  const int kk = s.kh * s.kw;
  const int nf = static_cast<int>(filters.size());
  const float* mask = im2col_mask(s);
  // One selected channel per iteration: its KH*KW weights and its bias depend on that channel
  // only, so threads never share an output. Sums over one image are float, across images
  // double.
#pragma omp parallel for schedule(dynamic, 1) if (nf > 1 && conv_threads(s) > 1)
  for (int j = 0; j < nf; ++j) {
    const int c = filters[j];
    double bsum = 0.0;
    for (int kh = 0; kh < s.kh; ++kh) {
      int oh_lo, oh_hi;
      valid_range(oh_n, s.h, s.stride_h, s.pad_h, kh, oh_lo, oh_hi);
      for (int kw = 0; kw < s.kw; ++kw) {
        int lo, hi;
        valid_range(ow_n, s.w, s.stride_w, s.pad_w, kw, lo, hi);
        const int off = kw - s.pad_w, st = s.stride_w;
        const Run run = mask ? contiguous_run(s, kh, kw, oh_lo, oh_hi) : Run{0, 0, 0};
        double acc = 0.0;
        for (int n = 0; n < s.n; ++n) {
          const float* xp = x + (int64_t(n) * s.c_in + c) * hw;
          const float* dyp = dy + (int64_t(n) * s.c_out + c) * ohw;
          float a = 0.0f;
          if (mask) {
            const float* __restrict m = mask + int64_t(kw) * ohw + run.d0;
            const float* __restrict g = dyp + run.d0;
            const float* __restrict xs = xp + run.src0;
#pragma omp simd reduction(+ : a)
            for (int64_t i = 0; i < run.len; ++i) {
              const float v = g[i];
              a += (m[i] != 0.0f ? v : 0.0f) * xs[i];
            }
          } else {
            for (int oh = oh_lo; oh < oh_hi; ++oh) {
              const float* xrow = xp + int64_t(oh * s.stride_h - s.pad_h + kh) * s.w;
              const float* dyrow = dyp + int64_t(oh) * ow_n;
              for (int ow = lo; ow < hi; ++ow) a += dyrow[ow] * xrow[ow * st + off];
            }
          }
          acc += a;
        }
        dw[int64_t(c) * kk + kh * s.kw + kw] = static_cast<float>(acc);
      }
    }
    if (db) {
      for (int n = 0; n < s.n; ++n) {
        const float* dyp = dy + (int64_t(n) * s.c_out + c) * ohw;
        float rs = 0.0f;
#pragma omp simd reduction(+ : rs)
        for (int64_t i = 0; i < ohw; ++i) rs += dyp[i];
        bsum += rs;
      }
      db[c] = static_cast<float>(bsum);
    }
  }
}

}  // namespace nns::ops::cpu
