// Blocked-layout BatchNorm, element-wise, pooling and reorder ops (eltwise.h). Loops run over
// the L lanes of a pixel innermost, so that they vectorise at any L; the reductions keep
// per-thread float partial sums per (image, channel block) and combine them in double, which
// is what ops::batchnorm_forward_train does per channel.
#include "kernels/cpu/blocked/eltwise.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/common/activation.h"
#include "kernels/common/batchnorm.h"
#include "kernels/cpu/parallel.h"

namespace nns::ops::cpu::blocked {

namespace {

constexpr int kMaxLanes = 16;

bool parallel_for(int64_t elements) { return elements >= kParallelElements; }

// Sums over N*HW of f(n, cb, p, lane) per channel, in double, into out[cpad]. The per-thread
// partials live in `partial` (threads x cpad doubles).
template <class F>
void channel_sums(const Dims& d, double* partial, double* out, F&& value_of_plane) {
  const int cpad = d.cpad(), cb = d.cb(), L = d.lanes;
  const int threads = omp_get_max_threads();
  std::fill(partial, partial + int64_t(threads) * cpad, 0.0);
#pragma omp parallel if (parallel_for(d.size()))
  {
    double* mine = partial + int64_t(omp_get_thread_num()) * cpad;
#pragma omp for schedule(static) collapse(2)
    for (int n = 0; n < d.n; ++n)
      for (int b = 0; b < cb; ++b) {
        float acc[kMaxLanes] = {};
        value_of_plane(n, b, acc);
        for (int l = 0; l < L; ++l) mine[b * L + l] += acc[l];
      }
  }
  std::fill(out, out + cpad, 0.0);
  for (int t = 0; t < threads; ++t)
    for (int c = 0; c < cpad; ++c) out[c] += partial[int64_t(t) * cpad + c];
}

inline int64_t plane_offset(const Dims& d, int n, int b) {
  return (int64_t(n) * d.cb() + b) * d.hw * d.lanes;
}


}  // namespace

// Layout of `partial`: threads x cpad per-thread sums, two cpad sums, then per-channel float
// constants (up to 6 x cpad floats = 3 x cpad doubles).
int64_t partial_doubles(const Dims& d, int threads) { return int64_t(threads + 5) * d.cpad(); }

namespace {
float* channel_floats(const Dims& d, double* partial, int which) {
  return reinterpret_cast<float*>(partial + int64_t(omp_get_max_threads() + 2) * d.cpad()) +
         int64_t(which) * d.cpad();
}
}  // namespace

namespace {
// y = act(a[c] * x + b[c] + residual) with a, b given for every padded channel (zero on the
// padding lanes).
void affine_forward_padded(const Dims& d, const float* x, const float* a, const float* b,
                           const float* residual, Activation act, float* y) {
  const int L = d.lanes, cb = d.cb();
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int blk = 0; blk < cb; ++blk) {
      const int64_t off = plane_offset(d, n, blk);
      const float* xp = x + off;
      const float* rp = residual ? residual + off : nullptr;
      float* yp = y + off;
      const float* av = a + blk * L;
      const float* bv = b + blk * L;
      for (int i = 0; i < d.hw; ++i) {
        const int64_t o = int64_t(i) * L;
        if (rp) {
#pragma omp simd
          for (int l = 0; l < L; ++l)
            yp[o + l] = common::act_forward(act, xp[o + l] * av[l] + bv[l] + rp[o + l]);
        } else {
#pragma omp simd
          for (int l = 0; l < L; ++l) yp[o + l] = common::act_forward(act, xp[o + l] * av[l] + bv[l]);
        }
      }
    }
  // act(0) = 0 for None, ReLU and ReLU6: zero padding in x and residual stays zero.
}
}  // namespace

void to_blocked(const Dims& d, const float* nchw, float* blk) {
  const int L = d.lanes, cb = d.cb();
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      float* o = blk + plane_offset(d, n, b);
      const int c0 = b * L, used = std::min(L, d.c - c0);
      for (int p = 0; p < d.hw; ++p) {
        for (int l = 0; l < used; ++l) o[int64_t(p) * L + l] = nchw[(int64_t(n) * d.c + c0 + l) * d.hw + p];
        for (int l = used; l < L; ++l) o[int64_t(p) * L + l] = 0.0f;
      }
    }
}

