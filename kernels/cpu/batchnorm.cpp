// BatchNorm on the CPU, parallel over channels: a channel's N*HW values are visited by one
// thread, statistics accumulate in double (two passes: mean, then squared deviations).
#include <omp.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/common/batchnorm.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace nns::ops::cpu {

namespace {

void check_bn(int n, int c, int hw, const char* op) {
  if (n < 1 || c < 1 || hw < 1)
    throw std::invalid_argument(std::string(op) + ": sizes must be positive (n=" +
                                std::to_string(n) + " c=" + std::to_string(c) +
                                " hw=" + std::to_string(hw) + ")");
}

// Sum over the N*HW values of channel ch of x [N, C, HW].
double channel_total(int n, int c, int hw, const float* x, int ch) {
  double total = 0.0;
  for (int i = 0; i < n; ++i) {
    const float* p = x + (int64_t(i) * c + ch) * hw;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int k = 0; k < hw; ++k) acc += p[k];
    total += acc;
  }
  return total;
}

}  // namespace

void batchnorm_forward_train(int n, int c, int hw, const float* x, const float* gamma,
                             const float* beta, float* running_mean, float* running_var,
                             float momentum, float eps, float* y, float* save_mean,
                             float* save_invstd) {
  check_bn(n, c, hw, "batchnorm_forward_train");
  const int64_t m = int64_t(n) * hw;
  if (m < 2)
    throw std::invalid_argument(
        "batchnorm_forward_train: expected more than 1 value per channel when training (n=" +
        std::to_string(n) + " hw=" + std::to_string(hw) + ")");
#pragma omp parallel for schedule(static) if (int64_t(c) * m >= kParallelElements)
  for (int ch = 0; ch < c; ++ch) {
    const double mean = channel_total(n, c, hw, x, ch) / double(m);
    const float meanf = static_cast<float>(mean);
    double sq = 0.0;
    for (int i = 0; i < n; ++i) {
      const float* p = x + (int64_t(i) * c + ch) * hw;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int k = 0; k < hw; ++k) {
        const float d = p[k] - meanf;
        acc += d * d;
      }
      sq += acc;
    }
    const double var = sq / double(m);
    const float invstd = common::bn_invstd(static_cast<float>(var), eps);
    if (save_mean) save_mean[ch] = meanf;
    if (save_invstd) save_invstd[ch] = invstd;
    if (running_mean) running_mean[ch] = common::bn_running_update(running_mean[ch], meanf, momentum);
    if (running_var)
      running_var[ch] = common::bn_running_update(
          running_var[ch], static_cast<float>(sq / double(m - 1)), momentum);
    const common::BnAffine t =
        common::bn_affine(meanf, invstd, gamma ? gamma[ch] : 1.0f, beta ? beta[ch] : 0.0f);
    for (int i = 0; i < n; ++i) {
      const int64_t off = (int64_t(i) * c + ch) * hw;
#pragma omp simd
      for (int k = 0; k < hw; ++k) y[off + k] = common::bn_apply(x[off + k], t);
    }
  }
}

void batchnorm_forward_eval(int n, int c, int hw, const float* x, const float* gamma,
                            const float* beta, const float* running_mean,
                            const float* running_var, float eps, float* y) {
  check_bn(n, c, hw, "batchnorm_forward_eval");
  const int64_t planes = int64_t(n) * c;
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelElements)
  for (int64_t p = 0; p < planes; ++p) {
    const int ch = static_cast<int>(p % c);
    const common::BnAffine t = common::bn_affine(
        running_mean[ch], common::bn_invstd(running_var[ch], eps), gamma ? gamma[ch] : 1.0f,
        beta ? beta[ch] : 0.0f);
    const int64_t off = p * hw;
#pragma omp simd
    for (int k = 0; k < hw; ++k) y[off + k] = common::bn_apply(x[off + k], t);
  }
}

void batchnorm_backward(int n, int c, int hw, const float* x, const float* dy, const float* gamma,
                        const float* save_mean, const float* save_invstd, float* dx,
                        float* dgamma, float* dbeta) {
  check_bn(n, c, hw, "batchnorm_backward");
  const int64_t m = int64_t(n) * hw;
#pragma omp parallel for schedule(static) if (int64_t(c) * m >= kParallelElements)
  for (int ch = 0; ch < c; ++ch) {
    const float mean = save_mean[ch], invstd = save_invstd[ch];
    // sum(dy) and sum(dy * xhat) = invstd * sum(dy * (x - mean)).
    double sdy = 0.0, sdyx = 0.0;
    for (int i = 0; i < n; ++i) {
      const int64_t off = (int64_t(i) * c + ch) * hw;
      float a = 0.0f, b = 0.0f;
#pragma omp simd reduction(+ : a, b)
      for (int k = 0; k < hw; ++k) {
        a += dy[off + k];
        b += dy[off + k] * (x[off + k] - mean);
      }
      sdy += a;
      sdyx += b;
    }
    const double sdy_xhat = sdyx * invstd;
    if (dgamma) dgamma[ch] = static_cast<float>(sdy_xhat);
    if (dbeta) dbeta[ch] = static_cast<float>(sdy);
    common::BnBackwardConsts k;
    k.k = (gamma ? gamma[ch] : 1.0f) * invstd;
    k.mean_dy = static_cast<float>(sdy / double(m));
    k.mean_dy_xhat = static_cast<float>(sdy_xhat / double(m));
    for (int i = 0; i < n; ++i) {
      const int64_t off = (int64_t(i) * c + ch) * hw;
#pragma omp simd
      for (int j = 0; j < hw; ++j)
        dx[off + j] = common::bn_backward_dx(x[off + j], dy[off + j], mean, invstd, k);
    }
  }
}

void batchnorm_fold(int c, const float* gamma, const float* beta, const float* running_mean,
                    const float* running_var, float eps, float* scale, float* shift) {
  for (int ch = 0; ch < c; ++ch) {
    const common::BnAffine t = common::bn_affine(
        running_mean[ch], common::bn_invstd(running_var[ch], eps), gamma ? gamma[ch] : 1.0f,
        beta ? beta[ch] : 0.0f);
    scale[ch] = t.a;
    shift[ch] = t.b;
  }
}

}  // namespace nns::ops::cpu
