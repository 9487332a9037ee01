#include "kernels/cpu/im2col.h"

#include <algorithm>
#include <cstring>

namespace nns::ops::cpu {

namespace {

inline void zero(float* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) p[i] = 0.0f;
}

}  // namespace

void im2col_mask_build(const Conv2dShape& s, float* mask) {
  // mask[kw * OHW + oh*OW + ow] = 1 when input column ow*stride_w - pad_w + kw is inside.
  const int oh_n = s.out_h(), ow_n = s.out_w();
  for (int kw = 0; kw < s.kw; ++kw) {
    int lo, hi;
    valid_range(ow_n, s.w, s.stride_w, s.pad_w, kw, lo, hi);
    float* m = mask + int64_t(kw) * oh_n * ow_n;
    for (int oh = 0; oh < oh_n; ++oh)
      for (int ow = 0; ow < ow_n; ++ow) m[int64_t(oh) * ow_n + ow] = (ow >= lo && ow < hi) ? 1.0f : 0.0f;
  }
}

int64_t im2col_mask_size(const Conv2dShape& s) {
  return contiguous_rows(s) ? int64_t(s.kw) * s.out_h() * s.out_w() : 0;
}

void im2col_block(const Conv2dShape& s, const float* x, int nb, float* cols, const float* mask,
                  bool threaded) {
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t ohw = int64_t(oh_n) * ow_n;
  const int64_t hw = int64_t(s.h) * s.w;
  const int64_t ncols = ohw * nb;
  const int rows = s.c_in * s.kh * s.kw;
  const bool contiguous = contiguous_rows(s);
#pragma omp parallel for schedule(static) if (threaded)
  for (int r = 0; r < rows; ++r) {
    const int kw = r % s.kw;
    const int kh = (r / s.kw) % s.kh;
    const int c = r / (s.kw * s.kh);
    int lo, hi, oh_lo, oh_hi;
    valid_range(ow_n, s.w, s.stride_w, s.pad_w, kw, lo, hi);
    valid_range(oh_n, s.h, s.stride_h, s.pad_h, kh, oh_lo, oh_hi);
    const int off = kw - s.pad_w;  // iw = ow*stride_w + off
    float* crow = cols + r * ncols;
    for (int b = 0; b < nb; ++b) {
      const float* xp = x + (int64_t(b) * s.c_in + c) * hw;
      float* dst = crow + b * ohw;
      if (contiguous) {
        const Run run = contiguous_run(s, kh, kw, oh_lo, oh_hi);
        const float* __restrict m = mask + int64_t(kw) * ohw + run.d0;
        const float* __restrict src = xp + run.src0;
        float* __restrict d = dst + run.d0;
        zero(dst, run.d0);
#pragma omp simd
        for (int64_t i = 0; i < run.len; ++i) {
          const float v = src[i];  // unconditional load: lets the loop vectorise
          d[i] = m[i] != 0.0f ? v : 0.0f;
        }
        zero(dst + run.d0 + run.len, ohw - run.d0 - run.len);
        continue;
      }
      zero(dst, int64_t(oh_lo) * ow_n);
      for (int oh = oh_lo; oh < oh_hi; ++oh) {
        float* __restrict d = dst + int64_t(oh) * ow_n;
        const float* __restrict xrow = xp + int64_t(oh * s.stride_h - s.pad_h + kh) * s.w;
        for (int ow = 0; ow < lo; ++ow) d[ow] = 0.0f;
        if (s.stride_w == 1) {
#pragma omp simd
          for (int ow = lo; ow < hi; ++ow) d[ow] = xrow[ow + off];
        } else {
          const int st = s.stride_w;
          for (int ow = lo; ow < hi; ++ow) d[ow] = xrow[ow * st + off];
        }
        for (int ow = hi; ow < ow_n; ++ow) d[ow] = 0.0f;
      }
      zero(dst + int64_t(oh_hi) * ow_n, int64_t(oh_n - oh_hi) * ow_n);
    }
  }
}

void col2im_block(const Conv2dShape& s, const float* cols, int nb, float* dx, const float* mask,
                  bool threaded) {
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t ohw = int64_t(oh_n) * ow_n;
  const int64_t hw = int64_t(s.h) * s.w;
  const int64_t ncols = ohw * nb;
  const bool contiguous = contiguous_rows(s);
  // Rows of one input channel scatter into the same plane: walk channel by channel so that
  // plane stays in cache while its KH*KW rows are added. The first row written to a plane
  // could overwrite instead of add, but then padding positions would need zeroing anyway.
#pragma omp parallel for collapse(2) schedule(static) if (threaded)
  for (int b = 0; b < nb; ++b) {
    for (int c = 0; c < s.c_in; ++c) {
      float* xp = dx + (int64_t(b) * s.c_in + c) * hw;
      zero(xp, hw);
      for (int kh = 0; kh < s.kh; ++kh) {
        for (int kw = 0; kw < s.kw; ++kw) {
          const int r = (c * s.kh + kh) * s.kw + kw;
          int lo, hi, oh_lo, oh_hi;
          valid_range(ow_n, s.w, s.stride_w, s.pad_w, kw, lo, hi);
          valid_range(oh_n, s.h, s.stride_h, s.pad_h, kh, oh_lo, oh_hi);
          const int off = kw - s.pad_w;
          const float* src = cols + r * ncols + b * ohw;
          if (contiguous) {
            // The entries that wrap across a row edge are masked out: they add nothing.
            const Run run = contiguous_run(s, kh, kw, oh_lo, oh_hi);
            const float* __restrict m = mask + int64_t(kw) * ohw + run.d0;
            const float* __restrict sp = src + run.d0;
            float* __restrict d = xp + run.src0;
#pragma omp simd
            for (int64_t i = 0; i < run.len; ++i) {
              const float v = sp[i];
              d[i] += m[i] != 0.0f ? v : 0.0f;
            }
            continue;
          }
          for (int oh = oh_lo; oh < oh_hi; ++oh) {
            const float* __restrict sr = src + int64_t(oh) * ow_n;
            float* __restrict xrow = xp + int64_t(oh * s.stride_h - s.pad_h + kh) * s.w;
            if (s.stride_w == 1) {
#pragma omp simd
              for (int ow = lo; ow < hi; ++ow) xrow[ow + off] += sr[ow];
            } else {
              const int st = s.stride_w;
              for (int ow = lo; ow < hi; ++ow) xrow[ow * st + off] += sr[ow];
            }
          }
        }
      }
    }
  }
}

}  // namespace nns::ops::cpu