void from_blocked(const Dims& d, const float* blk, float* nchw) {
  const int L = d.lanes, cb = d.cb();
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      const float* i = blk + plane_offset(d, n, b);
      const int c0 = b * L, used = std::min(L, d.c - c0);
      for (int l = 0; l < used; ++l) {
        float* o = nchw + (int64_t(n) * d.c + c0 + l) * d.hw;
        for (int p = 0; p < d.hw; ++p) o[p] = i[int64_t(p) * L + l];
      }
    }
}

void bn_train_forward(const Dims& d, const float* x, const float* gamma, const float* beta,
                      const float* residual, Activation act, float momentum, float eps,
                      float* running_mean, float* running_var, float* save_mean,
                      float* save_invstd, float* y, double* partial) {
  const int L = d.lanes, cpad = d.cpad(), threads = omp_get_max_threads();
  const int64_t m = int64_t(d.n) * d.hw;
  double* sums = partial + int64_t(threads) * cpad;
  // Pass 1: mean.
  channel_sums(d, partial, sums, [&](int n, int b, float* acc) {
    const float* p = x + plane_offset(d, n, b);
    for (int i = 0; i < d.hw; ++i)
#pragma omp simd
      for (int l = 0; l < L; ++l) acc[l] += p[int64_t(i) * L + l];
  });
  float* mean = channel_floats(d, partial, 0);
  for (int c = 0; c < cpad; ++c) mean[c] = c < d.c ? float(sums[c] / double(m)) : 0.0f;
  // Pass 2: squared deviations.
  channel_sums(d, partial, sums, [&](int n, int b, float* acc) {
    const float* p = x + plane_offset(d, n, b);
    const float* mu = mean + b * L;
    for (int i = 0; i < d.hw; ++i)
#pragma omp simd
      for (int l = 0; l < L; ++l) {
        const float dv = p[int64_t(i) * L + l] - mu[l];
        acc[l] += dv * dv;
      }
  });
  // Per channel: statistics, running update, affine constants.
  float* a = channel_floats(d, partial, 1);
  float* sh = channel_floats(d, partial, 2);
  for (int c = 0; c < cpad; ++c) {
    if (c >= d.c) {
      a[c] = sh[c] = 0.0f;
      continue;
    }
    const double var = sums[c] / double(m);
    const float invstd = common::bn_invstd(float(var), eps);
    const float mu = mean[c];
    save_mean[c] = mu;
    save_invstd[c] = invstd;
    if (running_mean) running_mean[c] = common::bn_running_update(running_mean[c], mu, momentum);
    if (running_var)
      running_var[c] = common::bn_running_update(running_var[c], float(sums[c] / double(m - 1)),
                                                 momentum);
    const common::BnAffine t =
        common::bn_affine(mu, invstd, gamma ? gamma[c] : 1.0f, beta ? beta[c] : 0.0f);
    a[c] = t.a;
    sh[c] = t.b;
  }
  // Pass 3: normalise, add, activate (padding lanes: a = b = 0 and residual 0 -> 0).
  affine_forward_padded(d, x, a, sh, residual, act, y);
}


void affine_forward(const Dims& d, const float* x, const float* scale, const float* shift,
                    const float* residual, Activation act, float* y, double* partial) {
  float* a = channel_floats(d, partial, 0);
  float* b = channel_floats(d, partial, 1);
  for (int c = 0; c < d.cpad(); ++c) {
    a[c] = c < d.c ? scale[c] : 0.0f;
    b[c] = c < d.c ? shift[c] : 0.0f;
  }
  affine_forward_padded(d, x, a, b, residual, act, y);
}

