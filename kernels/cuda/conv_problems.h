// The convolutions of the CUDA backend as implicit GEMMs (Problems for kernels/cuda/gemm_tile.h)
// and the per-element bodies of the depthwise kernels. Nothing here is materialised: the im2col
// matrix is read on the fly, padding and stride holes read as 0. Host- and device-callable, so
// the host tests emulate every kernel without a GPU.
//
// Shapes (kernels/ops.h): x [N, C_in, H, W], w [C_out, C_in/G, KH, KW], y [N, C_out, OH, OW];
// per group g: cin_g = C_in/G, cout_g = C_out/G.
//
//   forward          C[co, (n,oh,ow)]   = sum over (ci,kh,kw)  w[co, ci,kh,kw] x[n, ci, ih, iw]
//                    M = cout_g, N = N*OH*OW, K = cin_g*KH*KW, with ih = oh*s - p + kh
//   backward data    C[ci, (n,ih,iw)]   = sum over (co,kh,kw)  w[co, ci,kh,kw] dy[n, co, oh, ow]
//                    M = cin_g,  N = N*H*W,   K = cout_g*KH*KW, with oh = (ih + p - kh) / s when
//                    that divides exactly and lands inside [0, OH) (a transposed convolution)
//   backward filter  C[f, (ci,kh,kw)]   = sum over (n,oh,ow)   dy[n, f, oh, ow] x[n, ci, ih, iw]
//                    M = selected filters, N = cin_g*KH*KW, K = N*OH*OW (split-K)
//
// Every flat index must fit in int32 (checked by the callers): the index splits use FastDivmod.
#pragma once

#include <stdint.h>

#include "kernels/common/hd.h"
#include "kernels/cuda/fast_divmod.h"
#include "kernels/cuda/gemm_problems.h"
#include "kernels/cuda/gemm_tile.h"
#include "kernels/ops.h"

namespace nns::ops::cuda {

struct ConvGeom {
  int n, c_in, h, w, c_out, kh, kw, sh, sw, ph, pw, groups;
  int oh, ow, cin_g, cout_g, khkw, hw, ohw;
  FastDivmod div_khkw, div_kw, div_hw, div_w, div_ohw, div_ow, div_sh, div_sw, div_cin;
};

inline ConvGeom make_conv_geom(const Conv2dShape& s) {
  ConvGeom g;
  g.n = s.n;
  g.c_in = s.c_in;
  g.h = s.h;
  g.w = s.w;
  g.c_out = s.c_out;
  g.kh = s.kh;
  g.kw = s.kw;
  g.sh = s.stride_h;
  g.sw = s.stride_w;
  g.ph = s.pad_h;
  g.pw = s.pad_w;
  g.groups = s.groups;
  g.oh = s.out_h();
  g.ow = s.out_w();
  g.cin_g = s.c_in / s.groups;
  g.cout_g = s.c_out / s.groups;
  g.khkw = s.kh * s.kw;
  g.hw = s.h * s.w;
  g.ohw = g.oh * g.ow;
  g.div_khkw = FastDivmod(g.khkw);
  g.div_kw = FastDivmod(g.kw);
  g.div_hw = FastDivmod(g.hw);
  g.div_w = FastDivmod(g.w);
  g.div_ohw = FastDivmod(g.ohw);
  g.div_ow = FastDivmod(g.ow);
  g.div_sh = FastDivmod(g.sh);
  g.div_sw = FastDivmod(g.sw);
  g.div_cin = FastDivmod(g.c_in);
  return g;
}

// ---- forward: A = w (row-major [C_out, K]), B = im2col(x), epilogue in the store ----
struct ConvForwardGemm {
  static constexpr bool kAContigK = true;
  static constexpr bool kBContigN = true;  // n runs along ow
  int M, N, K;
  ConvGeom geo;
  const float* x;
  const float* w;
  float* y;
  Epilogue epi;

  NNS_HD float a(int g, int m, int k) const { return w[(int64_t(g) * geo.cout_g + m) * K + k]; }
  NNS_HD float b(int g, int k, int n) const {
    int ci, r, kh, kw, img, pix, oh, ow;
    geo.div_khkw.divmod(k, ci, r);
    geo.div_kw.divmod(r, kh, kw);
    geo.div_ohw.divmod(n, img, pix);
    geo.div_ow.divmod(pix, oh, ow);
    const int ih = oh * geo.sh - geo.ph + kh, iw = ow * geo.sw - geo.pw + kw;
    if (static_cast<unsigned>(ih) >= static_cast<unsigned>(geo.h) ||
        static_cast<unsigned>(iw) >= static_cast<unsigned>(geo.w))
      return 0.0f;
    return x[((int64_t(img) * geo.c_in + g * geo.cin_g + ci) * geo.h + ih) * geo.w + iw];
  }
  NNS_HD void store(int g, int m, int n, float v) const {
    const int co = g * geo.cout_g + m;
    int img, pix;
    geo.div_ohw.divmod(n, img, pix);
    y[(int64_t(img) * geo.c_out + co) * geo.ohw + pix] = epilogue_at(epi, co, v);
  }
};

inline ConvForwardGemm make_conv_forward_gemm(const Conv2dShape& s, const float* x, const float* w,
                                              const Epilogue& epi, float* y) {
  const ConvGeom geo = make_conv_geom(s);
  return ConvForwardGemm{geo.cout_g, geo.n * geo.ohw, geo.cin_g * geo.khkw, geo, x, w, y, epi};
}

// ---- backward data: A = w^T gathered per group, B = dy scattered back through the taps ----
struct ConvBackwardDataGemm {
  static constexpr bool kAContigK = true;  // runs of KH*KW along k
  static constexpr bool kBContigN = true;  // n runs along iw
  int M, N, K;
  ConvGeom geo;
  const float* dy;
  const float* w;
  float* dx;

