// BatchNorm: training forward (batch statistics, running-stat update with momentum and the
// unbiased variance), eval forward, training backward, eval backward and the fold into a conv
// epilogue, against naive double loops and finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/ops.h"

namespace nns::ops::test {
namespace {

struct BnCase {
  int n, c, hw;
};

struct RefStats {
  std::vector<double> mean, var_biased, var_unbiased;
};

RefStats ref_stats(const BnCase& p, const std::vector<float>& x) {
  RefStats r;
  const double m = double(p.n) * p.hw;
  r.mean.assign(p.c, 0.0);
  r.var_biased.assign(p.c, 0.0);
  r.var_unbiased.assign(p.c, 0.0);
  for (int ch = 0; ch < p.c; ++ch) {
    double s = 0.0;
    for (int i = 0; i < p.n; ++i)
      for (int k = 0; k < p.hw; ++k) s += x[(size_t(i) * p.c + ch) * p.hw + k];
    const double mean = s / m;
    double q = 0.0;
    for (int i = 0; i < p.n; ++i)
      for (int k = 0; k < p.hw; ++k) {
        const double d = x[(size_t(i) * p.c + ch) * p.hw + k] - mean;
        q += d * d;
      }
    r.mean[ch] = mean;
    r.var_biased[ch] = q / m;
    r.var_unbiased[ch] = q / (m - 1);
  }
  return r;
}

class BatchNormTest : public ::testing::TestWithParam<BnCase> {
 protected:
  std::mt19937 rng_{static_cast<unsigned>(GetParam().n * 7919 + GetParam().c * 31 + GetParam().hw)};
};

TEST_P(BatchNormTest, TrainForwardAndRunningStats) {
  const BnCase p = GetParam();
  const size_t count = size_t(p.n) * p.c * p.hw;
  const auto x = random_vec(count, rng_, -2.0f, 3.0f);
  const auto gamma = random_vec(p.c, rng_, 0.5f, 1.5f);
  const auto beta = random_vec(p.c, rng_);
  auto rmean = random_vec(p.c, rng_);
  auto rvar = random_vec(p.c, rng_, 0.5f, 2.0f);
  const auto rmean0 = rmean, rvar0 = rvar;
  const float momentum = 0.1f, eps = 1e-5f;
  std::vector<float> y(count, sentinel()), smean(p.c), sinv(p.c);
  batchnorm_forward_train(kCpu, p.n, p.c, p.hw, x.data(), gamma.data(), beta.data(), rmean.data(),
                          rvar.data(), momentum, eps, y.data(), smean.data(), sinv.data());
  const RefStats r = ref_stats(p, x);
  std::vector<double> ry(count), rinv(p.c), rrm(p.c), rrv(p.c);
  for (int ch = 0; ch < p.c; ++ch) {
    rinv[ch] = 1.0 / std::sqrt(r.var_biased[ch] + eps);
    rrm[ch] = 0.9 * rmean0[ch] + 0.1 * r.mean[ch];
    rrv[ch] = 0.9 * rvar0[ch] + 0.1 * r.var_unbiased[ch];
    for (int i = 0; i < p.n; ++i)
      for (int k = 0; k < p.hw; ++k) {
        const size_t idx = (size_t(i) * p.c + ch) * p.hw + k;
        ry[idx] = (x[idx] - r.mean[ch]) * rinv[ch] * gamma[ch] + beta[ch];
      }
  }
  EXPECT_TRUE(all_close(y, ry, 1e-4, 1e-4));
  EXPECT_TRUE(all_close(smean, r.mean, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(sinv, rinv, 1e-5, 1e-4));
  EXPECT_TRUE(all_close(rmean, rrm, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(rvar, rrv, 1e-5, 1e-5));
}

TEST_P(BatchNormTest, EvalForwardMatchesReference) {
  const BnCase p = GetParam();
  const size_t count = size_t(p.n) * p.c * p.hw;
  const auto x = random_vec(count, rng_, -2.0f, 3.0f);
  const auto gamma = random_vec(p.c, rng_, 0.5f, 1.5f);
  const auto beta = random_vec(p.c, rng_);
  const auto rmean = random_vec(p.c, rng_);
  const auto rvar = random_vec(p.c, rng_, 0.5f, 2.0f);
  std::vector<float> y(count, sentinel());
  batchnorm_forward_eval(kCpu, p.n, p.c, p.hw, x.data(), gamma.data(), beta.data(), rmean.data(),
                         rvar.data(), 1e-3f, y.data());
  std::vector<double> ry(count);
  for (size_t i = 0; i < count; ++i) {
    const int ch = int((i / p.hw) % p.c);
    ry[i] = (x[i] - double(rmean[ch])) / std::sqrt(double(rvar[ch]) + 1e-3) * gamma[ch] + beta[ch];
  }
  EXPECT_TRUE(all_close(y, ry, 1e-5, 1e-5));
  std::vector<float> scale(p.c), shift(p.c);
  batchnorm_fold(kCpu, p.c, gamma.data(), beta.data(), rmean.data(), rvar.data(), 1e-3f,
                 scale.data(), shift.data());
  for (int ch = 0; ch < p.c; ++ch) {
    const double sc = gamma[ch] / std::sqrt(double(rvar[ch]) + 1e-3);
    EXPECT_NEAR(scale[ch], sc, 1e-6 * (1 + std::fabs(sc)));
    EXPECT_NEAR(shift[ch], beta[ch] - rmean[ch] * sc, 1e-6 * (1 + std::fabs(sc)));
  }
}

// Training backward: naive formula, then finite differences of loss = sum(y * r) with respect to
// x, gamma and beta.
TEST_P(BatchNormTest, TrainBackwardMatchesReferenceAndFiniteDifferences) {
  const BnCase p = GetParam();
  const size_t count = size_t(p.n) * p.c * p.hw;
  auto x = random_vec(count, rng_, -2.0f, 3.0f);
  auto gamma = random_vec(p.c, rng_, 0.5f, 1.5f);
  auto beta = random_vec(p.c, rng_);
  const auto r = random_vec(count, rng_);
  const float eps = 1e-5f;
  std::vector<float> rm(p.c, 0.0f), rv(p.c, 1.0f), y(count), smean(p.c), sinv(p.c);
  auto loss = [&]() {
    batchnorm_forward_train(kCpu, p.n, p.c, p.hw, x.data(), gamma.data(), beta.data(), rm.data(),
                            rv.data(), 0.1f, eps, y.data(), smean.data(), sinv.data());
    return dot(y, r);
  };
  loss();
  std::vector<float> dx(count, sentinel()), dgamma(p.c, sentinel()), dbeta(p.c, sentinel());
  batchnorm_backward(kCpu, p.n, p.c, p.hw, x.data(), r.data(), gamma.data(), smean.data(),
                     sinv.data(), dx.data(), dgamma.data(), dbeta.data());

  // Naive: dx = gamma*invstd/M * (M*dy - sum(dy) - xhat*sum(dy*xhat)).
  const RefStats st = ref_stats(p, x);
  const double m = double(p.n) * p.hw;
  std::vector<double> rdx(count), rdg(p.c), rdb(p.c);
  for (int ch = 0; ch < p.c; ++ch) {
    const double inv = 1.0 / std::sqrt(st.var_biased[ch] + eps);
    double sdy = 0.0, sdyx = 0.0;
    for (int i = 0; i < p.n; ++i)
      for (int k = 0; k < p.hw; ++k) {
        const size_t idx = (size_t(i) * p.c + ch) * p.hw + k;
        sdy += r[idx];
        sdyx += r[idx] * (x[idx] - st.mean[ch]) * inv;
      }
    rdg[ch] = sdyx;
    rdb[ch] = sdy;
    for (int i = 0; i < p.n; ++i)
      for (int k = 0; k < p.hw; ++k) {
        const size_t idx = (size_t(i) * p.c + ch) * p.hw + k;
        const double xhat = (x[idx] - st.mean[ch]) * inv;
        rdx[idx] = gamma[ch] * inv / m * (m * r[idx] - sdy - xhat * sdyx);
      }
  }
  EXPECT_TRUE(all_close(dx, rdx, 1e-4, 1e-3));
  EXPECT_TRUE(all_close(dgamma, rdg, 1e-4, 1e-4));
  EXPECT_TRUE(all_close(dbeta, rdb, 1e-4, 1e-4));

  for (size_t i : sample_indices(count, 10, rng_)) {
    const double fd = central_difference(x, i, 1e-2, loss);
    EXPECT_NEAR(dx[i], fd, 5e-3 * (1 + std::fabs(fd))) << "dx[" << i << "]";
  }
  for (size_t i : sample_indices(p.c, 4, rng_)) {
    const double fg = central_difference(gamma, i, 1e-2, loss);
    EXPECT_NEAR(dgamma[i], fg, 5e-3 * (1 + std::fabs(fg))) << "dgamma[" << i << "]";
    const double fb = central_difference(beta, i, 1e-2, loss);
    EXPECT_NEAR(dbeta[i], fb, 5e-3 * (1 + std::fabs(fb))) << "dbeta[" << i << "]";
  }
}

// Eval backward (frozen statistics): finite differences of the eval forward.
TEST_P(BatchNormTest, EvalBackwardMatchesFiniteDifferences) {
  const BnCase p = GetParam();
  const size_t count = size_t(p.n) * p.c * p.hw;
  auto x = random_vec(count, rng_, -2.0f, 3.0f);
  auto gamma = random_vec(p.c, rng_, 0.5f, 1.5f);
  auto beta = random_vec(p.c, rng_);
  const auto rmean = random_vec(p.c, rng_);
  const auto rvar = random_vec(p.c, rng_, 0.5f, 2.0f);
  const auto r = random_vec(count, rng_);
  std::vector<float> y(count);
  auto loss = [&]() {
    batchnorm_forward_eval(kCpu, p.n, p.c, p.hw, x.data(), gamma.data(), beta.data(),
                           rmean.data(), rvar.data(), 1e-5f, y.data());
    return dot(y, r);
  };
  std::vector<float> dx(count, sentinel()), dg(p.c, sentinel()), dbt(p.c, sentinel());
  batchnorm_backward_eval(kCpu, p.n, p.c, p.hw, x.data(), r.data(), gamma.data(), rmean.data(),
                          rvar.data(), 1e-5f, dx.data(), dg.data(), dbt.data());
  for (size_t i : sample_indices(count, 10, rng_)) {
    const double fd = central_difference(x, i, 0.5, loss);  // linear in x
    EXPECT_NEAR(dx[i], fd, 2e-3 * (1 + std::fabs(fd))) << "dx[" << i << "]";
  }
  for (size_t i : sample_indices(p.c, 4, rng_)) {
    const double fg = central_difference(gamma, i, 0.5, loss);
    EXPECT_NEAR(dg[i], fg, 2e-3 * (1 + std::fabs(fg))) << "dgamma[" << i << "]";
    const double fb = central_difference(beta, i, 0.5, loss);
    EXPECT_NEAR(dbt[i], fb, 2e-3 * (1 + std::fabs(fb))) << "dbeta[" << i << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, BatchNormTest,
                         ::testing::Values(BnCase{2, 3, 5}, BnCase{1, 4, 9}, BnCase{7, 5, 1},
                                           BnCase{16, 8, 49}, BnCase{3, 2, 1000}),
                         [](const ::testing::TestParamInfo<BnCase>& info) {
                           std::string name = "n";
                           name += std::to_string(info.param.n);
                           name += "_c";
                           name += std::to_string(info.param.c);
                           name += "_hw";
                           name += std::to_string(info.param.hw);
                           return name;
                         });

// Several training steps: the running statistics follow PyTorch's update each step.
TEST(BatchNorm, RunningStatsOverSeveralSteps) {
  std::mt19937 rng(5);
  const BnCase p{4, 3, 6};
  std::vector<float> rm(p.c, 0.0f), rv(p.c, 1.0f);
  std::vector<double> em(p.c, 0.0), ev(p.c, 1.0);
  const size_t count = size_t(p.n) * p.c * p.hw;
  std::vector<float> y(count), sm(p.c), si(p.c);
  for (int step = 0; step < 5; ++step) {
    const auto x = random_vec(count, rng, -1.0f + step, 2.0f + 2 * step);
    batchnorm_forward_train(kCpu, p.n, p.c, p.hw, x.data(), nullptr, nullptr, rm.data(), rv.data(),
                            0.1f, 1e-5f, y.data(), sm.data(), si.data());
    const RefStats st = ref_stats(p, x);
    for (int ch = 0; ch < p.c; ++ch) {
      em[ch] = 0.9 * em[ch] + 0.1 * st.mean[ch];
      ev[ch] = 0.9 * ev[ch] + 0.1 * st.var_unbiased[ch];
    }
  }
  EXPECT_TRUE(all_close(rm, em, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(rv, ev, 1e-5, 1e-5));
}

TEST(BatchNorm, SingleValuePerChannelThrowsInTraining) {
  std::vector<float> x(3), y(3), sm(3), si(3);
  EXPECT_THROW(batchnorm_forward_train(kCpu, 1, 3, 1, x.data(), nullptr, nullptr, nullptr,
                                       nullptr, 0.1f, 1e-5f, y.data(), sm.data(), si.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace nns::ops::test