void bn_train_backward(const Dims& d, const float* x, const float* y, const float* dy,
                       Activation act, const float* gamma, const float* save_mean,
                       const float* save_invstd, float* dx, float* dresidual,
                       bool add_to_dresidual, float* dgamma, float* dbeta, double* partial) {
  const int L = d.lanes, cpad = d.cpad(), threads = omp_get_max_threads();
  const int64_t m = int64_t(d.n) * d.hw;
  double* sdy = partial + int64_t(threads) * cpad;
  double* sdyx = sdy + cpad;
  // g = dy * act'(y) is recomputed in both passes instead of stored.
  channel_sums(d, partial, sdy, [&](int n, int b, float* acc) {
    const int64_t off = plane_offset(d, n, b);
    for (int i = 0; i < d.hw; ++i) {
      const int64_t o = off + int64_t(i) * L;
#pragma omp simd
      for (int l = 0; l < L; ++l) acc[l] += common::act_backward(act, y[o + l], dy[o + l]);
    }
  });
  float* mean = channel_floats(d, partial, 0);
  float* inv = channel_floats(d, partial, 1);
  float* kk = channel_floats(d, partial, 2);
  float* mdy = channel_floats(d, partial, 3);
  float* mdyx = channel_floats(d, partial, 4);
  for (int c = 0; c < cpad; ++c) {
    mean[c] = c < d.c ? save_mean[c] : 0.0f;
    inv[c] = c < d.c ? save_invstd[c] : 0.0f;
  }
  channel_sums(d, partial, sdyx, [&](int n, int b, float* acc) {
    const int64_t off = plane_offset(d, n, b);
    const float* mu = mean + b * L;
    for (int i = 0; i < d.hw; ++i) {
      const int64_t o = off + int64_t(i) * L;
#pragma omp simd
      for (int l = 0; l < L; ++l)
        acc[l] += common::act_backward(act, y[o + l], dy[o + l]) * (x[o + l] - mu[l]);
    }
  });
  for (int c = 0; c < cpad; ++c) {
    if (c >= d.c) {
      kk[c] = mdy[c] = mdyx[c] = 0.0f;
      continue;
    }
    const double sdy_xhat = sdyx[c] * save_invstd[c];
    if (dgamma) dgamma[c] = float(sdy_xhat);
    if (dbeta) dbeta[c] = float(sdy[c]);
    kk[c] = (gamma ? gamma[c] : 1.0f) * save_invstd[c];
    mdy[c] = float(sdy[c] / double(m));
    mdyx[c] = float(sdy_xhat / double(m));
  }
  const int cb = d.cb();
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      const int64_t off = plane_offset(d, n, b);
      const float *k = kk + b * L, *md = mdy + b * L, *mx = mdyx + b * L, *mu = mean + b * L,
                  *is = inv + b * L;
      for (int i = 0; i < d.hw; ++i) {
        const int64_t o = off + int64_t(i) * L;
#pragma omp simd
        for (int l = 0; l < L; ++l) {
          const float g = common::act_backward(act, y[o + l], dy[o + l]);
          if (dresidual) dresidual[o + l] = add_to_dresidual ? dresidual[o + l] + g : g;
          if (dx) {
            common::BnBackwardConsts bc{k[l], md[l], mx[l]};
            dx[o + l] = common::bn_backward_dx(x[o + l], g, mu[l], is[l], bc);
          }
        }
      }
    }
}

void affine_backward(const Dims& d, const float* x, const float* y, const float* dy,
                     Activation act, const float* scale, const float* mean, const float* invstd,
                     float* dx, float* dresidual, bool add_to_dresidual, float* dgamma,
                     float* dbeta, double* partial) {
  const int L = d.lanes, cb = d.cb(), cpad = d.cpad(), threads = omp_get_max_threads();
  if (dgamma || dbeta) {
    double* sg = partial + int64_t(threads) * cpad;
    double* sgx = sg + cpad;
    channel_sums(d, partial, sg, [&](int n, int b, float* acc) {
      const int64_t off = plane_offset(d, n, b);
      for (int i = 0; i < d.hw; ++i) {
        const int64_t o = off + int64_t(i) * L;
#pragma omp simd
        for (int l = 0; l < L; ++l) acc[l] += common::act_backward(act, y[o + l], dy[o + l]);
      }
    });
    float* mus = channel_floats(d, partial, 0);
    float* iss = channel_floats(d, partial, 1);
    for (int c = 0; c < cpad; ++c) {
      mus[c] = c < d.c ? mean[c] : 0.0f;
      iss[c] = c < d.c ? invstd[c] : 0.0f;
    }
    channel_sums(d, partial, sgx, [&](int n, int b, float* acc) {
      const int64_t off = plane_offset(d, n, b);
      const float *mu = mus + b * L, *is = iss + b * L;
      for (int i = 0; i < d.hw; ++i) {
        const int64_t o = off + int64_t(i) * L;
#pragma omp simd
        for (int l = 0; l < L; ++l)
          acc[l] += common::act_backward(act, y[o + l], dy[o + l]) * (x[o + l] - mu[l]) * is[l];
      }
    });
    for (int c = 0; c < d.c; ++c) {
      if (dgamma) dgamma[c] = float(sgx[c]);
      if (dbeta) dbeta[c] = float(sg[c]);
    }
  }
  if (!dx && !dresidual) return;
  float* sc = channel_floats(d, partial, 2);
  for (int c = 0; c < cpad; ++c) sc[c] = c < d.c && scale ? scale[c] : 0.0f;
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      const int64_t off = plane_offset(d, n, b);
      const float* s = sc + b * L;
      for (int i = 0; i < d.hw; ++i) {
        const int64_t o = off + int64_t(i) * L;
#pragma omp simd
        for (int l = 0; l < L; ++l) {
          const float g = common::act_backward(act, y[o + l], dy[o + l]);
          if (dresidual) dresidual[o + l] = add_to_dresidual ? dresidual[o + l] + g : g;
          if (dx) dx[o + l] = g * s[l];
        }
      }
    }
}

