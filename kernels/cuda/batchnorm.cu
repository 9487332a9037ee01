// BatchNorm on CUDA over x [N, C, HW]. Statistics are per channel over M = N*HW elements,
// reduced in two deterministic stages (channel_reduce.cuh: per-slice block sums in double with
// warp shuffles, then the slices of a channel in order), two passes as on the CPU (the mean,
// then the squared deviations from it). Per-channel constants go to a small stream-ordered
// workspace; the element-wise passes use the math of kernels/common/batchnorm.h.
#include <string>

#include "kernels/common/batchnorm.h"
#include "kernels/cuda/channel_reduce.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

void check_bn(int n, int c, int hw, const char* op) {
  if (n < 1 || c < 1 || hw < 1)
    invalid(op, "sizes must be positive (n=" + std::to_string(n) + " c=" + std::to_string(c) +
                    " hw=" + std::to_string(hw) + ")");
}

__device__ inline int channel_of(int64_t i, int c, int hw) {
  return static_cast<int>((i / hw) % c);
}

// ---- training forward ----------------------------------------------------------------------

// mean[ch] = total / M (one thread per channel).
__global__ void bn_mean_kernel(int64_t c, ChannelSplit sp, const double* partial, float* mean) {
  NNS_GRID_STRIDE(ch, c) {
    const double total = channel_total<1>(partial, int(ch), sp.slices, 0);
    mean[ch] = static_cast<float>(total / double(sp.m));
  }
}

// From the squared deviations: save_mean/save_invstd, the running statistics (unbiased
// variance), and the affine (a, b) of y = x * a + b.
__global__ void bn_train_stats_kernel(int64_t c, ChannelSplit sp, const double* partial,
                                      const float* mean, const float* gamma, const float* beta,
                                      float* running_mean, float* running_var, float momentum,
                                      float eps, float* save_mean, float* save_invstd,
                                      float* affine_a, float* affine_b) {
  NNS_GRID_STRIDE(ch, c) {
    const double sq = channel_total<1>(partial, int(ch), sp.slices, 0);
    const float meanf = mean[ch];
    const float invstd = common::bn_invstd(static_cast<float>(sq / double(sp.m)), eps);
    if (save_mean) save_mean[ch] = meanf;
    if (save_invstd) save_invstd[ch] = invstd;
    if (running_mean)
      running_mean[ch] = common::bn_running_update(running_mean[ch], meanf, momentum);
    if (running_var)
      running_var[ch] = common::bn_running_update(
          running_var[ch], static_cast<float>(sq / double(sp.m - 1)), momentum);
    const common::BnAffine t =
        common::bn_affine(meanf, invstd, gamma ? gamma[ch] : 1.0f, beta ? beta[ch] : 0.0f);
    affine_a[ch] = t.a;
    affine_b[ch] = t.b;
  }
}

__global__ void bn_apply_kernel(int64_t count, int c, int hw, const float* x, const float* a,
                                const float* b, float* y) {
  NNS_GRID_STRIDE(i, count) {
    const int ch = channel_of(i, c, hw);
    y[i] = common::bn_apply(x[i], common::BnAffine{a[ch], b[ch]});
  }
}

// ---- eval forward and fold -----------------------------------------------------------------

__device__ inline common::BnAffine eval_affine(int ch, const float* gamma, const float* beta,
                                               const float* running_mean, const float* running_var,
                                               float eps) {
  return common::bn_affine(running_mean[ch], common::bn_invstd(running_var[ch], eps),
                           gamma ? gamma[ch] : 1.0f, beta ? beta[ch] : 0.0f);
}

__global__ void bn_eval_kernel(int64_t count, int c, int hw, const float* x, const float* gamma,
                               const float* beta, const float* running_mean,
                               const float* running_var, float eps, float* y) {
  NNS_GRID_STRIDE(i, count) {
    const int ch = channel_of(i, c, hw);
    y[i] = common::bn_apply(x[i], eval_affine(ch, gamma, beta, running_mean, running_var, eps));
  }
}

