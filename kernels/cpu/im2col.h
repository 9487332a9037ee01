// im2col / col2im over a block of consecutive images, the lowering that turns a convolution
// into one GEMM per group.
//
// cols [C_in*KH*KW, nb*OH*OW]: row r = (c*KH + kh)*KW + kw, column b*OH*OW + oh*OW + ow holds
// x[b, c, oh*stride_h - pad_h + kh, ow*stride_w - pad_w + kw] (0 outside the image).
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/ops.h"

namespace nns::ops::cpu {

// Output indexes o whose input index o*stride - pad + k lies in [0, in): [lo, hi).
inline void valid_range(int out, int in, int stride, int pad, int k, int& lo, int& hi) {
  // i >= 0  <=>  o >= (pad - k) / stride, rounded up.
  const int first = pad - k;
  lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  // i <= in - 1  <=>  o <= (in - 1 + pad - k) / stride, rounded down.
  const int last = in - 1 + pad - k;
  hi = last < 0 ? 0 : std::min(out, last / stride + 1);
  if (hi < lo) hi = lo;
}

// Stride 1 with OW == W (e.g. "same" padding): a row of cols restricted to its valid output
// rows is the input plane shifted by one offset, so it moves as one contiguous run; the few
// elements that wrap across a row edge fall on padding columns and are masked to zero.
inline bool contiguous_rows(const Conv2dShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && s.out_w() == s.w;
}

// The contiguous run of one cols row: cols[d0 + i] <-> x[src0 + i] for i < len, clipped to the
// input plane (the clipped ends are padding columns).
struct Run {
  int64_t d0, src0, len;
};
inline Run contiguous_run(const Conv2dShape& s, int kh, int kw, int oh_lo, int oh_hi) {
  const int ow_n = s.out_w();
  const int64_t hw = int64_t(s.h) * s.w;
  Run r;
  r.d0 = int64_t(oh_lo) * ow_n;
  r.src0 = int64_t(oh_lo - s.pad_h + kh) * s.w + (kw - s.pad_w);
  r.len = int64_t(oh_hi - oh_lo) * ow_n;
  if (r.len <= 0) return Run{0, 0, 0};
  if (r.src0 < 0) {
    r.d0 -= r.src0;
    r.len += r.src0;
    r.src0 = 0;
  }
  if (r.src0 + r.len > hw) r.len = hw - r.src0;
  if (r.len < 0) r.len = 0;
  return r;
}

// Stride-1 "same width" convs copy whole shifted planes and mask the padding columns with a
// per-kw mask of OH*OW floats (1 inside, 0 on padding). im2col_mask_size is 0 when the shape
// needs no mask; otherwise build it once per call (im2col_mask_build) and pass it to every
// im2col_block / col2im_block of that call.
int64_t im2col_mask_size(const Conv2dShape& s);
void im2col_mask_build(const Conv2dShape& s, float* mask);

// x points at the first image of the block (x + n0 * C_in*H*W). Overwrites cols. `threaded`
// spreads the rows over OpenMP threads (for callers outside a parallel region).
void im2col_block(const Conv2dShape& s, const float* x, int nb, float* cols, const float* mask,
                  bool threaded);

// dx = the inverse scatter-add of cols (the transpose of im2col_block); overwrites the nb
// images of dx.
void col2im_block(const Conv2dShape& s, const float* cols, int nb, float* dx, const float* mask,
                  bool threaded);

// True when the conv needs no lowering: cols for one image is x itself.
inline bool conv_is_pointwise(const Conv2dShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 &&
         s.pad_w == 0;
}

}  // namespace nns::ops::cpu
