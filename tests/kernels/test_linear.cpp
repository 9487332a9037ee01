// linear_forward / backward_data / backward_weight against naive loops and finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/ops.h"

namespace nns::ops::test {
namespace {

struct LinearCase {
  int n, in, out;
};

class LinearTest : public ::testing::TestWithParam<LinearCase> {
 protected:
  std::mt19937 rng_{static_cast<unsigned>(GetParam().n * 1000 + GetParam().in * 10 + GetParam().out)};
};

std::vector<double> ref_linear(int n, int in, int out, const std::vector<float>& x,
                               const std::vector<float>& w, const Epilogue& e) {
  std::vector<double> y(size_t(n) * out);
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < out; ++o) {
      double acc = 0.0;
      for (int k = 0; k < in; ++k) acc += double(x[size_t(i) * in + k]) * w[size_t(o) * in + k];
      double v = (e.scale ? e.scale[o] : 1.0) * (acc + (e.bias ? e.bias[o] : 0.0)) +
                 (e.shift ? e.shift[o] : 0.0);
      if (e.act == Activation::ReLU) v = std::max(v, 0.0);
      if (e.act == Activation::ReLU6) v = std::min(std::max(v, 0.0), 6.0);
      y[size_t(i) * out + o] = v;
    }
  return y;
}

TEST_P(LinearTest, ForwardMatchesReference) {
  const auto [n, in, out] = GetParam();
  const auto x = random_vec(size_t(n) * in, rng_);
  const auto w = random_vec(size_t(out) * in, rng_);
  const auto b = random_vec(out, rng_);
  const auto sc = random_vec(out, rng_, 0.5f, 8.0f);
  const auto sh = random_vec(out, rng_);
  std::vector<Epilogue> epis(4);
  epis[1].bias = b.data();
  epis[2].bias = b.data();
  epis[2].act = Activation::ReLU;
  epis[3].scale = sc.data();
  epis[3].shift = sh.data();
  epis[3].act = Activation::ReLU6;
  for (size_t e = 0; e < epis.size(); ++e) {
    std::vector<float> y(size_t(n) * out, sentinel());
    linear_forward(kCpu, n, in, out, x.data(), w.data(), epis[e], y.data());
    EXPECT_TRUE(all_close(y, ref_linear(n, in, out, x, w, epis[e]), 1e-4, 1e-4)) << "epi " << e;
  }
}

TEST_P(LinearTest, BackwardMatchesReference) {
  const auto [n, in, out] = GetParam();
  const auto x = random_vec(size_t(n) * in, rng_);
  const auto w = random_vec(size_t(out) * in, rng_);
  const auto dy = random_vec(size_t(n) * out, rng_);
  std::vector<double> rdx(size_t(n) * in, 0.0), rdw(size_t(out) * in, 0.0), rdb(out, 0.0);
  for (int i = 0; i < n; ++i)
    for (int o = 0; o < out; ++o) {
      const double d = dy[size_t(i) * out + o];
      rdb[o] += d;
      for (int k = 0; k < in; ++k) {
        rdx[size_t(i) * in + k] += d * w[size_t(o) * in + k];
        rdw[size_t(o) * in + k] += d * x[size_t(i) * in + k];
      }
    }
  std::vector<float> dx(size_t(n) * in, sentinel()), dw(size_t(out) * in, sentinel()),
      db(out, sentinel());
  linear_backward_data(kCpu, n, in, out, dy.data(), w.data(), dx.data());
  linear_backward_weight(kCpu, n, in, out, x.data(), dy.data(), dw.data(), db.data(), nullptr, 0);
  EXPECT_TRUE(all_close(dx, rdx, 1e-4, 1e-4));
  EXPECT_TRUE(all_close(dw, rdw, 1e-4, 1e-4));
  EXPECT_TRUE(all_close(db, rdb, 1e-4, 1e-4));

  // A row subset (unsorted): only those rows of dw and db are written.
  std::vector<int32_t> rows = {out - 1};
  for (int r = 0; r + 1 < out; r += 2) rows.push_back(r);
  if (out > 1 && rows.size() == size_t(out)) rows.pop_back();
  std::vector<bool> listed(out, false);
  for (int32_t r : rows) listed[r] = true;
  std::vector<float> sdw(size_t(out) * in, sentinel()), sdb(out, sentinel());
  linear_backward_weight(kCpu, n, in, out, x.data(), dy.data(), sdw.data(), sdb.data(),
                         rows.data(), static_cast<int>(rows.size()));
  for (int r = 0; r < out; ++r) {
    for (int k = 0; k < in; ++k) {
      const size_t i = size_t(r) * in + k;
      if (listed[r])
        ASSERT_NEAR(sdw[i], rdw[i], 1e-4 + 1e-4 * std::fabs(rdw[i])) << "row " << r;
      else
        ASSERT_EQ(float_bits(sdw[i]), float_bits(sentinel())) << "row " << r << " touched";
    }
    if (listed[r])
      EXPECT_NEAR(sdb[r], rdb[r], 1e-4 + 1e-4 * std::fabs(rdb[r]));
    else
      EXPECT_EQ(float_bits(sdb[r]), float_bits(sentinel())) << "bias " << r << " touched";
  }
}

TEST_P(LinearTest, GradientsMatchFiniteDifferences) {
  // Plain variables, not a structured binding: the lambda below captures them, which clang-14
  // (the sanitizer build) does not allow for bindings.
  const int n = GetParam().n, in = GetParam().in, out = GetParam().out;
  auto x = random_vec(size_t(n) * in, rng_);
  auto w = random_vec(size_t(out) * in, rng_);
  auto b = random_vec(out, rng_);
  const auto r = random_vec(size_t(n) * out, rng_);
  std::vector<float> y(size_t(n) * out);
  auto loss = [&]() {
    Epilogue e;
    e.bias = b.data();
    linear_forward(kCpu, n, in, out, x.data(), w.data(), e, y.data());
    return dot(y, r);
  };
  std::vector<float> dx(size_t(n) * in), dw(size_t(out) * in), db(out);
  linear_backward_data(kCpu, n, in, out, r.data(), w.data(), dx.data());
  linear_backward_weight(kCpu, n, in, out, x.data(), r.data(), dw.data(), db.data(), nullptr, 0);
  for (size_t i : sample_indices(x.size(), 10, rng_)) {
    const double fd = central_difference(x, i, 0.5, loss);
    EXPECT_NEAR(dx[i], fd, 2e-3 * (1 + std::fabs(fd))) << "dx[" << i << "]";
  }
  for (size_t i : sample_indices(w.size(), 10, rng_)) {
    const double fd = central_difference(w, i, 0.5, loss);
    EXPECT_NEAR(dw[i], fd, 2e-3 * (1 + std::fabs(fd))) << "dw[" << i << "]";
  }
  for (size_t i : sample_indices(b.size(), 4, rng_)) {
    const double fd = central_difference(b, i, 0.5, loss);
    EXPECT_NEAR(db[i], fd, 2e-3 * (1 + std::fabs(fd))) << "db[" << i << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearCase{1, 7, 3}, LinearCase{5, 13, 11},
                                           LinearCase{33, 64, 10}, LinearCase{2, 1, 1},
                                           LinearCase{128, 96, 50}),
                         [](const ::testing::TestParamInfo<LinearCase>& info) {
                           // Built with += : GCC 12 warns (-Wrestrict, a false positive) on
                           // "literal" + std::to_string(...) chains here.
                           std::string name = "n";
                           name += std::to_string(info.param.n);
                           name += "_in";
                           name += std::to_string(info.param.in);
                           name += "_out";
                           name += std::to_string(info.param.out);
                           return name;
                         });

TEST(Linear, RowIndexOutOfRangeThrows) {
  std::vector<float> x(6, 1.0f), dy(6, 1.0f), dw(12);
  const int32_t rows[] = {3};
  EXPECT_THROW(linear_backward_weight(kCpu, 2, 3, 3, x.data(), dy.data(), dw.data(), nullptr,
                                      rows, 1),
               std::out_of_range);
}

}  // namespace
}  // namespace nns::ops::test
