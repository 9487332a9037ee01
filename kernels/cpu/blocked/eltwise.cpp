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
#include <type_traits>

#include "kernels/common/activation.h"
#include "kernels/common/batchnorm.h"
#include "kernels/cpu/parallel.h"

namespace nns::ops::cpu::blocked {

namespace {

constexpr int kMaxLanes = 16;

bool parallel_for(int64_t elements) { return elements >= kParallelElements; }

inline int64_t plane_offset(const Dims& d, int n, int b) {
  return (int64_t(n) * d.cb() + b) * d.hw * d.lanes;
}

// Compile-time activation: with A a constant, common::act_forward's switch folds away and the
// lane loops vectorise (a run-time switch per element kept them scalar: BatchNorm backward was
// the slowest step of a resnet20 training pass).
template <Activation A>
struct Act {
  static float fwd(float x) { return common::act_forward(A, x); }
  static float bwd(float y, float dy) { return common::act_backward(A, y, dy); }
};
template <class F>
void with_act(Activation a, F&& f) {
  switch (a) {
    case Activation::None: return f(Act<Activation::None>{});
    case Activation::ReLU: return f(Act<Activation::ReLU>{});
    case Activation::ReLU6: return f(Act<Activation::ReLU6>{});
    case Activation::Tanh: return f(Act<Activation::Tanh>{});
    case Activation::Sigmoid: return f(Act<Activation::Sigmoid>{});
  }
}
// Compile-time lane counts for the block widths (8, 16); any other (NHWC) at run time.
template <class F>
void with_lanes(int lanes, F&& f) {
  if (lanes == 16) return f(std::integral_constant<int, 16>{});
  if (lanes == 8) return f(std::integral_constant<int, 8>{});
  return f(0);
}
template <class LC>
int lanes_of(LC lc, const Dims& d) {
  if constexpr (std::is_same_v<LC, int>) {
    (void)lc;
    return d.lanes;
  } else {
    return LC::value;
  }
}

// Per-channel sums over N*HW, in double, into out[k][cpad] for K sums at once: each
// (image, channel block) plane is summed in float by `plane(n, b, acc)` (acc[K][kMaxLanes]),
// the planes combined per thread in double, the threads at the end. `partial` holds
// threads x K x cpad doubles.
template <int K, class F>
void channel_sums(const Dims& d, double* partial, double* out, F&& plane) {
  const int cpad = d.cpad(), cb = d.cb(), L = d.lanes;
  const int threads = omp_get_max_threads();
  std::fill(partial, partial + int64_t(threads) * K * cpad, 0.0);
#pragma omp parallel if (parallel_for(d.size()))
  {
    double* mine = partial + int64_t(omp_get_thread_num()) * K * cpad;
#pragma omp for schedule(static) collapse(2)
    for (int n = 0; n < d.n; ++n)
      for (int b = 0; b < cb; ++b) {
        float acc[K][kMaxLanes] = {};
        plane(n, b, acc);
        for (int k = 0; k < K; ++k)
          for (int l = 0; l < L; ++l) mine[k * cpad + b * L + l] += acc[k][l];
      }
  }
  std::fill(out, out + int64_t(K) * cpad, 0.0);
  for (int t = 0; t < threads; ++t)
    for (int i = 0; i < K * cpad; ++i) out[i] += partial[int64_t(t) * K * cpad + i];
}

}  // namespace

// Layout of `partial`: threads x 2 x cpad per-thread sums, 2 x cpad sums, then per-channel
// float constants (up to 8 x cpad floats = 4 x cpad doubles).
int64_t partial_doubles(const Dims& d, int threads) {
  return int64_t(2 * threads + 6) * d.cpad();
}

namespace {
float* channel_floats(const Dims& d, double* partial, int which) {
  return reinterpret_cast<float*>(partial + int64_t(2 * omp_get_max_threads() + 2) * d.cpad()) +
         int64_t(which) * d.cpad();
}
double* channel_sums_out(const Dims& d, double* partial) {
  return partial + int64_t(2 * omp_get_max_threads()) * d.cpad();
}

// y = act(a[c] * x + b[c] + residual) with a, b given for every padded channel (zero on the
// padding lanes).
template <class LC, class A>
void affine_forward_impl(LC lc, A, const Dims& d, const float* x, const float* a, const float* b,
                         const float* residual, float* y) {
  const int L = lanes_of(lc, d), cb = d.cb();
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
          for (int l = 0; l < L; ++l) yp[o + l] = A::fwd(xp[o + l] * av[l] + bv[l] + rp[o + l]);
        } else {
#pragma omp simd
          for (int l = 0; l < L; ++l) yp[o + l] = A::fwd(xp[o + l] * av[l] + bv[l]);
        }
      }
    }
  // act(0) = 0 for None, ReLU and ReLU6: zero padding in x and residual stays zero.
}