  NNS_HD float a(int g, int m, int k) const {
    int co, r;
    geo.div_khkw.divmod(k, co, r);
    return w[((int64_t(g) * geo.cout_g + co) * geo.cin_g + m) * geo.khkw + r];
  }
  NNS_HD float b(int g, int k, int n) const {
    int co, r, kh, kw, img, pix, ih, iw;
    geo.div_khkw.divmod(k, co, r);
    geo.div_kw.divmod(r, kh, kw);
    geo.div_hw.divmod(n, img, pix);
    geo.div_w.divmod(pix, ih, iw);
    const int th = ih + geo.ph - kh, tw = iw + geo.pw - kw;
    if (th < 0 || tw < 0) return 0.0f;
    int oh, rh, ow, rw;
    geo.div_sh.divmod(th, oh, rh);
    geo.div_sw.divmod(tw, ow, rw);
    if (rh != 0 || rw != 0 || oh >= geo.oh || ow >= geo.ow) return 0.0f;
    return dy[(int64_t(img) * geo.c_out + g * geo.cout_g + co) * geo.ohw + oh * geo.ow + ow];
  }
  NNS_HD void store(int g, int m, int n, float v) const {
    int img, pix;
    geo.div_hw.divmod(n, img, pix);
    dx[(int64_t(img) * geo.c_in + g * geo.cin_g + m) * geo.hw + pix] = v;
  }
};

inline ConvBackwardDataGemm make_conv_backward_data_gemm(const Conv2dShape& s, const float* dy,
                                                         const float* w, float* dx) {
  const ConvGeom geo = make_conv_geom(s);
  return ConvBackwardDataGemm{geo.cin_g, geo.n * geo.hw, geo.cout_g * geo.khkw, geo, dy, w, dx};
}

// ---- backward filter: A = dy rows of the selected filters, B = im2col(x)^T ----
// Row m of group g is filter g*cout_g + m (all filters), or filters[m] when it belongs to group
// g (a list; rows of other groups, and entries outside [0, C_out), are zero and not stored).
struct ConvBackwardFilterGemm {
  static constexpr bool kAContigK = true;   // k runs along ow of dy
  static constexpr bool kBContigN = false;  // ... and of x
  int M, N, K;
  ConvGeom geo;
  const float* x;
  const float* dy;
  const int32_t* filters;
  float* dw;