__global__ void bn_fold_kernel(int64_t c, const float* gamma, const float* beta,
                               const float* running_mean, const float* running_var, float eps,
                               float* scale, float* shift) {
  NNS_GRID_STRIDE(ch, c) {
    const common::BnAffine t = eval_affine(int(ch), gamma, beta, running_mean, running_var, eps);
    scale[ch] = t.a;
    shift[ch] = t.b;
  }
}

// ---- training backward ---------------------------------------------------------------------

// consts [3C] = (k, mean_dy, mean_dy_xhat) per channel; dgamma = sum(dy * xhat), dbeta = sum(dy).
__global__ void bn_backward_consts_kernel(int64_t c, ChannelSplit sp, const double* partial,
                                          const float* gamma, const float* save_invstd,
                                          float* dgamma, float* dbeta, float* consts) {
  NNS_GRID_STRIDE(ch, c) {
    const double sdy = channel_total<2>(partial, int(ch), sp.slices, 0);
    const double sdyx = channel_total<2>(partial, int(ch), sp.slices, 1);
    const float invstd = save_invstd[ch];
    const double sdy_xhat = sdyx * invstd;
    if (dgamma) dgamma[ch] = static_cast<float>(sdy_xhat);
    if (dbeta) dbeta[ch] = static_cast<float>(sdy);
    consts[ch] = (gamma ? gamma[ch] : 1.0f) * invstd;
    consts[c + ch] = static_cast<float>(sdy / double(sp.m));
    consts[2 * c + ch] = static_cast<float>(sdy_xhat / double(sp.m));
  }
}

__global__ void bn_backward_dx_kernel(int64_t count, int c, int hw, const float* x, const float* dy,
                                      const float* save_mean, const float* save_invstd,
                                      const float* consts, float* dx) {
  NNS_GRID_STRIDE(i, count) {
    const int ch = channel_of(i, c, hw);
    common::BnBackwardConsts k;
    k.k = consts[ch];
    k.mean_dy = consts[c + ch];
    k.mean_dy_xhat = consts[2 * c + ch];
    dx[i] = common::bn_backward_dx(x[i], dy[i], save_mean[ch], save_invstd[ch], k);
  }
}

// ---- eval backward -------------------------------------------------------------------------

// dx = dy * gamma / sqrt(var + eps).
__global__ void bn_backward_eval_dx_kernel(int64_t count, int c, int hw, const float* dy,
                                           const float* gamma, const float* running_var, float eps,
                                           float* dx) {
  NNS_GRID_STRIDE(i, count) {
    const int ch = channel_of(i, c, hw);
    const float k = (gamma ? gamma[ch] : 1.0f) * common::bn_invstd(running_var[ch], eps);
    dx[i] = dy[i] * k;
  }
}

__global__ void bn_backward_eval_params_kernel(int64_t c, ChannelSplit sp, const double* partial,
                                               const float* running_var, float eps, float* dgamma,
                                               float* dbeta) {
  NNS_GRID_STRIDE(ch, c) {
    const double sdy = channel_total<2>(partial, int(ch), sp.slices, 0);
    const double sdyx = channel_total<2>(partial, int(ch), sp.slices, 1);
    const float invstd = common::bn_invstd(running_var[ch], eps);
    if (dgamma) dgamma[ch] = static_cast<float>(sdyx * invstd);
    if (dbeta) dbeta[ch] = static_cast<float>(sdy);
  }
}

}  // namespace

