// Activations (forward, backward from the output), the epilogue backward, add/axpy/fill and
// channel_sum, at sizes below and above the threshold where loops go parallel.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/common/activation.h"
#include "kernels/ops.h"

namespace nns::ops::test {
namespace {

constexpr int64_t kSizes[] = {1, 37, 100003};

constexpr Activation kActs[] = {Activation::None, Activation::ReLU, Activation::ReLU6,
                                Activation::Tanh, Activation::Sigmoid};

double ref_act(Activation a, double v) {
  if (a == Activation::ReLU) return std::max(v, 0.0);
  if (a == Activation::ReLU6) return std::min(std::max(v, 0.0), 6.0);
  if (a == Activation::Tanh) return std::tanh(v);
  if (a == Activation::Sigmoid) return 1.0 / (1.0 + std::exp(-v));
  return v;
}
// The derivative with respect to the input x.
double ref_act_grad(Activation a, double x) {
  if (a == Activation::ReLU) return x > 0 ? 1.0 : 0.0;
  if (a == Activation::ReLU6) return (x > 0 && x < 6) ? 1.0 : 0.0;
  if (a == Activation::Tanh) return 1.0 - std::tanh(x) * std::tanh(x);
  if (a == Activation::Sigmoid) return ref_act(a, x) * (1.0 - ref_act(a, x));
  return 1.0;
}
// Piecewise-linear activations are exact in float; the smooth ones round.
double act_tol(Activation a) {
  return (a == Activation::Tanh || a == Activation::Sigmoid) ? 1e-6 : 0.0;
}

TEST(Activation, ForwardAndBackwardMatchReference) {
  std::mt19937 rng(1);
  for (Activation a : kActs) {
    for (int64_t count : kSizes) {
      const auto x = random_vec(count, rng, -4.0f, 10.0f);
      const auto dy = random_vec(count, rng);
      std::vector<float> y(count, sentinel()), dx(count, sentinel());
      activation_forward(kCpu, a, count, x.data(), y.data());
      activation_backward(kCpu, a, count, y.data(), dy.data(), dx.data());
      std::vector<double> ry(count), rdx(count);
      for (int64_t i = 0; i < count; ++i) {
        ry[i] = ref_act(a, x[i]);
        rdx[i] = dy[i] * ref_act_grad(a, x[i]);
      }
      EXPECT_TRUE(all_close(y, ry, act_tol(a), act_tol(a))) << int(a) << " count " << count;
      EXPECT_TRUE(all_close(dx, rdx, act_tol(a), act_tol(a))) << int(a) << " count " << count;
    }
  }
}

// PyTorch's gradient at the kinks: ReLU'(0) = 0, ReLU6'(0) = ReLU6'(6) = 0; in place works.
TEST(Activation, KinksAndInPlace) {
  std::vector<float> x = {0.0f, 6.0f, -0.0f, 5.999f, 6.5f, 1e-30f};
  std::vector<float> y = x;
  activation_forward(kCpu, Activation::ReLU6, x.size(), y.data(), y.data());
  EXPECT_EQ(y, (std::vector<float>{0.0f, 6.0f, 0.0f, 5.999f, 6.0f, 1e-30f}));
  std::vector<float> g(x.size(), 2.0f);
  activation_backward(kCpu, Activation::ReLU6, x.size(), y.data(), g.data(), g.data());
  EXPECT_EQ(g, (std::vector<float>{0.0f, 0.0f, 0.0f, 2.0f, 0.0f, 2.0f}));
  std::vector<float> yr = {0.0f, 3.0f};
  std::vector<float> gr = {1.0f, 1.0f};
  activation_backward(kCpu, Activation::ReLU, 2, yr.data(), gr.data(), gr.data());
  EXPECT_EQ(gr, (std::vector<float>{0.0f, 1.0f}));
}

// epilogue_backward: d/dacc of act(scale*(acc+bias)+shift) from its output; checked against the
// formula and against finite differences of the epilogue itself (away from the kinks).
TEST(EpilogueBackward, MatchesReferenceAndFiniteDifferences) {
  std::mt19937 rng(2);
  const int n = 3, c = 4, hw = 11;
  const size_t count = size_t(n) * c * hw;
  const auto scale = random_vec(c, rng, 0.5f, 2.0f);
  const auto bias = random_vec(c, rng);
  const auto shift = random_vec(c, rng);
  for (Activation a : kActs) {
    auto acc = random_vec(count, rng, -5.0f, 5.0f);
    const auto dy = random_vec(count, rng);
    auto epi = [&](size_t i) {
      const int ch = int((i / hw) % c);
      return common::epilogue_apply(acc[i], bias[ch], scale[ch], shift[ch], a);
    };
    std::vector<float> y(count);
    for (size_t i = 0; i < count; ++i) y[i] = epi(i);
    for (const float* sc : {scale.data(), static_cast<const float*>(nullptr)}) {
      std::vector<float> dacc(count, sentinel());
      epilogue_backward(kCpu, n, c, hw, a, y.data(), dy.data(), sc, dacc.data());
      for (size_t i = 0; i < count; ++i) {
        const int ch = int((i / hw) % c);
        const double pre = double(scale[ch]) * (acc[i] + bias[ch]) + shift[ch];
        const double ref = dy[i] * ref_act_grad(a, pre) * (sc ? sc[ch] : 1.0);
        ASSERT_NEAR(dacc[i], ref, 1e-5) << "act " << int(a) << " i " << i;
      }
    }
    // Finite differences of the epilogue with the scale: skip points within h of a kink.
    std::vector<float> dacc(count);
    epilogue_backward(kCpu, n, c, hw, a, y.data(), dy.data(), scale.data(), dacc.data());
    const double h = 1e-3;
    for (size_t i = 0; i < count; ++i) {
      const int ch = int((i / hw) % c);
      const double pre = double(scale[ch]) * (acc[i] + bias[ch]) + shift[ch];
      if (std::fabs(pre) < 0.1 || std::fabs(pre - 6.0) < 0.1) continue;
      const float orig = acc[i];
      acc[i] = orig + float(h);
      const double yp = epi(i);
      acc[i] = orig - float(h);
      const double ym = epi(i);
      acc[i] = orig;
      const double step = double(orig + float(h)) - double(orig - float(h));
      EXPECT_NEAR(dacc[i], dy[i] * (yp - ym) / step, 1e-2) << "act " << int(a) << " i " << i;
    }
  }
}

TEST(ElementWise, AddAxpyFill) {
  std::mt19937 rng(3);
  for (int64_t count : kSizes) {
    const auto a = random_vec(count, rng);
    const auto b = random_vec(count, rng);
    std::vector<float> y(count, sentinel());
    add(kCpu, count, a.data(), b.data(), y.data());
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(y[i], a[i] + b[i]) << i;
    // In place: y aliases a.
    std::vector<float> a2 = a;
    add(kCpu, count, a2.data(), b.data(), a2.data());
    EXPECT_EQ(a2, y);
    std::vector<float> z = b;
    axpy(kCpu, count, -2.5f, a.data(), z.data());
    std::vector<double> rz(count);
    for (int64_t i = 0; i < count; ++i) rz[i] = double(b[i]) - 2.5 * a[i];
    EXPECT_TRUE(all_close(z, rz, 1e-6, 1e-6));
    fill(kCpu, count, 3.25f, y.data());
    for (int64_t i = 0; i < count; ++i) ASSERT_EQ(y[i], 3.25f) << i;
  }
}

TEST(ElementWise, ChannelSum) {
  std::mt19937 rng(4);
  for (auto [n, c, hw] : {std::tuple{1, 1, 1}, std::tuple{3, 5, 7}, std::tuple{64, 16, 196}}) {
    const auto x = random_vec(size_t(n) * c * hw, rng);
    std::vector<float> out(c, sentinel());
    channel_sum(kCpu, n, c, hw, x.data(), out.data());
    std::vector<double> ref(c, 0.0);
    for (size_t i = 0; i < x.size(); ++i) ref[(i / hw) % c] += x[i];
    EXPECT_TRUE(all_close(out, ref, 1e-4, 1e-5)) << n << "x" << c << "x" << hw;
  }
}

}  // namespace
}  // namespace nns::ops::test
