// Dropout: the counter-based mask (kept fraction, determinism, independence of threads), the
// forward scaling and the backward through the saved mask.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/common/dropout.h"
#include "kernels/ops.h"

namespace nns::ops::test {
namespace {

// The splitmix64 finaliser is the published one: the first output of splitmix64 from state 0.
TEST(DropoutHash, SplitmixKnownAnswer) {
  EXPECT_EQ(common::splitmix64_mix(0x9E3779B97F4A7C15ull), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(common::splitmix64_mix(2 * 0x9E3779B97F4A7C15ull), 0x6E789E6AA1B965F4ull);
}

TEST(DropoutHash, UniformIsInUnitIntervalAndBalanced) {
  double sum = 0.0, sum_sq = 0.0;
  const int n = 200000;
  float lo = 1.0f, hi = 0.0f;
  for (int i = 0; i < n; ++i) {
    const float u = common::uniform_seed_index(42, i);
    lo = std::fmin(lo, u);
    hi = std::fmax(hi, u);
    sum += u;
    sum_sq += double(u) * u;
  }
  EXPECT_GE(lo, 0.0f);
  EXPECT_LT(hi, 1.0f);
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  EXPECT_NEAR(sum_sq / n - (sum / n) * (sum / n), 1.0 / 12.0, 0.002);
}

TEST(Dropout, KeptFractionScalingAndDeterminism) {
  std::mt19937 rng(1);
  const int64_t count = 200003;
  const auto x = random_vec(count, rng, 0.5f, 1.5f);  // non-zero, so y == 0 means dropped
  for (float p : {0.1f, 0.5f, 0.8f}) {
    std::vector<float> y(count, sentinel());
    std::vector<uint8_t> mask(count, 7);
    dropout_forward(kCpu, count, p, 1234, x.data(), y.data(), mask.data());
    int64_t kept = 0;
    for (int64_t i = 0; i < count; ++i) {
      ASSERT_TRUE(mask[i] == 0 || mask[i] == 1) << i;
      ASSERT_EQ(bool(mask[i]), common::dropout_keep(1234, i, p)) << i;
      if (mask[i]) {
        ++kept;
        ASSERT_NEAR(y[i], x[i] / (1.0 - p), 1e-6) << i;
      } else {
        ASSERT_EQ(y[i], 0.0f) << i;
      }
    }
    const double frac = double(kept) / count;
    const double sigma = std::sqrt(p * (1.0 - p) / count);
    EXPECT_NEAR(frac, 1.0 - p, 5 * sigma) << "p " << p;

    // Same seed: same mask; another seed: a different one.
    std::vector<float> y2(count);
    std::vector<uint8_t> mask2(count);
    dropout_forward(kCpu, count, p, 1234, x.data(), y2.data(), mask2.data());
    EXPECT_EQ(mask, mask2);
    EXPECT_EQ(y, y2);
    dropout_forward(kCpu, count, p, 1235, x.data(), y2.data(), mask2.data());
    int64_t same = 0;
    for (int64_t i = 0; i < count; ++i) same += mask[i] == mask2[i];
    const double agree = p * p + (1 - p) * (1 - p);  // chance agreement of independent masks
    EXPECT_NEAR(double(same) / count, agree, 0.01) << "p " << p;
  }
}

TEST(Dropout, MaskDoesNotDependOnThreadCount) {
  const int saved = omp_get_max_threads();
  const int64_t count = 100000;
  std::vector<float> x(count, 1.0f), y(count);
  std::vector<uint8_t> m1(count), m3(count);
  omp_set_num_threads(1);
  dropout_forward(kCpu, count, 0.3f, 99, x.data(), y.data(), m1.data());
  omp_set_num_threads(3);
  dropout_forward(kCpu, count, 0.3f, 99, x.data(), y.data(), m3.data());
  omp_set_num_threads(saved);
  EXPECT_EQ(m1, m3);
}

TEST(Dropout, BackwardUsesMask) {
  std::mt19937 rng(2);
  const int64_t count = 1001;
  const float p = 0.4f;
  auto x = random_vec(count, rng);
  const auto r = random_vec(count, rng);
  std::vector<float> y(count);
  std::vector<uint8_t> mask(count);
  dropout_forward(kCpu, count, p, 7, x.data(), y.data(), mask.data());
  // A hand-made mask, different from the drawn one: backward must follow the mask it is given.
  std::vector<uint8_t> other(count);
  for (int64_t i = 0; i < count; ++i) other[i] = uint8_t(i % 3 == 0);
  std::vector<float> dx(count, sentinel());
  dropout_backward(kCpu, count, p, other.data(), r.data(), dx.data());
  for (int64_t i = 0; i < count; ++i)
    ASSERT_NEAR(dx[i], other[i] ? r[i] / (1.0 - p) : 0.0, 1e-6) << i;
  // With the drawn mask, backward is the gradient of loss = sum(dropout(x) * r) (same seed).
  dropout_backward(kCpu, count, p, mask.data(), r.data(), dx.data());
  auto loss = [&]() {
    dropout_forward(kCpu, count, p, 7, x.data(), y.data(), mask.data());
    return dot(y, r);
  };
  for (size_t i : sample_indices(count, 20, rng)) {
    const double fd = central_difference(x, i, 0.25, loss);
    EXPECT_NEAR(dx[i], fd, 1e-4 * (1 + std::fabs(fd))) << i;
  }
}

TEST(Dropout, ExtremeProbabilities) {
  const int64_t count = 1000;
  std::vector<float> x(count, 2.0f), y(count), dy(count, 1.0f), dx(count);
  std::vector<uint8_t> mask(count);
  dropout_forward(kCpu, count, 0.0f, 5, x.data(), y.data(), mask.data());
  for (int64_t i = 0; i < count; ++i) ASSERT_EQ(y[i], 2.0f);
  dropout_forward(kCpu, count, 1.0f, 5, x.data(), y.data(), mask.data());
  dropout_backward(kCpu, count, 1.0f, mask.data(), dy.data(), dx.data());
  for (int64_t i = 0; i < count; ++i) {
    ASSERT_EQ(y[i], 0.0f);
    ASSERT_EQ(dx[i], 0.0f);
  }
  EXPECT_THROW(dropout_forward(kCpu, count, 1.5f, 5, x.data(), y.data(), mask.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace nns::ops::test
