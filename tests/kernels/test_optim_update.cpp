// sgd_update and adam_update over several steps against the PyTorch formulas computed by hand
// in double.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/ops.h"

namespace nns::ops::test {
namespace {

struct SgdCase {
  float momentum, wd;
  bool nesterov;
};

TEST(SgdUpdate, MatchesPyTorchOverSeveralSteps) {
  std::mt19937 rng(1);
  for (const SgdCase c : {SgdCase{0.0f, 0.0f, false}, SgdCase{0.9f, 0.0f, false},
                          SgdCase{0.9f, 5e-4f, false}, SgdCase{0.9f, 1e-2f, true}}) {
    for (int64_t count : {int64_t(7), int64_t(70001)}) {
      auto w = random_vec(count, rng);
      std::vector<float> buf(count, sentinel());
      std::vector<double> rw(w.begin(), w.end()), rbuf(count, 0.0);
      const float lr = 0.05f;
      for (int step = 0; step < 4; ++step) {
        const auto g = random_vec(count, rng);
        sgd_update(kCpu, count, w.data(), g.data(), c.momentum != 0.0f ? buf.data() : nullptr, lr,
                   c.momentum, c.wd, c.nesterov, step == 0);
        for (int64_t i = 0; i < count; ++i) {
          double d = g[i] + double(c.wd) * rw[i];
          if (c.momentum != 0.0f) {
            rbuf[i] = step == 0 ? d : double(c.momentum) * rbuf[i] + d;
            d = c.nesterov ? d + double(c.momentum) * rbuf[i] : rbuf[i];
          }
          rw[i] -= double(lr) * d;
        }
      }
      EXPECT_TRUE(all_close(w, rw, 1e-6, 1e-5))
          << "momentum " << c.momentum << " wd " << c.wd << " nesterov " << c.nesterov;
      if (c.momentum != 0.0f) {
        EXPECT_TRUE(all_close(buf, rbuf, 1e-6, 1e-5));
      }
    }
  }
}

TEST(AdamUpdate, MatchesPyTorchOverSeveralSteps) {
  std::mt19937 rng(2);
  for (float wd : {0.0f, 1e-2f}) {
    for (int64_t count : {int64_t(5), int64_t(70001)}) {
      auto w = random_vec(count, rng);
      std::vector<float> m(count, 0.0f), v(count, 0.0f);
      std::vector<double> rw(w.begin(), w.end()), rm(count, 0.0), rv(count, 0.0);
      // The hyperparameters as the op receives them (float), so 1 - beta2 is the same number.
      const double lr = double(1e-2f), b1 = double(0.9f), b2 = double(0.999f), eps = double(1e-8f);
      for (int64_t t = 1; t <= 5; ++t) {
        // Gradients of different magnitudes per step, so the bias corrections matter.
        const auto g = random_vec(count, rng, -0.1f * t, 0.2f * t);
        adam_update(kCpu, count, w.data(), g.data(), m.data(), v.data(), float(lr), float(b1),
                    float(b2), float(eps), wd, t);
        for (int64_t i = 0; i < count; ++i) {
          const double d = g[i] + double(wd) * rw[i];
          rm[i] = b1 * rm[i] + (1 - b1) * d;
          rv[i] = b2 * rv[i] + (1 - b2) * d * d;
          const double mhat = rm[i] / (1 - std::pow(b1, double(t)));
          const double vhat = rv[i] / (1 - std::pow(b2, double(t)));
          rw[i] -= lr * mhat / (std::sqrt(vhat) + eps);
        }
      }
      EXPECT_TRUE(all_close(w, rw, 1e-6, 1e-5)) << "wd " << wd << " count " << count;
      EXPECT_TRUE(all_close(m, rm, 1e-7, 1e-5));
      EXPECT_TRUE(all_close(v, rv, 1e-9, 1e-5));
    }
  }
}

TEST(AdamUpdate, FirstStepMovesEveryWeightByAboutLr) {
  // With m = v = 0 the first bias-corrected step is lr * g/|g| (up to eps).
  std::vector<float> w = {1.0f, -2.0f, 0.5f}, g = {0.3f, -4.0f, 1e-3f}, m(3, 0.0f), v(3, 0.0f);
  adam_update(kCpu, 3, w.data(), g.data(), m.data(), v.data(), 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 1);
  EXPECT_NEAR(w[0], 0.9f, 1e-5);
  EXPECT_NEAR(w[1], -1.9f, 1e-5);
  EXPECT_NEAR(w[2], 0.4f, 1e-4);
  EXPECT_THROW(adam_update(kCpu, 3, w.data(), g.data(), m.data(), v.data(), 0.1f, 0.9f, 0.999f,
                           1e-8f, 0.0f, 0),
               std::invalid_argument);
}

}  // namespace
}  // namespace nns::ops::test