void batchnorm_forward_train(void* stream, int n, int c, int hw, const float* x, const float* gamma,
                             const float* beta, float* running_mean, float* running_var,
                             float momentum, float eps, float* y, float* save_mean,
                             float* save_invstd) {
  const char* op = "batchnorm_forward_train";
  check_bn(n, c, hw, op);
  const ChannelSplit sp = channel_split(n, hw);
  if (sp.m < 2)
    invalid(op, "expected more than 1 value per channel when training (n=" + std::to_string(n) +
                    " hw=" + std::to_string(hw) + ")");
  cudaStream_t s = as_stream(stream);
  Scratch<double> partial(size_t(c) * sp.slices, s);
  Scratch<float> work(size_t(3) * c, s);  // mean, affine a, affine b
  float* mean = work.get();
  float* a = mean + c;
  float* b = a + c;
  channel_partials(s, c, hw, sp, SumOf{x}, partial.get());
  NNS_LAUNCH_LINEAR(bn_mean_kernel, c, s, sp, partial.get(), mean);
  channel_partials(s, c, hw, sp, SquaredDeviationOf{x, mean}, partial.get());
  NNS_LAUNCH_LINEAR(bn_train_stats_kernel, c, s, sp, partial.get(), mean, gamma, beta, running_mean,
                    running_var, momentum, eps, save_mean, save_invstd, a, b);
  NNS_LAUNCH_LINEAR(bn_apply_kernel, int64_t(n) * c * hw, s, c, hw, x, a, b, y);
}

void batchnorm_forward_eval(void* stream, int n, int c, int hw, const float* x, const float* gamma,
                            const float* beta, const float* running_mean, const float* running_var,
                            float eps, float* y) {
  check_bn(n, c, hw, "batchnorm_forward_eval");
  NNS_LAUNCH_LINEAR(bn_eval_kernel, int64_t(n) * c * hw, as_stream(stream), c, hw, x, gamma, beta,
                    running_mean, running_var, eps, y);
}

void batchnorm_backward(void* stream, int n, int c, int hw, const float* x, const float* dy,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        float* dx, float* dgamma, float* dbeta) {
  check_bn(n, c, hw, "batchnorm_backward");
  const ChannelSplit sp = channel_split(n, hw);
  cudaStream_t s = as_stream(stream);
  Scratch<double> partial(size_t(c) * sp.slices * GradSumsOf::K, s);
  Scratch<float> consts(size_t(3) * c, s);
  channel_partials(s, c, hw, sp, GradSumsOf{x, dy, save_mean}, partial.get());
  NNS_LAUNCH_LINEAR(bn_backward_consts_kernel, c, s, sp, partial.get(), gamma, save_invstd, dgamma,
                    dbeta, consts.get());
  if (dx)
    NNS_LAUNCH_LINEAR(bn_backward_dx_kernel, int64_t(n) * c * hw, s, c, hw, x, dy, save_mean,
                      save_invstd, consts.get(), dx);
}

void batchnorm_backward_eval(void* stream, int n, int c, int hw, const float* x, const float* dy,
                             const float* gamma, const float* running_mean,
                             const float* running_var, float eps, float* dx, float* dgamma,
                             float* dbeta) {
  check_bn(n, c, hw, "batchnorm_backward_eval");
  cudaStream_t s = as_stream(stream);
  if (dx)
    NNS_LAUNCH_LINEAR(bn_backward_eval_dx_kernel, int64_t(n) * c * hw, s, c, hw, dy, gamma,
                      running_var, eps, dx);
  if (dgamma || dbeta) {
    const ChannelSplit sp = channel_split(n, hw);
    Scratch<double> partial(size_t(c) * sp.slices * GradSumsOf::K, s);
    channel_partials(s, c, hw, sp, GradSumsOf{x, dy, running_mean}, partial.get());
    NNS_LAUNCH_LINEAR(bn_backward_eval_params_kernel, c, s, sp, partial.get(), running_var, eps,
                      dgamma, dbeta);
  }
}

void batchnorm_fold(void* stream, int c, const float* gamma, const float* beta,
                    const float* running_mean, const float* running_var, float eps, float* scale,
                    float* shift) {
  if (c < 0) invalid("batchnorm_fold", "negative channel count " + std::to_string(c));
  NNS_LAUNCH_LINEAR(bn_fold_kernel, c, as_stream(stream), gamma, beta, running_mean, running_var,
                    eps, scale, shift);
}

}  // namespace nns::ops::cuda
