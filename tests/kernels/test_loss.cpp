// Softmax cross-entropy (loss, probabilities, gradient, label checks) and argmax accuracy.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/ops.h"

namespace nns::ops::test {
namespace {

double ref_loss(int n, int k, const std::vector<float>& z, const std::vector<int32_t>& labels,
                std::vector<double>* probs) {
  double total = 0.0;
  if (probs) probs->assign(size_t(n) * k, 0.0);
  for (int i = 0; i < n; ++i) {
    double mx = -1e300;
    for (int j = 0; j < k; ++j) mx = std::max(mx, double(z[size_t(i) * k + j]));
    double s = 0.0;
    for (int j = 0; j < k; ++j) s += std::exp(z[size_t(i) * k + j] - mx);
    for (int j = 0; j < k && probs; ++j)
      (*probs)[size_t(i) * k + j] = std::exp(z[size_t(i) * k + j] - mx) / s;
    total += -(z[size_t(i) * k + labels[i]] - mx - std::log(s));
  }
  return total / n;
}

TEST(SoftmaxCrossEntropy, ForwardBackwardMatchReference) {
  std::mt19937 rng(1);
  for (auto [n, k, spread] : {std::tuple{1, 1, 1.0f}, std::tuple{4, 10, 3.0f},
                              std::tuple{33, 7, 30.0f}, std::tuple{128, 100, 5.0f}}) {
    const auto z = random_vec(size_t(n) * k, rng, -spread, spread);
    std::vector<int32_t> labels(n);
    for (auto& l : labels) l = std::uniform_int_distribution<int>(0, k - 1)(rng);
    std::vector<float> probs(size_t(n) * k, sentinel());
    float loss = sentinel();
    softmax_cross_entropy_forward(kCpu, n, k, z.data(), labels.data(), probs.data(), &loss);
    std::vector<double> rp;
    const double rl = ref_loss(n, k, z, labels, &rp);
    EXPECT_NEAR(loss, rl, 1e-5 * (1 + std::fabs(rl))) << n << "x" << k;
    EXPECT_TRUE(all_close(probs, rp, 1e-6, 1e-5));

    const float scale = 2.5f;
    std::vector<float> d(size_t(n) * k, sentinel());
    softmax_cross_entropy_backward(kCpu, n, k, probs.data(), labels.data(), scale, d.data());
    std::vector<double> rd(size_t(n) * k);
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < k; ++j)
        rd[size_t(i) * k + j] = scale * (rp[size_t(i) * k + j] - (j == labels[i])) / n;
    EXPECT_TRUE(all_close(d, rd, 1e-7, 1e-5));
  }
}

TEST(SoftmaxCrossEntropy, GradientMatchesFiniteDifferences) {
  std::mt19937 rng(2);
  const int n = 5, k = 6;
  auto z = random_vec(size_t(n) * k, rng, -2.0f, 2.0f);
  const std::vector<int32_t> labels = {0, 5, 2, 2, 3};
  std::vector<float> probs(size_t(n) * k), d(size_t(n) * k);
  auto loss = [&]() {
    float l;
    softmax_cross_entropy_forward(kCpu, n, k, z.data(), labels.data(), probs.data(), &l);
    return double(l);
  };
  loss();
  softmax_cross_entropy_backward(kCpu, n, k, probs.data(), labels.data(), 1.0f, d.data());
  for (size_t i = 0; i < z.size(); ++i) {
    const double fd = central_difference(z, i, 1e-2, loss);
    EXPECT_NEAR(d[i], fd, 2e-4) << i;
  }
}

// Very large logits: probabilities underflow but the loss stays finite and exact.
TEST(SoftmaxCrossEntropy, StableForLargeLogits) {
  const std::vector<float> z = {1000.0f, 0.0f, -1000.0f};
  const std::vector<int32_t> labels = {1};
  std::vector<float> probs(3);
  float loss = 0.0f;
  softmax_cross_entropy_forward(kCpu, 1, 3, z.data(), labels.data(), probs.data(), &loss);
  EXPECT_NEAR(loss, 1000.0f, 1e-3);
  EXPECT_FLOAT_EQ(probs[0], 1.0f);
  EXPECT_EQ(probs[2], 0.0f);
}

TEST(SoftmaxCrossEntropy, LabelOutOfRangeThrowsWithMessage) {
  const std::vector<float> z(2 * 10, 0.0f);
  std::vector<float> probs(20), d(20);
  float loss;
  for (int32_t bad : {10, -1}) {
    const std::vector<int32_t> labels = {3, bad};
    try {
      softmax_cross_entropy_forward(kCpu, 2, 10, z.data(), labels.data(), probs.data(), &loss);
      FAIL() << "label " << bad << " accepted";
    } catch (const std::out_of_range& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("label " + std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("[0, 10)"), std::string::npos) << msg;
    }
    EXPECT_THROW(softmax_cross_entropy_backward(kCpu, 2, 10, probs.data(), labels.data(), 1.0f,
                                                d.data()),
                 std::out_of_range);
  }
}

TEST(ArgmaxAccuracy, FirstIndexOnTiesAndCount) {
  const std::vector<float> z = {1, 3, 3, 0,    // tie between 1 and 2 -> 1
                                5, 5, 5, 5,    // all equal -> 0
                                -1, -2, -3, 0, // -> 3
                                0, 2, 1, 2};   // -> 1
  const std::vector<int32_t> labels = {1, 1, 3, 3};
  std::vector<int32_t> pred(4, -1);
  EXPECT_EQ(argmax_accuracy(kCpu, 4, 4, z.data(), labels.data(), pred.data()), 2);
  EXPECT_EQ(pred, (std::vector<int32_t>{1, 0, 3, 1}));
  EXPECT_EQ(argmax_accuracy(kCpu, 4, 4, z.data(), nullptr, pred.data()), 0);

  std::mt19937 rng(3);
  const int n = 5000, k = 10;
  const auto big = random_vec(size_t(n) * k, rng);
  std::vector<int32_t> lab(n), p(n);
  for (auto& l : lab) l = std::uniform_int_distribution<int>(0, k - 1)(rng);
  int64_t expect = 0;
  for (int i = 0; i < n; ++i) {
    int best = 0;
    for (int j = 1; j < k; ++j)
      if (big[size_t(i) * k + j] > big[size_t(i) * k + best]) best = j;
    expect += best == lab[i];
  }
  EXPECT_EQ(argmax_accuracy(kCpu, n, k, big.data(), lab.data(), p.data()), expect);
}

}  // namespace
}  // namespace nns::ops::test