void add_act(int64_t count, const float* a, const float* b, Activation act, float* y) {
  if (b) {
#pragma omp parallel for simd schedule(static) if (parallel_for(count))
    for (int64_t i = 0; i < count; ++i) y[i] = common::act_forward(act, a[i] + b[i]);
  } else {
#pragma omp parallel for simd schedule(static) if (parallel_for(count))
    for (int64_t i = 0; i < count; ++i) y[i] = common::act_forward(act, a[i]);
  }
}

void act_backward(int64_t count, Activation act, const float* y, const float* dy, float* dx,
                  bool accumulate) {
  if (accumulate) {
#pragma omp parallel for simd schedule(static) if (parallel_for(count))
    for (int64_t i = 0; i < count; ++i) dx[i] += common::act_backward(act, y[i], dy[i]);
  } else {
#pragma omp parallel for simd schedule(static) if (parallel_for(count))
    for (int64_t i = 0; i < count; ++i) dx[i] = common::act_backward(act, y[i], dy[i]);
  }
}

void accumulate(int64_t count, const float* x, float* y) {
#pragma omp parallel for simd schedule(static) if (parallel_for(count))
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

void maxpool_forward(const Dims& d, const Pool& p, const float* x, float* y, int32_t* argmax) {
  const int L = d.lanes, cb = d.cb();
  const int64_t ohw = int64_t(p.out_h) * p.out_w;
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      const float* xp = x + (int64_t(n) * cb + b) * d.hw * L;
      float* yp = y + (int64_t(n) * cb + b) * ohw * L;
      int32_t* ap = argmax + (int64_t(n) * cb + b) * ohw * L;
      for (int oh = 0; oh < p.out_h; ++oh) {
        const int h0 = oh * p.stride_h - p.pad_t;
        const int hs = std::max(h0, 0), he = std::min(h0 + p.kh, p.h);
        for (int ow = 0; ow < p.out_w; ++ow) {
          const int w0 = ow * p.stride_w - p.pad_l;
          const int ws = std::max(w0, 0), we = std::min(w0 + p.kw, p.w);
          float best[kMaxLanes];
          int32_t bi[kMaxLanes];
          const int first = hs * p.w + ws;
          for (int l = 0; l < L; ++l) {
            best[l] = xp[int64_t(first) * L + l];
            bi[l] = first;
          }
          for (int ih = hs; ih < he; ++ih)
            for (int iw = ws; iw < we; ++iw) {
              const int idx = ih * p.w + iw;
              const float* v = xp + int64_t(idx) * L;
#pragma omp simd
              for (int l = 0; l < L; ++l) {
                const bool take = v[l] > best[l] || v[l] != v[l];
                best[l] = take ? v[l] : best[l];
                bi[l] = take ? idx : bi[l];
              }
            }
          const int64_t o = (int64_t(oh) * p.out_w + ow) * L;
          for (int l = 0; l < L; ++l) {
            yp[o + l] = best[l];
            ap[o + l] = bi[l];
          }
        }
      }
    }
}

void maxpool_backward(const Dims& d, const Pool& p, const float* dy, const int32_t* argmax,
                      float* dx, bool accumulate) {
  const int L = d.lanes, cb = d.cb();
  const int64_t ohw = int64_t(p.out_h) * p.out_w;
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      float* xp = dx + (int64_t(n) * cb + b) * d.hw * L;
      const float* yp = dy + (int64_t(n) * cb + b) * ohw * L;
      const int32_t* ap = argmax + (int64_t(n) * cb + b) * ohw * L;
      if (!accumulate) std::memset(xp, 0, sizeof(float) * size_t(d.hw) * L);
      for (int64_t o = 0; o < ohw; ++o)
        for (int l = 0; l < L; ++l) xp[int64_t(ap[o * L + l]) * L + l] += yp[o * L + l];
    }
}