void affine_forward_padded(const Dims& d, const float* x, const float* a, const float* b,
                           const float* residual, Activation act, float* y) {
  with_lanes(d.lanes, [&](auto lc) {
    with_act(act, [&](auto A) { affine_forward_impl(lc, A, d, x, a, b, residual, y); });
  });
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
  const int L = d.lanes, cpad = d.cpad();
  const int64_t m = int64_t(d.n) * d.hw;
  // One pass for mean and variance, shifted by the first image's mean per channel (K): the
  // sums of (x - K) and (x - K)^2 lose nothing to cancellation while K is within a few
  // standard deviations of the batch mean, which one image's mean is. Float within a plane,
  // double across planes, as ops::batchnorm_forward_train.
  float* shift = channel_floats(d, partial, 0);
  for (int b = 0; b < d.cb(); ++b) {
    float acc[kMaxLanes] = {};
    const float* p = x + plane_offset(d, 0, b);
    for (int i = 0; i < d.hw; ++i)
      for (int l = 0; l < L; ++l) acc[l] += p[int64_t(i) * L + l];
    for (int l = 0; l < L; ++l) shift[b * L + l] = acc[l] / float(d.hw);
  }
  double* sums = channel_sums_out(d, partial);  // [0, cpad): sum(x - K), [cpad, 2cpad): squares
  with_lanes(L, [&](auto lc) {
    channel_sums<2>(d, partial, sums, [&](int n, int b, float (*acc)[kMaxLanes]) {
      const int LL = lanes_of(lc, d);
      const float* p = x + plane_offset(d, n, b);
      const float* k = shift + b * LL;
      for (int i = 0; i < d.hw; ++i)
#pragma omp simd
        for (int l = 0; l < LL; ++l) {
          const float v = p[int64_t(i) * LL + l] - k[l];
          acc[0][l] += v;
          acc[1][l] += v * v;
        }
    });
  });
  // Per channel: statistics, running update, affine constants.
  float* a = channel_floats(d, partial, 1);
  float* sh = channel_floats(d, partial, 2);
  for (int c = 0; c < cpad; ++c) {
    if (c >= d.c) {
      a[c] = sh[c] = 0.0f;
      continue;
    }
    const double dm = sums[c] / double(m);
    const double var = std::max(0.0, sums[cpad + c] / double(m) - dm * dm);
    const float mu = float(double(shift[c]) + dm);
    const float invstd = common::bn_invstd(float(var), eps);
    save_mean[c] = mu;
    save_invstd[c] = invstd;
    if (running_mean) running_mean[c] = common::bn_running_update(running_mean[c], mu, momentum);
    if (running_var)
      running_var[c] = common::bn_running_update(
          running_var[c], float(var * double(m) / double(m - 1)), momentum);
    const common::BnAffine t =
        common::bn_affine(mu, invstd, gamma ? gamma[c] : 1.0f, beta ? beta[c] : 0.0f);
    a[c] = t.a;
    sh[c] = t.b;
  }
  // Pass 2: normalise, add, activate (padding lanes: a = b = 0 and residual 0 -> 0).
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

namespace {

// The shared backward of bn_train and affine: g = dy * act'(y) per element; sums of g and of
// g * (x - mean) per channel (when wanted), then a pass writing dx = k * (g - mg - xhat * mgx)
// (k = gamma * invstd; mg, mgx the means of g and g * xhat; for the eval-mode affine only
// k = scale, mg = mgx = 0) and dresidual = g.
template <class LC, class A>
void norm_backward_impl(LC lc, A, const Dims& d, const float* x, const float* y, const float* dy,
                        const float* mean, const float* invstd, bool batch_stats,
                        const float* gamma_or_scale, float* dx, float* dresidual,
                        bool add_to_dresidual, float* dgamma, float* dbeta, double* partial) {
  const int L = lanes_of(lc, d), cpad = d.cpad(), cb = d.cb();
  const int64_t m = int64_t(d.n) * d.hw;
  float* mu = channel_floats(d, partial, 0);
  float* is = channel_floats(d, partial, 1);
  float* kk = channel_floats(d, partial, 2);
  float* mg = channel_floats(d, partial, 3);
  float* mgx = channel_floats(d, partial, 4);
  for (int c = 0; c < cpad; ++c) {
    mu[c] = c < d.c && mean ? mean[c] : 0.0f;
    is[c] = c < d.c && invstd ? invstd[c] : 0.0f;
  }
  const bool want_sums = batch_stats || dgamma || dbeta;
  if (want_sums) {
    double* sums = channel_sums_out(d, partial);  // sum g, sum g * (x - mean)
    channel_sums<2>(d, partial, sums, [&](int n, int b, float (*acc)[kMaxLanes]) {
      const int64_t off = plane_offset(d, n, b);
      const float* mb = mu + b * L;
      for (int i = 0; i < d.hw; ++i) {
        const int64_t o = off + int64_t(i) * L;
#pragma omp simd
        for (int l = 0; l < L; ++l) {
          const float g = A::bwd(y[o + l], dy[o + l]);
          acc[0][l] += g;
          acc[1][l] += g * (x[o + l] - mb[l]);
        }
      }
    });
    for (int c = 0; c < d.c; ++c) {
      const double sdy_xhat = sums[cpad + c] * is[c];
      if (dgamma) dgamma[c] = float(sdy_xhat);
      if (dbeta) dbeta[c] = float(sums[c]);
      mg[c] = batch_stats ? float(sums[c] / double(m)) : 0.0f;
      mgx[c] = batch_stats ? float(sdy_xhat / double(m)) : 0.0f;
    }
  } else {
    for (int c = 0; c < d.c; ++c) mg[c] = mgx[c] = 0.0f;
  }
  for (int c = 0; c < cpad; ++c) {
    if (c >= d.c) {
      kk[c] = mg[c] = mgx[c] = 0.0f;
      continue;
    }
    kk[c] = batch_stats ? (gamma_or_scale ? gamma_or_scale[c] : 1.0f) * is[c]
                        : (gamma_or_scale ? gamma_or_scale[c] : 0.0f);
  }
  if (!dx && !dresidual) return;
#pragma omp parallel for schedule(static) collapse(2) if (parallel_for(d.size()))
  for (int n = 0; n < d.n; ++n)
    for (int b = 0; b < cb; ++b) {
      const int64_t off = plane_offset(d, n, b);
      const float *k = kk + b * L, *m1 = mg + b * L, *m2 = mgx + b * L, *mb = mu + b * L,
                  *ib = is + b * L;
      for (int i = 0; i < d.hw; ++i) {
        const int64_t o = off + int64_t(i) * L;
        if (dresidual) {
          if (add_to_dresidual) {
#pragma omp simd
            for (int l = 0; l < L; ++l) dresidual[o + l] += A::bwd(y[o + l], dy[o + l]);
          } else {
#pragma omp simd
            for (int l = 0; l < L; ++l) dresidual[o + l] = A::bwd(y[o + l], dy[o + l]);
          }
        }
        if (dx) {
          if (batch_stats) {
#pragma omp simd
            for (int l = 0; l < L; ++l) {
              const float g = A::bwd(y[o + l], dy[o + l]);
              common::BnBackwardConsts bc{k[l], m1[l], m2[l]};
              dx[o + l] = common::bn_backward_dx(x[o + l], g, mb[l], ib[l], bc);
            }
          } else {
#pragma omp simd
            for (int l = 0; l < L; ++l) dx[o + l] = A::bwd(y[o + l], dy[o + l]) * k[l];
          }
        }
      }
    }
}

}  // namespace

void bn_train_backward(const Dims& d, const float* x, const float* y, const float* dy,
                       Activation act, const float* gamma, const float* save_mean,
                       const float* save_invstd, float* dx, float* dresidual,
                       bool add_to_dresidual, float* dgamma, float* dbeta, double* partial) {
  with_lanes(d.lanes, [&](auto lc) {
    with_act(act, [&](auto A) {
      norm_backward_impl(lc, A, d, x, y, dy, save_mean, save_invstd, true, gamma, dx, dresidual,
                         add_to_dresidual, dgamma, dbeta, partial);
    });
  });
}

void affine_backward(const Dims& d, const float* x, const float* y, const float* dy,
                     Activation act, const float* scale, const float* mean, const float* invstd,
                     float* dx, float* dresidual, bool add_to_dresidual, float* dgamma,
                     float* dbeta, double* partial) {
  with_lanes(d.lanes, [&](auto lc) {
    with_act(act, [&](auto A) {
      norm_backward_impl(lc, A, d, x, y, dy, mean, invstd, false, scale, dx, dresidual,
                         add_to_dresidual, dgamma, dbeta, partial);
    });
  });
}

void add_act(int64_t count, const float* a_, const float* b_, Activation act, float* y_) {
  with_act(act, [&](auto A) {
    using AA = decltype(A);
    const float* a = a_;  // local copies: see act_backward
    const float* b = b_;
    float* y = y_;
    if (b) {
#pragma omp parallel for simd schedule(static) if (parallel_for(count))
      for (int64_t i = 0; i < count; ++i) y[i] = AA::fwd(a[i] + b[i]);
    } else {
#pragma omp parallel for simd schedule(static) if (parallel_for(count))
      for (int64_t i = 0; i < count; ++i) y[i] = AA::fwd(a[i]);
    }
  });
}

void act_backward(int64_t count, Activation act, const float* y_, const float* dy_, float* dx_,
                  bool accumulate) {
  with_act(act, [&](auto A) {
    using AA = decltype(A);
    // Local copies: with the pointers read through the lambda's references GCC 12 leaves these
    // loops scalar (and, for ReLU, branchy: 10% of a resnet20 obfuscation step).
    const float* y = y_;
    const float* dy = dy_;
    float* dx = dx_;
    if (accumulate) {
#pragma omp parallel for simd schedule(static) if (parallel_for(count))
      for (int64_t i = 0; i < count; ++i) dx[i] += AA::bwd(y[i], dy[i]);
    } else {
#pragma omp parallel for simd schedule(static) if (parallel_for(count))
      for (int64_t i = 0; i < count; ++i) dx[i] = AA::bwd(y[i], dy[i]);
    }
  });
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
