// The __host__ __device__ element functions of kernels/common/, tested on the CPU against
// independent scalar formulas in double precision. The CUDA kernels run these same functions,
// so these tests cover the math of both backends; tests/cuda/ then only checks the plumbing.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "kernels/common/activation.h"
#include "kernels/common/batchnorm.h"
#include "kernels/common/dropout.h"
#include "kernels/common/method.h"
#include "kernels/common/optim.h"
#include "kernels/common/softmax_ce.h"

namespace nns::ops::common {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// |got - ref| <= atol + rtol * |ref|
::testing::AssertionResult near(double got, double ref, double rtol, double atol = 0.0) {
  if (std::fabs(got - ref) <= atol + rtol * std::fabs(ref)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "got " << got << ", want " << ref << " (diff " << std::fabs(got - ref) << ")";
}

std::vector<float> sample_points() {
  std::vector<float> xs = {0.0f,  -0.0f,  1e-30f, -1e-30f, 1e-3f,  -1e-3f, 0.5f,   -0.5f,
                           1.0f,  -1.0f,  2.5f,   -2.5f,   5.999f, 6.0f,   6.001f, 7.0f,
                           20.0f, -20.0f, 88.0f,  -88.0f,  100.0f, -100.0f};
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> d(-10.0f, 10.0f);
  for (int i = 0; i < 200; ++i) xs.push_back(d(rng));
  return xs;
}

// ---------------------------------------------------------------------------------------------
// activation.h

TEST(CommonActivation, ForwardMatchesFormulas) {
  for (float xf : sample_points()) {
    const double x = xf;
    EXPECT_EQ(act_forward(Activation::None, xf), xf);
    EXPECT_EQ(act_forward(Activation::ReLU, xf), float(std::max(x, 0.0))) << x;
    EXPECT_EQ(act_forward(Activation::ReLU6, xf), float(std::min(std::max(x, 0.0), 6.0))) << x;
    // A few ulp (float ulp is 6e-8 to 1.2e-7 relative).
    EXPECT_TRUE(near(act_forward(Activation::Tanh, xf), std::tanh(x), 5e-7, 1e-30)) << x;
    EXPECT_TRUE(near(act_forward(Activation::Sigmoid, xf), 1.0 / (1.0 + std::exp(-x)), 5e-7, 1e-38))
        << x;
  }
}

TEST(CommonActivation, EdgeValues) {
  // ReLU6 at its kinks and beyond; infinities saturate.
  EXPECT_EQ(act_forward(Activation::ReLU6, 0.0f), 0.0f);
  EXPECT_EQ(act_forward(Activation::ReLU6, 6.0f), 6.0f);
  EXPECT_EQ(act_forward(Activation::ReLU6, 6.5f), 6.0f);
  EXPECT_EQ(act_forward(Activation::ReLU6, -0.5f), 0.0f);
  EXPECT_EQ(act_forward(Activation::ReLU, kInf), kInf);
  EXPECT_EQ(act_forward(Activation::ReLU, -kInf), 0.0f);
  EXPECT_EQ(act_forward(Activation::ReLU6, kInf), 6.0f);
  EXPECT_EQ(act_forward(Activation::ReLU6, -kInf), 0.0f);
  EXPECT_EQ(act_forward(Activation::Tanh, kInf), 1.0f);
  EXPECT_EQ(act_forward(Activation::Tanh, -kInf), -1.0f);
  EXPECT_EQ(act_forward(Activation::Sigmoid, kInf), 1.0f);
  EXPECT_EQ(act_forward(Activation::Sigmoid, -kInf), 0.0f);
  // NaN propagates through the smooth activations and the identity. (ReLU and ReLU6 are
  // fmaxf/fminf, which return the non-NaN operand: ReLU(NaN) = 0 on both backends, unlike
  // torch.relu, which propagates NaN.)
  EXPECT_TRUE(std::isnan(act_forward(Activation::None, kNaN)));
  EXPECT_TRUE(std::isnan(act_forward(Activation::Tanh, kNaN)));
  EXPECT_TRUE(std::isnan(act_forward(Activation::Sigmoid, kNaN)));
}

TEST(CommonActivation, GradFromOutputMatchesDerivative) {
  for (float xf : sample_points()) {
    const double x = xf;
    const float relu_y = act_forward(Activation::ReLU, xf);
    EXPECT_EQ(act_grad_from_output(Activation::ReLU, relu_y), x > 0 ? 1.0f : 0.0f) << x;
    const float relu6_y = act_forward(Activation::ReLU6, xf);
    EXPECT_EQ(act_grad_from_output(Activation::ReLU6, relu6_y), (x > 0 && x < 6) ? 1.0f : 0.0f)
        << x;
    EXPECT_EQ(act_grad_from_output(Activation::None, xf), 1.0f);
    // Smooth activations: derivative from the output vs the analytic derivative at x.
    const double th = std::tanh(x), sg = 1.0 / (1.0 + std::exp(-x));
    // 1 - y^2 and y (1 - y) cancel near saturation: an absolute tolerance of a few float ulp
    // of y.
    EXPECT_TRUE(near(act_grad_from_output(Activation::Tanh, act_forward(Activation::Tanh, xf)),
                     1.0 - th * th, 1e-5, 5e-7))
        << x;
    EXPECT_TRUE(
        near(act_grad_from_output(Activation::Sigmoid, act_forward(Activation::Sigmoid, xf)),
             sg * (1.0 - sg), 1e-5, 5e-7))
        << x;
  }
  // PyTorch's convention at the kinks: the gradient is 0 at y == 0 and at y == 6.
  EXPECT_EQ(act_grad_from_output(Activation::ReLU, 0.0f), 0.0f);
  EXPECT_EQ(act_grad_from_output(Activation::ReLU6, 0.0f), 0.0f);
  EXPECT_EQ(act_grad_from_output(Activation::ReLU6, 6.0f), 0.0f);
  EXPECT_EQ(act_grad_from_output(Activation::ReLU6, 5.9999995f), 1.0f);
}

TEST(CommonActivation, EpilogueApplyMatchesFormula) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> d(-4.0f, 4.0f);
  for (Activation a : {Activation::None, Activation::ReLU, Activation::ReLU6, Activation::Tanh,
                       Activation::Sigmoid}) {
    for (int i = 0; i < 100; ++i) {
      const float acc = d(rng), bias = d(rng), scale = d(rng), shift = d(rng);
      const double pre = double(scale) * (double(acc) + double(bias)) + double(shift);
      double ref = pre;
      if (a == Activation::ReLU) ref = std::max(pre, 0.0);
      if (a == Activation::ReLU6) ref = std::min(std::max(pre, 0.0), 6.0);
      if (a == Activation::Tanh) ref = std::tanh(pre);
      if (a == Activation::Sigmoid) ref = 1.0 / (1.0 + std::exp(-pre));
      EXPECT_TRUE(near(epilogue_apply(acc, bias, scale, shift, a), ref, 1e-5, 1e-5))
          << int(a) << " acc " << acc;
    }
  }
  // The identity epilogue is exact.
  EXPECT_EQ(epilogue_apply(1.25f, 0.0f, 1.0f, 0.0f, Activation::None), 1.25f);
}

// ---------------------------------------------------------------------------------------------
// batchnorm.h

TEST(CommonBatchNorm, AffineMatchesNormalisation) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-3.0f, 3.0f), pos(0.01f, 4.0f);
  for (int i = 0; i < 200; ++i) {
    const float x = d(rng), mean = d(rng), var = pos(rng), gamma = d(rng), beta = d(rng);
    const float eps = 1e-5f;
    const double invstd = 1.0 / std::sqrt(double(var) + double(eps));
    EXPECT_TRUE(near(bn_invstd(var, eps), invstd, 2e-7));
    const BnAffine t = bn_affine(mean, bn_invstd(var, eps), gamma, beta);
    const double ref = (double(x) - mean) * invstd * gamma + beta;
    // x * a + b cancels: the tolerance scales with the magnitude of the terms.
    const double magnitude =
        (std::fabs(x) + std::fabs(mean)) * std::fabs(gamma) * invstd + std::fabs(beta);
    EXPECT_TRUE(near(bn_apply(x, t), ref, 0.0, 1e-6 * magnitude + 1e-7)) << i;
  }
  // var = 0: eps keeps it finite.
  EXPECT_TRUE(near(bn_invstd(0.0f, 1e-5f), 1.0 / std::sqrt(1e-5), 1e-6));
}

