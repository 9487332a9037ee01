// Max pooling (padding, ties, argmax), average pooling (count_include_pad) and global average
// pooling against naive loops and finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/ops.h"

namespace nns::ops::test {
namespace {

Pool2dShape pool_shape(int n, int c, int h, int w, int kh, int kw, int sh, int sw, int ph,
                       int pw) {
  Pool2dShape s;
  s.n = n;
  s.c = c;
  s.h = h;
  s.w = w;
  s.kh = kh;
  s.kw = kw;
  s.stride_h = sh;
  s.stride_w = sw;
  s.pad_h = ph;
  s.pad_w = pw;
  return s;
}

size_t x_size(const Pool2dShape& s) { return size_t(s.n) * s.c * s.h * s.w; }
size_t y_size(const Pool2dShape& s) { return size_t(s.n) * s.c * s.out_h() * s.out_w(); }

const std::vector<Pool2dShape>& pool_cases() {
  static const std::vector<Pool2dShape> cases = {
      pool_shape(2, 3, 8, 8, 2, 2, 2, 2, 0, 0),    // LeNet / VGG 2x2
      pool_shape(2, 3, 9, 7, 2, 2, 2, 2, 0, 0),    // odd sizes, floor mode
      pool_shape(2, 2, 11, 10, 3, 3, 2, 2, 1, 1),  // ResNet-18 stem: 3x3 stride 2 pad 1
      pool_shape(1, 4, 7, 7, 3, 3, 1, 1, 1, 1),    // overlapping, stride 1
      pool_shape(3, 2, 6, 9, 3, 2, 2, 3, 1, 0),    // non-square everything
      pool_shape(2, 64, 16, 16, 3, 3, 2, 2, 1, 1), // large enough to go parallel
  };
  return cases;
}

// Naive max pooling: -inf padding, row-major scan, strict > keeps the first maximum.
void ref_maxpool(const Pool2dShape& s, const std::vector<float>& x, std::vector<float>& y,
                 std::vector<int32_t>& arg) {
  y.assign(y_size(s), 0.0f);
  arg.assign(y_size(s), -1);
  const int oh_n = s.out_h(), ow_n = s.out_w();
  for (int p = 0; p < s.n * s.c; ++p)
    for (int oh = 0; oh < oh_n; ++oh)
      for (int ow = 0; ow < ow_n; ++ow) {
        float best = -std::numeric_limits<float>::infinity();
        int bi = -1;
        for (int kh = 0; kh < s.kh; ++kh)
          for (int kw = 0; kw < s.kw; ++kw) {
            const int ih = oh * s.stride_h - s.pad_h + kh, iw = ow * s.stride_w - s.pad_w + kw;
            if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
            const float v = x[size_t(p) * s.h * s.w + ih * s.w + iw];
            if (v > best) {
              best = v;
              bi = ih * s.w + iw;
            }
          }
        y[(size_t(p) * oh_n + oh) * ow_n + ow] = best;
        arg[(size_t(p) * oh_n + oh) * ow_n + ow] = bi;
      }
}

TEST(MaxPool, ForwardBackwardMatchReferenceWithTies) {
  std::mt19937 rng(1);
  for (const Pool2dShape& s : pool_cases()) {
    // Values from {-2, -1, 0, 1}: many ties (and all-negative windows next to the padding).
    std::vector<float> x(x_size(s));
    std::uniform_int_distribution<int> d(-2, 1);
    for (auto& v : x) v = float(d(rng));
    std::vector<float> y(y_size(s), sentinel()), ry;
    std::vector<int32_t> arg(y_size(s), -7), rarg;
    maxpool2d_forward(kCpu, s, x.data(), y.data(), arg.data());
    ref_maxpool(s, x, ry, rarg);
    EXPECT_EQ(y, ry);
    EXPECT_EQ(arg, rarg);

    const auto dy = random_vec(y_size(s), rng);
    std::vector<float> dx(x_size(s), sentinel());
    maxpool2d_backward(kCpu, s, dy.data(), arg.data(), dx.data());
    std::vector<double> rdx(x_size(s), 0.0);
    const size_t ohw = size_t(s.out_h()) * s.out_w(), hw = size_t(s.h) * s.w;
    for (size_t o = 0; o < dy.size(); ++o) rdx[(o / ohw) * hw + rarg[o]] += dy[o];
    EXPECT_TRUE(all_close(dx, rdx, 1e-6, 1e-6));
  }
}

// Distinct values spaced 0.01 apart and a step of 0.002: no window changes its argmax, so the
// central difference is exact.
TEST(MaxPool, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(2);
  for (const Pool2dShape& s : pool_cases()) {
    std::vector<float> x(x_size(s));
    std::vector<int> perm(x.size());
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.01f * float(perm[i]) - 3.0f;
    const auto r = random_vec(y_size(s), rng);
    std::vector<float> y(y_size(s));
    std::vector<int32_t> arg(y_size(s));
    auto loss = [&]() {
      maxpool2d_forward(kCpu, s, x.data(), y.data(), arg.data());
      return dot(y, r);
    };
    loss();
    std::vector<float> dx(x_size(s));
    maxpool2d_backward(kCpu, s, r.data(), arg.data(), dx.data());
    for (size_t i : sample_indices(x.size(), 30, rng)) {
      const double fd = central_difference(x, i, 0.002, loss);
      EXPECT_NEAR(dx[i], fd, 2e-3 * (1 + std::fabs(fd))) << i;
    }
  }
}

TEST(MaxPool, FirstMaximumWinsOnTies) {
  // One 3x3 window over a 3x3 plane of equal values, then with a later equal maximum.
  const Pool2dShape s = pool_shape(1, 1, 3, 3, 3, 3, 1, 1, 0, 0);
  std::vector<float> x(9, 5.0f), y(1);
  std::vector<int32_t> arg(1);
  maxpool2d_forward(kCpu, s, x.data(), y.data(), arg.data());
  EXPECT_EQ(arg[0], 0);
  x = {1, 2, 7, 0, 7, 3, 7, 1, 1};
  maxpool2d_forward(kCpu, s, x.data(), y.data(), arg.data());
  EXPECT_EQ(y[0], 7.0f);
  EXPECT_EQ(arg[0], 2);
  // With padding, the padded -inf never wins even when every real value is negative.
  const Pool2dShape p = pool_shape(1, 1, 2, 2, 3, 3, 2, 2, 1, 1);
  x = {-5, -4, -3, -6};
  maxpool2d_forward(kCpu, p, x.data(), y.data(), arg.data());
  EXPECT_EQ(y[0], -3.0f);
  EXPECT_EQ(arg[0], 2);
}

TEST(AvgPool, ForwardBackwardMatchReferenceAndFiniteDifferences) {
  std::mt19937 rng(3);
  for (const Pool2dShape& s : pool_cases()) {
    auto x = random_vec(x_size(s), rng);
    std::vector<float> y(y_size(s), sentinel());
    avgpool2d_forward(kCpu, s, x.data(), y.data());
    // count_include_pad: the divisor is kh*kw even where the window covers padding.
    std::vector<double> ry(y_size(s));
    const int oh_n = s.out_h(), ow_n = s.out_w();
    for (int p = 0; p < s.n * s.c; ++p)
      for (int oh = 0; oh < oh_n; ++oh)
        for (int ow = 0; ow < ow_n; ++ow) {
          double acc = 0.0;
          for (int kh = 0; kh < s.kh; ++kh)
            for (int kw = 0; kw < s.kw; ++kw) {
              const int ih = oh * s.stride_h - s.pad_h + kh, iw = ow * s.stride_w - s.pad_w + kw;
              if (ih >= 0 && ih < s.h && iw >= 0 && iw < s.w)
                acc += x[size_t(p) * s.h * s.w + ih * s.w + iw];
            }
          ry[(size_t(p) * oh_n + oh) * ow_n + ow] = acc / (s.kh * s.kw);
        }
    EXPECT_TRUE(all_close(y, ry, 1e-6, 1e-5));

    const auto r = random_vec(y_size(s), rng);
    std::vector<float> dx(x_size(s), sentinel());
    avgpool2d_backward(kCpu, s, r.data(), dx.data());
    auto loss = [&]() {
      avgpool2d_forward(kCpu, s, x.data(), y.data());
      return dot(y, r);
    };
    for (size_t i : sample_indices(x.size(), 20, rng)) {
      const double fd = central_difference(x, i, 0.5, loss);
      EXPECT_NEAR(dx[i], fd, 1e-3 * (1 + std::fabs(fd))) << i;
    }
  }
}

TEST(GlobalAvgPool, ForwardBackward) {
  std::mt19937 rng(4);
  for (auto [n, c, hw] : {std::tuple{1, 1, 1}, std::tuple{3, 5, 49}, std::tuple{16, 64, 64}}) {
    auto x = random_vec(size_t(n) * c * hw, rng);
    std::vector<float> y(size_t(n) * c, sentinel());
    global_avgpool_forward(kCpu, n, c, hw, x.data(), y.data());
    std::vector<double> ry(size_t(n) * c, 0.0);
    for (size_t i = 0; i < x.size(); ++i) ry[i / hw] += x[i] / double(hw);
    EXPECT_TRUE(all_close(y, ry, 1e-6, 1e-5));
    const auto r = random_vec(size_t(n) * c, rng);
    std::vector<float> dx(x.size(), sentinel());
    global_avgpool_backward(kCpu, n, c, hw, r.data(), dx.data());
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(dx[i], r[i / hw] / double(hw), 1e-7) << i;
    // Explicit copies: clang-14 (the sanitizer build) cannot capture structured bindings.
    auto loss = [&, n = n, c = c, hw = hw]() {
      global_avgpool_forward(kCpu, n, c, hw, x.data(), y.data());
      return dot(y, r);
    };
    for (size_t i : sample_indices(x.size(), 8, rng)) {
      const double fd = central_difference(x, i, 0.5, loss);
      EXPECT_NEAR(dx[i], fd, 1e-3 * (1 + std::fabs(fd))) << i;
    }
  }
}

}  // namespace
}  // namespace nns::ops::test