  NNS_HD int filter(int g, int m) const {
    if (!filters) return g * geo.cout_g + m;
    const int f = filters[m];
    return (f >= g * geo.cout_g && f < (g + 1) * geo.cout_g) ? f : -1;
  }
  NNS_HD float a(int g, int m, int k) const {
    const int f = filter(g, m);
    if (f < 0) return 0.0f;
    int img, pix;
    geo.div_ohw.divmod(k, img, pix);
    return dy[(int64_t(img) * geo.c_out + f) * geo.ohw + pix];
  }
  NNS_HD float b(int g, int k, int n) const {
    int img, pix, oh, ow, ci, r, kh, kw;
    geo.div_ohw.divmod(k, img, pix);
    geo.div_ow.divmod(pix, oh, ow);
    geo.div_khkw.divmod(n, ci, r);
    geo.div_kw.divmod(r, kh, kw);
    const int ih = oh * geo.sh - geo.ph + kh, iw = ow * geo.sw - geo.pw + kw;
    if (static_cast<unsigned>(ih) >= static_cast<unsigned>(geo.h) ||
        static_cast<unsigned>(iw) >= static_cast<unsigned>(geo.w))
      return 0.0f;
    return x[((int64_t(img) * geo.c_in + g * geo.cin_g + ci) * geo.h + ih) * geo.w + iw];
  }
  NNS_HD void store(int g, int m, int n, float v) const {
    const int f = filter(g, m);
    if (f >= 0) dw[int64_t(f) * N + n] = v;
  }
};

// filters == nullptr: every filter (M = cout_g per group); otherwise the n_filters listed.
inline ConvBackwardFilterGemm make_conv_backward_filter_gemm(const Conv2dShape& s, const float* x,
                                                             const float* dy,
                                                             const int32_t* filters, int n_filters,
                                                             float* dw) {
  const ConvGeom geo = make_conv_geom(s);
  return ConvBackwardFilterGemm{filters ? n_filters : geo.cout_g,
                                geo.cin_g * geo.khkw,
                                geo.n * geo.ohw,
                                geo,
                                x,
                                dy,
                                filters,
                                dw};
}

// ---- depthwise (groups == C_in == C_out): direct per-element bodies ----

inline bool conv_is_depthwise(const Conv2dShape& s) {
  return s.groups > 1 && s.groups == s.c_in && s.c_out == s.c_in;
}

// y[i] for the flat output index i (i < N*C*OH*OW): the KH x KW taps of plane (n, c), padding
// taps skipped, then the epilogue of channel c.
NNS_HD inline float depthwise_forward_at(const ConvGeom& geo, const float* x, const float* w,
                                         const Epilogue& epi, int i) {
  int plane, pix, oh, ow, img, c;
  geo.div_ohw.divmod(i, plane, pix);
  geo.div_ow.divmod(pix, oh, ow);
  geo.div_cin.divmod(plane, img, c);
  const float* xp = x + int64_t(plane) * geo.hw;
  const float* wc = w + int64_t(c) * geo.khkw;
  float acc = 0.0f;
  for (int kh = 0; kh < geo.kh; ++kh) {
    const int ih = oh * geo.sh - geo.ph + kh;
    if (static_cast<unsigned>(ih) >= static_cast<unsigned>(geo.h)) continue;
    for (int kw = 0; kw < geo.kw; ++kw) {
      const int iw = ow * geo.sw - geo.pw + kw;
      if (static_cast<unsigned>(iw) >= static_cast<unsigned>(geo.w)) continue;
      acc += wc[kh * geo.kw + kw] * xp[ih * geo.w + iw];
    }
  }
  return epilogue_at(epi, c, acc);
}

// dx[i] for the flat input index i (i < N*C*H*W): a gather over the taps that read (ih, iw).
NNS_HD inline float depthwise_backward_data_at(const ConvGeom& geo, const float* dy, const float* w,
                                               int i) {
  int plane, pix, ih, iw, img, c;
  geo.div_hw.divmod(i, plane, pix);
  geo.div_w.divmod(pix, ih, iw);
  geo.div_cin.divmod(plane, img, c);
  const float* dyp = dy + int64_t(plane) * geo.ohw;
  const float* wc = w + int64_t(c) * geo.khkw;
  float acc = 0.0f;
  for (int kh = 0; kh < geo.kh; ++kh) {
    const int th = ih + geo.ph - kh;
    if (th < 0) continue;
    int oh, rh;
    geo.div_sh.divmod(th, oh, rh);
    if (rh != 0 || oh >= geo.oh) continue;
    for (int kw = 0; kw < geo.kw; ++kw) {
      const int tw = iw + geo.pw - kw;
      if (tw < 0) continue;
      int ow, rw;
      geo.div_sw.divmod(tw, ow, rw);
      if (rw != 0 || ow >= geo.ow) continue;
      acc += wc[kh * geo.kw + kw] * dyp[oh * geo.ow + ow];
    }
  }
  return acc;
}

// Taps accumulated per pass of the depthwise filter gradient (registers per thread); larger
// kernels take several passes (grid z).
constexpr int kDepthwiseTapChunk = 16;

// For channel c and output element e (e < N*OH*OW, over (n, oh, ow)): acc[q] += dy * x-tap for
// the taps t0 + q, q < nt <= kDepthwiseTapChunk.
NNS_HD inline void depthwise_filter_accumulate(const ConvGeom& geo, const float* x, const float* dy,
                                               int c, int e, int t0, int nt, float* acc) {
  int img, pix, oh, ow;
  geo.div_ohw.divmod(e, img, pix);
  geo.div_ow.divmod(pix, oh, ow);
  const int64_t plane = int64_t(img) * geo.c_in + c;
  const float d = dy[plane * geo.ohw + pix];
  const float* xp = x + plane * geo.hw;
  NNS_UNROLL
  for (int q = 0; q < kDepthwiseTapChunk; ++q) {
    if (q < nt) {
      int kh, kw;
      geo.div_kw.divmod(t0 + q, kh, kw);
      const int ih = oh * geo.sh - geo.ph + kh, iw = ow * geo.sw - geo.pw + kw;
      if (static_cast<unsigned>(ih) < static_cast<unsigned>(geo.h) &&
          static_cast<unsigned>(iw) < static_cast<unsigned>(geo.w))
        acc[q] += d * xp[ih * geo.w + iw];
    }
  }
}

}  // namespace nns::ops::cuda