TEST(CommonBatchNorm, RunningUpdate) {
  EXPECT_FLOAT_EQ(bn_running_update(1.0f, 3.0f, 0.1f), 1.2f);
  EXPECT_EQ(bn_running_update(2.0f, 5.0f, 0.0f), 2.0f);
  EXPECT_EQ(bn_running_update(2.0f, 5.0f, 1.0f), 5.0f);
}

// Training-mode BatchNorm of one channel in double, and L = sum(r * y): its gradient w.r.t. x
// by central differences against bn_backward_dx.
TEST(CommonBatchNorm, BackwardDxMatchesFiniteDifferences) {
  std::mt19937 rng(11);
  std::normal_distribution<double> d(0.5, 1.5);
  const int m = 13;
  const double eps = 1e-5, gamma = 1.7, beta = -0.3;
  std::vector<double> x(m), r(m);
  for (auto& v : x) v = d(rng);
  for (auto& v : r) v = d(rng);
  auto loss = [&](const std::vector<double>& xs) {
    double mean = 0, var = 0;
    for (double v : xs) mean += v;
    mean /= m;
    for (double v : xs) var += (v - mean) * (v - mean);
    var /= m;
    double l = 0;
    for (int i = 0; i < m; ++i) l += r[i] * ((xs[i] - mean) / std::sqrt(var + eps) * gamma + beta);
    return l;
  };
  double mean = 0, var = 0;
  for (double v : x) mean += v;
  mean /= m;
  for (double v : x) var += (v - mean) * (v - mean);
  var /= m;
  const float meanf = float(mean), invstd = bn_invstd(float(var), float(eps));
  double sdy = 0, sdy_xhat = 0;
  for (int i = 0; i < m; ++i) {
    sdy += r[i];
    sdy_xhat += r[i] * (x[i] - mean) * invstd;
  }
  BnBackwardConsts k;
  k.k = float(gamma) * invstd;
  k.mean_dy = float(sdy / m);
  k.mean_dy_xhat = float(sdy_xhat / m);
  for (int i = 0; i < m; ++i) {
    std::vector<double> xp = x, xm = x;
    const double h = 1e-5;
    xp[i] += h;
    xm[i] -= h;
    const double fd = (loss(xp) - loss(xm)) / (2 * h);
    const float got = bn_backward_dx(float(x[i]), float(r[i]), meanf, invstd, k);
    EXPECT_TRUE(near(got, fd, 1e-4, 1e-5)) << "element " << i;
  }
}