void avgpool_forward(const Dims& d, const Pool& p, const float* x, float* y) {
  const int L = d.lanes, cb = d.cb();
  const int64_t ohw = int64_t(p.out_h) * p.out_w;
  const float inv = 1.0f / float(p.kh * p.kw);
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      const float* xp = x + (int64_t(n) * cb + b) * d.hw * L;
      float* yp = y + (int64_t(n) * cb + b) * ohw * L;
      for (int oh = 0; oh < p.out_h; ++oh) {
        const int h0 = oh * p.stride_h - p.pad_t;
        const int hs = std::max(h0, 0), he = std::min(h0 + p.kh, p.h);
        for (int ow = 0; ow < p.out_w; ++ow) {
          const int w0 = ow * p.stride_w - p.pad_l;
          const int ws = std::max(w0, 0), we = std::min(w0 + p.kw, p.w);
          float acc[kMaxLanes] = {};
          for (int ih = hs; ih < he; ++ih)
            for (int iw = ws; iw < we; ++iw) {
              const float* v = xp + int64_t(ih * p.w + iw) * L;
#pragma omp simd
              for (int l = 0; l < L; ++l) acc[l] += v[l];
            }
          float* o = yp + (int64_t(oh) * p.out_w + ow) * L;
          for (int l = 0; l < L; ++l) o[l] = acc[l] * inv;
        }
      }
    }
}

void avgpool_backward(const Dims& d, const Pool& p, const float* dy, float* dx, bool accumulate) {
  const int L = d.lanes, cb = d.cb();
  const int64_t ohw = int64_t(p.out_h) * p.out_w;
  const float inv = 1.0f / float(p.kh * p.kw);
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      float* xp = dx + (int64_t(n) * cb + b) * d.hw * L;
      const float* yp = dy + (int64_t(n) * cb + b) * ohw * L;
      if (!accumulate) std::memset(xp, 0, sizeof(float) * size_t(d.hw) * L);
      for (int oh = 0; oh < p.out_h; ++oh) {
        const int h0 = oh * p.stride_h - p.pad_t;
        const int hs = std::max(h0, 0), he = std::min(h0 + p.kh, p.h);
        for (int ow = 0; ow < p.out_w; ++ow) {
          const int w0 = ow * p.stride_w - p.pad_l;
          const int ws = std::max(w0, 0), we = std::min(w0 + p.kw, p.w);
          const float* g = yp + (int64_t(oh) * p.out_w + ow) * L;
          for (int ih = hs; ih < he; ++ih)
            for (int iw = ws; iw < we; ++iw) {
              float* v = xp + int64_t(ih * p.w + iw) * L;
#pragma omp simd
              for (int l = 0; l < L; ++l) v[l] += g[l] * inv;
            }
        }
      }
    }
}

void global_avgpool_forward(const Dims& d, const float* x, float* y) {
  const int L = d.lanes, cb = d.cb();
  const float inv = 1.0f / float(d.hw);
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      const float* xp = x + plane_offset(d, n, b);
      float acc[kMaxLanes] = {};
      for (int i = 0; i < d.hw; ++i)
#pragma omp simd
        for (int l = 0; l < L; ++l) acc[l] += xp[int64_t(i) * L + l];
      for (int l = 0; l < L && b * L + l < d.c; ++l) y[int64_t(n) * d.c + b * L + l] = acc[l] * inv;
    }
}

void global_avgpool_backward(const Dims& d, const float* dy, float* dx, bool accumulate) {
  const int L = d.lanes, cb = d.cb();
  const float inv = 1.0f / float(d.hw);
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      float* xp = dx + plane_offset(d, n, b);
      float g[kMaxLanes];
      for (int l = 0; l < L; ++l)
        g[l] = b * L + l < d.c ? dy[int64_t(n) * d.c + b * L + l] * inv : 0.0f;
      for (int i = 0; i < d.hw; ++i) {
        float* o = xp + int64_t(i) * L;
        if (accumulate) {
#pragma omp simd
          for (int l = 0; l < L; ++l) o[l] += g[l];
        } else {
#pragma omp simd
          for (int l = 0; l < L; ++l) o[l] = g[l];
        }
      }
    }
}

}  // namespace nns::ops::cpu::blocked