// ---------------------------------------------------------------------------------------------
// dropout.h

// An independent splitmix64 (Vigna's reference): state += golden; mix(state).
uint64_t ref_splitmix64_next(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

TEST(CommonDropout, SplitmixMatchesReference) {
  // The first output of splitmix64 seeded with 0 is the published test value.
  EXPECT_EQ(splitmix64_mix(0x9E3779B97F4A7C15ull), 0xE220A8397B1DCDAFull);
  uint64_t state = 0x1234567ull;
  for (int i = 0; i < 100; ++i) {
    const uint64_t before = state;
    EXPECT_EQ(splitmix64_mix(before + 0x9E3779B97F4A7C15ull), ref_splitmix64_next(state));
  }
  // hash(seed, i) walks the splitmix64 sequence started at mix(seed).
  for (uint64_t seed : {0ull, 1ull, 0x5eedull, 0xFFFFFFFFFFFFFFFFull}) {
    uint64_t s = splitmix64_mix(seed);
    for (uint64_t i = 0; i < 50; ++i) EXPECT_EQ(hash_seed_index(seed, i), ref_splitmix64_next(s));
  }
}

TEST(CommonDropout, DeterministicAndSeedSensitive) {
  for (uint64_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(hash_seed_index(42, i), hash_seed_index(42, i));
    EXPECT_EQ(dropout_keep(42, i, 0.3f), dropout_keep(42, i, 0.3f));
  }
  // Nearby seeds and indexes give unrelated streams: few equal keep decisions beyond chance,
  // and distinct hashes.
  std::set<uint64_t> seen;
  int agree = 0;
  for (uint64_t i = 0; i < 10000; ++i) {
    seen.insert(hash_seed_index(7, i));
    seen.insert(hash_seed_index(8, i));
    agree += dropout_keep(7, i, 0.5f) == dropout_keep(8, i, 0.5f);
  }
  EXPECT_EQ(seen.size(), 20000u);
  EXPECT_NEAR(agree / 10000.0, 0.5, 0.03);
}

TEST(CommonDropout, UniformIsUniformOn24Bits) {
  const int n = 160000, bins = 16;
  std::array<int, bins> hist{};
  double sum = 0;
  for (uint64_t i = 0; i < uint64_t(n); ++i) {
    const float u = uniform_seed_index(0xabcdef, i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    // The top 24 bits, exactly: u * 2^24 is an integer.
    ASSERT_EQ(double(u) * 16777216.0, std::floor(double(u) * 16777216.0));
    ASSERT_EQ(double(u) * 16777216.0, double(hash_seed_index(0xabcdef, i) >> 40));
    ++hist[int(u * bins)];
    sum += u;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  // Chi-square with 15 degrees of freedom: the 99.99th percentile is about 44.
  double chi2 = 0;
  const double expected = double(n) / bins;
  for (int b = 0; b < bins; ++b) chi2 += (hist[b] - expected) * (hist[b] - expected) / expected;
  EXPECT_LT(chi2, 44.0);
}

TEST(CommonDropout, KeepFractionAndScale) {
  for (float p : {0.0f, 0.1f, 0.5f, 0.9f, 1.0f}) {
    int kept = 0;
    const int n = 100000;
    for (uint64_t i = 0; i < uint64_t(n); ++i) kept += dropout_keep(99, i, p);
    if (p == 0.0f) {
      EXPECT_EQ(kept, n);  // u >= 0 always
    }
    if (p == 1.0f) {
      EXPECT_EQ(kept, 0);  // u < 1 always
    }
    EXPECT_NEAR(double(kept) / n, 1.0 - p, 0.01) << p;
  }
  EXPECT_EQ(dropout_scale(0.0f), 1.0f);
  EXPECT_EQ(dropout_scale(0.5f), 2.0f);
  EXPECT_FLOAT_EQ(dropout_scale(0.2f), 1.25f);
  EXPECT_EQ(dropout_scale(1.0f), 0.0f);
}

// ---------------------------------------------------------------------------------------------
// optim.h

TEST(CommonOptim, SgdMatchesPytorchFormulas) {
  struct C {
    float momentum, wd;
    bool nesterov, first;
  };
  const C cases[] = {{0.0f, 0.0f, false, false}, {0.0f, 1e-2f, false, false},
                     {0.9f, 5e-4f, false, true}, {0.9f, 5e-4f, false, false},
                     {0.9f, 1e-4f, true, false}, {0.5f, 0.0f, true, true}};
  std::mt19937 rng(13);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (const C& c : cases) {
    for (int i = 0; i < 50; ++i) {
      const float w0 = d(rng), g = d(rng), b0 = d(rng), lr = 0.05f;
      float w = w0, buf = b0;
      sgd_element(w, g, c.momentum != 0.0f ? &buf : nullptr, lr, c.momentum, c.wd, c.nesterov,
                  c.first);
      double dd = double(g) + double(c.wd) * w0, b = b0;
      if (c.momentum != 0.0f) {
        b = c.first ? dd : double(c.momentum) * b0 + dd;
        dd = c.nesterov ? dd + double(c.momentum) * b : b;
        EXPECT_TRUE(near(buf, b, 1e-6, 1e-7));
      } else {
        EXPECT_EQ(buf, b0);  // untouched
      }
      EXPECT_TRUE(near(w, double(w0) - lr * dd, 1e-6, 1e-7));
    }
  }
}

TEST(CommonOptim, AdamStepConsts) {
  for (long long t : {1LL, 2LL, 10LL, 1000LL, 100000LL}) {
    const AdamStepConsts c = adam_step_consts(1e-3f, 0.9f, 0.999f, t);
    const double bc1 = 1.0 - std::pow(double(0.9f), double(t));
    const double bc2 = 1.0 - std::pow(double(0.999f), double(t));
    EXPECT_TRUE(near(c.step_size, double(1e-3f) / bc1, 1e-6)) << t;
    EXPECT_TRUE(near(c.inv_sqrt_bc2, 1.0 / std::sqrt(bc2), 1e-6)) << t;
  }
}

// Several Adam steps against torch.optim.Adam's algorithm written out in double.
TEST(CommonOptim, AdamMatchesPytorchOverSteps) {
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  for (float wd : {0.0f, 0.05f}) {
    std::mt19937 rng(17);
    std::normal_distribution<float> d(0.0f, 1.0f);
    float w = 0.7f, m = 0.0f, v = 0.0f;
    double wr = 0.7, mr = 0.0, vr = 0.0;
    for (int t = 1; t <= 20; ++t) {
      const float g = d(rng);
      adam_element(w, g, m, v, b1, b2, eps, wd, adam_step_consts(lr, b1, b2, t));
      const double gd = double(g) + double(wd) * wr;
      mr = b1 * mr + (1.0 - b1) * gd;
      vr = b2 * vr + (1.0 - b2) * gd * gd;
      const double mhat = mr / (1.0 - std::pow(double(b1), t));
      const double vhat = vr / (1.0 - std::pow(double(b2), t));
      wr -= lr * mhat / (std::sqrt(vhat) + eps);
      EXPECT_TRUE(near(m, mr, 1e-5, 1e-7)) << "t " << t;
      EXPECT_TRUE(near(v, vr, 1e-5, 1e-9)) << "t " << t;
      EXPECT_TRUE(near(w, wr, 1e-5, 1e-6)) << "t " << t;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// method.h

TEST(CommonMethod, MaskHitIsStrict) {
  // Exactly representable: |w - c| == eps must not match.
  EXPECT_FALSE(mask_hit(0.375f, 0.25f, 0.125f));
  EXPECT_FALSE(mask_hit(0.125f, 0.25f, 0.125f));
  EXPECT_TRUE(mask_hit(std::nextafter(0.375f, 0.0f), 0.25f, 0.125f));
  EXPECT_TRUE(mask_hit(std::nextafter(0.125f, 1.0f), 0.25f, 0.125f));
  EXPECT_TRUE(mask_hit(0.25f, 0.25f, 0.125f));
  EXPECT_FALSE(mask_hit(0.25f, 0.25f, 0.0f));  // eps = 0 selects nothing
  EXPECT_FALSE(mask_hit(kNaN, 0.25f, 0.125f));
  EXPECT_FALSE(mask_hit(kInf, 0.25f, 0.125f));
  std::mt19937 rng(19);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  for (int i = 0; i < 1000; ++i) {
    const float w = d(rng), c = d(rng) * 0.1f, eps = std::fabs(d(rng)) * 0.2f;
    // The exact distance decides, except within rounding of the boundary.
    const double dist = std::fabs(double(w) - double(c));
    if (std::fabs(dist - eps) > 1e-6) {
      EXPECT_EQ(mask_hit(w, c, eps), dist < eps) << w << " " << c;
    }
  }
}

TEST(CommonMethod, SignOrZero) {
  EXPECT_EQ(sign_or_zero(2.5f), 1.0f);
  EXPECT_EQ(sign_or_zero(-1e-30f), -1.0f);
  EXPECT_EQ(sign_or_zero(0.0f), 0.0f);
  EXPECT_EQ(sign_or_zero(-0.0f), 0.0f);
  EXPECT_EQ(sign_or_zero(kNaN), 0.0f);
  EXPECT_EQ(sign_or_zero(-kInf), -1.0f);
}

// The fused masked update against its formula in double: objective gradient with L1 term,
// bias-corrected Adam without weight decay, clamp.
TEST(CommonMethod, MaskedAdamClampMatchesFormula) {
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  struct C {
    float w, grad, m, v, grad_scale, l1, lo, hi;
    long long t;
  };
  const C cases[] = {
      {0.03f, 0.5f, 0.0f, 0.0f, 1.0f, 0.0f, -1.0f, 1.0f, 1},      // plain step
      {0.03f, 0.5f, 0.01f, 1e-3f, 1.0f, 1e-2f, -1.0f, 1.0f, 5},   // L1 adds +l1 (w > 0)
      {-0.03f, 0.5f, 0.01f, 1e-3f, 1.0f, 1e-2f, -1.0f, 1.0f, 5},  // L1 adds -l1 (w < 0)
      {0.0f, 0.5f, 0.01f, 1e-3f, 1.0f, 1e-2f, -1.0f, 1.0f, 5},    // sign(0) = 0: no L1
      {0.049f, -3.0f, 0.0f, 0.0f, 1.0f, 0.0f, -0.05f, 0.05f, 1},  // clamped at hi
      {-0.049f, 3.0f, 0.0f, 0.0f, 1.0f, 0.0f, -0.05f, 0.05f, 1},  // clamped at lo
      {0.2f, 0.3f, 0.02f, 2e-3f, -1.0f, 0.0f, -1.0f, 1.0f, 100},  // gradient ascent
  };
  for (const C& c : cases) {
    float w = c.w, m = c.m, v = c.v;
    masked_adam_clamp_element(w, c.grad, m, v, b1, b2, eps, adam_step_consts(lr, b1, b2, c.t),
                              c.grad_scale, c.l1, c.lo, c.hi);
    const double sgn = c.w > 0 ? 1.0 : (c.w < 0 ? -1.0 : 0.0);
    const double g = double(c.grad_scale) * c.grad + double(c.l1) * sgn;
    const double mr = b1 * double(c.m) + (1.0 - b1) * g;
    const double vr = b2 * double(c.v) + (1.0 - b2) * g * g;
    const double mhat = mr / (1.0 - std::pow(double(b1), double(c.t)));
    const double vhat = vr / (1.0 - std::pow(double(b2), double(c.t)));
    double wr = double(c.w) - lr * mhat / (std::sqrt(vhat) + eps);
    wr = std::min(std::max(wr, double(c.lo)), double(c.hi));
    EXPECT_TRUE(near(m, mr, 1e-5, 1e-9)) << c.w;
    EXPECT_TRUE(near(v, vr, 1e-5, 1e-12)) << c.w;
    EXPECT_TRUE(near(w, wr, 1e-5, 1e-7)) << c.w;
    EXPECT_GE(w, c.lo);
    EXPECT_LE(w, c.hi);
  }
  // The clamp is exact at the bounds.
  float w = 0.049f, m = 0.0f, v = 0.0f;
  masked_adam_clamp_element(w, -3.0f, m, v, b1, b2, eps, adam_step_consts(lr, b1, b2, 1), 1.0f,
                            0.0f, -0.05f, 0.05f);
  EXPECT_EQ(w, 0.05f);
}

// LSTM cell in double, for references and finite differences.
struct LstmRef {
  double ai, af, ag, ao, c, h;
};
LstmRef lstm_ref(double pi, double pf, double pg, double po, double c_prev) {
  auto sig = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  LstmRef r;
  r.ai = sig(pi);
  r.af = sig(pf);
  r.ag = std::tanh(pg);
  r.ao = sig(po);
  r.c = r.af * c_prev + r.ai * r.ag;
  r.h = r.ao * std::tanh(r.c);
  return r;
}

TEST(CommonMethod, LstmUnitForwardMatchesFormula) {
  std::mt19937 rng(23);
  std::normal_distribution<float> d(0.0f, 2.0f);
  for (int i = 0; i < 200; ++i) {
    const float pi = d(rng), pf = d(rng), pg = d(rng), po = d(rng), cp = d(rng);
    float ai, af, ag, ao, c, h;
    lstm_unit_forward(pi, pf, pg, po, cp, &ai, &af, &ag, &ao, &c, &h);
    const LstmRef r = lstm_ref(pi, pf, pg, po, cp);
    EXPECT_TRUE(near(ai, r.ai, 1e-6, 1e-7));
    EXPECT_TRUE(near(af, r.af, 1e-6, 1e-7));
    EXPECT_TRUE(near(ag, r.ag, 1e-6, 1e-7));
    EXPECT_TRUE(near(ao, r.ao, 1e-6, 1e-7));
    EXPECT_TRUE(near(c, r.c, 1e-5, 1e-6));
    EXPECT_TRUE(near(h, r.h, 1e-5, 1e-6));
  }
  EXPECT_FLOAT_EQ(sigmoidf_(0.0f), 0.5f);
}

// L = wh * h + wc * c; its gradient w.r.t. (pi, pf, pg, po, c_prev) by central differences of
// the double cell against lstm_unit_backward with dh = wh, dc = wc.
TEST(CommonMethod, LstmUnitBackwardMatchesFiniteDifferences) {
  std::mt19937 rng(29);
  std::normal_distribution<float> d(0.0f, 1.5f);
  for (int trial = 0; trial < 50; ++trial) {
    double in[5];
    for (double& v : in) v = d(rng);
    const double wh = d(rng), wc = d(rng);
    auto loss = [&](const double* p) {
      const LstmRef r = lstm_ref(p[0], p[1], p[2], p[3], p[4]);
      return wh * r.h + wc * r.c;
    };
    float ai, af, ag, ao, c, h;
    lstm_unit_forward(float(in[0]), float(in[1]), float(in[2]), float(in[3]), float(in[4]), &ai,
                      &af, &ag, &ao, &c, &h);
    float grads[5];
    lstm_unit_backward(ai, af, ag, ao, float(in[4]), c, float(wh), float(wc), &grads[0], &grads[1],
                       &grads[2], &grads[3], &grads[4]);
    for (int k = 0; k < 5; ++k) {
      double p[5], q[5];
      std::copy(in, in + 5, p);
      std::copy(in, in + 5, q);
      const double step = 1e-6;
      p[k] += step;
      q[k] -= step;
      const double fd = (loss(p) - loss(q)) / (2 * step);
      EXPECT_TRUE(near(grads[k], fd, 1e-4, 1e-5)) << "trial " << trial << " input " << k;
    }
  }
}

TEST(CommonMethod, NormalizeU8MatchesTorchvision) {
  const float means[] = {0.0f, 0.1307f, 0.4914f}, stds[] = {1.0f, 0.3081f, 0.2470f};
  for (int s = 0; s < 3; ++s) {
    for (int u = 0; u < 256; ++u) {
      const double ref = (double(u) / 255.0 - means[s]) / stds[s];
      EXPECT_TRUE(
          near(normalize_u8(static_cast<unsigned char>(u), means[s], stds[s]), ref, 1e-6, 1e-6))
          << u;
    }
  }
  EXPECT_EQ(normalize_u8(0, 0.0f, 1.0f), 0.0f);
  EXPECT_EQ(normalize_u8(255, 0.0f, 1.0f), 1.0f);
}

// ---------------------------------------------------------------------------------------------
// softmax_ce.h

TEST(CommonSoftmaxCe, GradAndLabelValidity) {
  EXPECT_FLOAT_EQ(softmax_ce_grad(0.25f, false, 1.0f, 0.5f), 0.125f);
  EXPECT_FLOAT_EQ(softmax_ce_grad(0.25f, true, 1.0f, 0.5f), -0.375f);
  EXPECT_FLOAT_EQ(softmax_ce_grad(0.25f, true, 2.0f, 0.25f), -0.375f);
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> d(0.0f, 1.0f);
  for (int i = 0; i < 100; ++i) {
    const float p = d(rng), scale = d(rng) * 4, inv_n = 1.0f / float(1 + i);
    for (bool lab : {false, true})
      EXPECT_TRUE(near(softmax_ce_grad(p, lab, scale, inv_n),
                       double(scale) * (double(p) - (lab ? 1.0 : 0.0)) * double(inv_n), 1e-6,
                       1e-8));
  }
  EXPECT_FALSE(label_valid(-1, 10));
  EXPECT_TRUE(label_valid(0, 10));
  EXPECT_TRUE(label_valid(9, 10));
  EXPECT_FALSE(label_valid(10, 10));
  EXPECT_FALSE(label_valid(0, 0));
}

}  // namespace
}  // namespace nns::ops::common
