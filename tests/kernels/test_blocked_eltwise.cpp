// The blocked-layout BatchNorm, element-wise and pooling ops (kernels/cpu/blocked/eltwise.h)
// against the NCHW ops of kernels/ops.h (themselves tested against naive loops and PyTorch):
// every op on odd channel counts (not a multiple of the lanes), 1x1 maps, 8 and 16 lanes and
// NHWC (lanes = channels), padding lanes checked to stay zero.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/common/activation.h"
#include "kernels/cpu/blocked/eltwise.h"
#include "kernels/ops.h"

namespace nns::ops::cpu::blocked {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f, float shift = 0.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(g) * scale + shift;
  return v;
}

std::vector<float> blocked(const Dims& d, const std::vector<float>& nchw) {
  std::vector<float> b(size_t(d.size()), -99.0f);
  to_blocked(d, nchw.data(), b.data());
  return b;
}
std::vector<float> plain(const Dims& d, const std::vector<float>& blk) {
  std::vector<float> p(size_t(d.n) * d.c * d.hw, -99.0f);
  from_blocked(d, blk.data(), p.data());
  return p;
}

void expect_near_all(const std::vector<float>& a, const std::vector<float>& b, double tol,
                     const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = 0;
  for (float v : b) scale = std::max(scale, double(std::fabs(v)));
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(a[i], b[i], tol * (1 + scale)) << what << " at " << i;
}

void expect_zero_padding(const Dims& d, const std::vector<float>& blk, const std::string& what) {
  const int used = d.c - (d.cb() - 1) * d.lanes;
  for (int n = 0; n < d.n; ++n)
    for (int p = 0; p < d.hw; ++p)
      for (int l = used; l < d.lanes; ++l)
        ASSERT_EQ(blk[size_t((((int64_t(n) * d.cb() + d.cb() - 1) * d.hw + p) * d.lanes) + l)],
                  0.0f)
            << what << " padding lane " << l;
}

struct Shape3 {
  int n, c, hw, lanes;
};
// Odd channel counts, 1x1 maps, both block widths and NHWC (lanes = c).
const Shape3 kShapes[] = {{3, 5, 7, 8},   {2, 17, 9, 16}, {4, 32, 49, 8}, {2, 33, 1, 16},
                          {3, 16, 25, 16}, {2, 6, 16, 6},  {5, 3, 4, 3}, {16, 32, 196, 16}, {16, 32, 196, 8}};

class BlockedEltwise : public ::testing::TestWithParam<int> {};

TEST_P(BlockedEltwise, ReorderRoundTrip) {
  const Shape3 s = kShapes[GetParam()];
  const Dims d{s.n, s.c, s.hw, s.lanes};
  auto x = randn(size_t(s.n) * s.c * s.hw, 1);
  auto b = blocked(d, x);
  expect_zero_padding(d, b, "to_blocked");
  EXPECT_EQ(plain(d, b), x);
  // Element (n, c, p) lands where the layout says.
  const int n = s.n - 1, c = s.c - 1, p = s.hw - 1;
  EXPECT_EQ(b[size_t(((int64_t(n) * d.cb() + c / s.lanes) * s.hw + p) * s.lanes + c % s.lanes)],
            x[size_t((int64_t(n) * s.c + c) * s.hw + p)]);
}

TEST_P(BlockedEltwise, BatchNormTrainingForwardAndBackwardMatchNchw) {
  const Shape3 s = kShapes[GetParam()];
  if (int64_t(s.n) * s.hw < 2) GTEST_SKIP() << "one value per channel";
  const Dims d{s.n, s.c, s.hw, s.lanes};
  const size_t count = size_t(s.n) * s.c * s.hw;
  auto x = randn(count, 2, 1.5f, 0.3f), res = randn(count, 3), dy = randn(count, 4);
  auto gamma = randn(size_t(s.c), 5, 0.3f, 1.0f), beta = randn(size_t(s.c), 6, 0.2f);
  std::vector<double> partial(size_t(partial_doubles(d, 8)));
  for (Activation act : {Activation::None, Activation::ReLU, Activation::ReLU6}) {
    for (bool with_res : {false, true}) {
      // Reference: NCHW BN, then add, then act; backward through act, BN.
      std::vector<float> rm(size_t(s.c), 0.1f), rv(size_t(s.c), 1.0f), y_ref(count), sm(size_t(s.c)),
          si(size_t(s.c));
      batchnorm_forward_train(Context{}, s.n, s.c, s.hw, x.data(), gamma.data(), beta.data(),
                              rm.data(), rv.data(), 0.1f, 1e-5f, y_ref.data(), sm.data(), si.data());
      for (size_t i = 0; i < count; ++i)
        y_ref[i] = common::act_forward(act, y_ref[i] + (with_res ? res[i] : 0.0f));
      std::vector<float> g(count), dx_ref(count), dg_ref(size_t(s.c)), db_ref(size_t(s.c));
      for (size_t i = 0; i < count; ++i) g[i] = common::act_backward(act, y_ref[i], dy[i]);
      batchnorm_backward(Context{}, s.n, s.c, s.hw, x.data(), g.data(), gamma.data(), sm.data(),
                         si.data(), dx_ref.data(), dg_ref.data(), db_ref.data());

      std::vector<float> rm2(size_t(s.c), 0.1f), rv2(size_t(s.c), 1.0f), sm2(size_t(s.c)),
          si2(size_t(s.c));
      auto xb = blocked(d, x), rb = blocked(d, res), dyb = blocked(d, dy);
      std::vector<float> yb(size_t(d.size()), -7.0f);
      bn_train_forward(d, xb.data(), gamma.data(), beta.data(), with_res ? rb.data() : nullptr,
                       act, 0.1f, 1e-5f, rm2.data(), rv2.data(), sm2.data(), si2.data(),
                       yb.data(), partial.data());
      const std::string tag = "c=" + std::to_string(s.c) + " L=" + std::to_string(s.lanes) +
                              " act " + std::to_string(int(act)) + " res " + std::to_string(with_res);
      expect_zero_padding(d, yb, tag);
      expect_near_all(plain(d, yb), y_ref, 1e-5, tag + " y");
      expect_near_all(rm2, rm, 1e-6, tag + " running_mean");
      expect_near_all(rv2, rv, 1e-6, tag + " running_var");
      std::vector<float> dxb(size_t(d.size()), -7.0f), drb(size_t(d.size()), 1.0f),
          dg(size_t(s.c)), db(size_t(s.c));
      bn_train_backward(d, xb.data(), yb.data(), dyb.data(), act, gamma.data(), sm2.data(),
                        si2.data(), dxb.data(), with_res ? drb.data() : nullptr, true, dg.data(),
                        db.data(), partial.data());
      expect_zero_padding(d, dxb, tag + " dx");
      expect_near_all(plain(d, dxb), dx_ref, 1e-4, tag + " dx");
      expect_near_all(dg, dg_ref, 1e-4, tag + " dgamma");
      expect_near_all(db, db_ref, 1e-4, tag + " dbeta");
      if (with_res) {
        // add_to_dresidual: 1 + g.
        auto dr = plain(d, drb);
        for (size_t i = 0; i < count; ++i) ASSERT_NEAR(dr[i], 1.0f + g[i], 1e-5) << tag;
      }
    }
  }
}

TEST_P(BlockedEltwise, AffineForwardAndBackwardMatchEvalBatchNorm) {
  const Shape3 s = kShapes[GetParam()];
  const Dims d{s.n, s.c, s.hw, s.lanes};
  const size_t count = size_t(s.n) * s.c * s.hw;
  auto x = randn(count, 7), dy = randn(count, 8), res = randn(count, 9);
  auto gamma = randn(size_t(s.c), 10, 0.3f, 1.0f), beta = randn(size_t(s.c), 11, 0.2f);
  auto mean = randn(size_t(s.c), 12, 0.2f), var = randn(size_t(s.c), 13, 0.1f, 1.0f);
  std::vector<float> scale(size_t(s.c)), shift(size_t(s.c)), invstd(size_t(s.c));
  batchnorm_fold(Context{}, s.c, gamma.data(), beta.data(), mean.data(), var.data(), 1e-5f,
                 scale.data(), shift.data());
  for (int c = 0; c < s.c; ++c) invstd[size_t(c)] = 1.0f / std::sqrt(var[size_t(c)] + 1e-5f);
  std::vector<double> partial(size_t(partial_doubles(d, 8)));
  const Activation act = Activation::ReLU6;
  std::vector<float> y_ref(count);
  batchnorm_forward_eval(Context{}, s.n, s.c, s.hw, x.data(), gamma.data(), beta.data(),
                         mean.data(), var.data(), 1e-5f, y_ref.data());
  for (size_t i = 0; i < count; ++i) y_ref[i] = common::act_forward(act, y_ref[i] + res[i]);
  std::vector<float> g(count), dx_ref(count), dg_ref(size_t(s.c)), db_ref(size_t(s.c));
  for (size_t i = 0; i < count; ++i) g[i] = common::act_backward(act, y_ref[i], dy[i]);
  batchnorm_backward_eval(Context{}, s.n, s.c, s.hw, x.data(), g.data(), gamma.data(),
                          mean.data(), var.data(), 1e-5f, dx_ref.data(), dg_ref.data(),
                          db_ref.data());
  auto xb = blocked(d, x), rb = blocked(d, res), dyb = blocked(d, dy);
  std::vector<float> yb(size_t(d.size()));
  affine_forward(d, xb.data(), scale.data(), shift.data(), rb.data(), act, yb.data(),
                 partial.data());
  expect_zero_padding(d, yb, "affine y");
  expect_near_all(plain(d, yb), y_ref, 1e-5, "affine y");
  std::vector<float> dxb(size_t(d.size())), drb(size_t(d.size())), dg(size_t(s.c)), db(size_t(s.c));
  affine_backward(d, xb.data(), yb.data(), dyb.data(), act, scale.data(), mean.data(),
                  invstd.data(), dxb.data(), drb.data(), false, dg.data(), db.data(),
                  partial.data());
  expect_near_all(plain(d, dxb), dx_ref, 1e-5, "affine dx");
  expect_near_all(plain(d, drb), g, 1e-6, "affine dresidual");
  expect_near_all(dg, dg_ref, 1e-4, "affine dgamma");
  expect_near_all(db, db_ref, 1e-4, "affine dbeta");
}

TEST_P(BlockedEltwise, PoolingMatchesNchw) {
  const Shape3 s = kShapes[GetParam()];
  const int side = int(std::lround(std::sqrt(double(s.hw))));
  if (side * side != s.hw || side < 3) GTEST_SKIP() << "not a square map of side >= 3";
  const Dims d{s.n, s.c, s.hw, s.lanes};
  const size_t count = size_t(s.n) * s.c * s.hw;
  auto x = randn(count, 14);
  for (int k : {2, 3})
    for (int stride : {1, 2}) {
      for (int pad = 0; pad <= k / 2; ++pad) {
        Pool2dShape ps;
        ps.n = s.n, ps.c = s.c, ps.h = ps.w = side, ps.kh = ps.kw = k;
        ps.stride_h = ps.stride_w = stride, ps.pad_h = ps.pad_w = pad;
        const int oh = ps.out_h();
        if (oh < 1) continue;
        const size_t ocount = size_t(s.n) * s.c * oh * oh;
        Pool p{side, side, k, k, stride, stride, pad, pad, oh, oh};
        const Dims od{s.n, s.c, oh * oh, s.lanes};
        std::vector<float> y_ref(ocount), dy = randn(ocount, 15), dx_ref(count);
        std::vector<int32_t> am_ref(ocount);
        maxpool2d_forward(Context{}, ps, x.data(), y_ref.data(), am_ref.data());
        maxpool2d_backward(Context{}, ps, dy.data(), am_ref.data(), dx_ref.data());
        auto xb = blocked(d, x), dyb = blocked(od, dy);
        std::vector<float> yb(size_t(od.size())), dxb(size_t(d.size()));
        std::vector<int32_t> am(size_t(od.size()));
        maxpool_forward(d, p, xb.data(), yb.data(), am.data());
        maxpool_backward(d, p, dyb.data(), am.data(), dxb.data(), false);
        const std::string tag = "k" + std::to_string(k) + " s" + std::to_string(stride) + " p" +
                                std::to_string(pad) + " L" + std::to_string(s.lanes);
        EXPECT_EQ(plain(od, yb), y_ref) << tag;
        expect_near_all(plain(d, dxb), dx_ref, 1e-6, tag + " max dx");
        avgpool2d_forward(Context{}, ps, x.data(), y_ref.data());
        avgpool2d_backward(Context{}, ps, dy.data(), dx_ref.data());
        avgpool_forward(d, p, xb.data(), yb.data());
        avgpool_backward(d, p, dyb.data(), dxb.data(), false);
        expect_near_all(plain(od, yb), y_ref, 1e-6, tag + " avg y");
        expect_near_all(plain(d, dxb), dx_ref, 1e-6, tag + " avg dx");
      }
    }
}

TEST_P(BlockedEltwise, GlobalPoolAndElementwise) {
  const Shape3 s = kShapes[GetParam()];
  const Dims d{s.n, s.c, s.hw, s.lanes};
  const size_t count = size_t(s.n) * s.c * s.hw;
  auto x = randn(count, 16), dyp = randn(size_t(s.n) * s.c, 17);
  std::vector<float> y_ref(size_t(s.n) * s.c), dx_ref(count);
  global_avgpool_forward(Context{}, s.n, s.c, s.hw, x.data(), y_ref.data());
  global_avgpool_backward(Context{}, s.n, s.c, s.hw, dyp.data(), dx_ref.data());
  auto xb = blocked(d, x);
  std::vector<float> y(size_t(s.n) * s.c), dxb(size_t(d.size()), 5.0f);
  global_avgpool_forward(d, xb.data(), y.data());
  global_avgpool_backward(d, dyp.data(), dxb.data(), false);
  expect_near_all(y, y_ref, 1e-6, "gap y");
  expect_zero_padding(d, dxb, "gap dx");
  expect_near_all(plain(d, dxb), dx_ref, 1e-6, "gap dx");
  global_avgpool_backward(d, dyp.data(), dxb.data(), true);  // accumulates
  auto twice = plain(d, dxb);
  for (size_t i = 0; i < count; ++i) ASSERT_NEAR(twice[i], 2 * dx_ref[i], 1e-6);

  auto a = randn(count, 18), b = randn(count, 19);
  std::vector<float> y2(count), dx(count, 1.0f);
  add_act(int64_t(count), a.data(), b.data(), Activation::ReLU, y2.data());
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(y2[i], common::act_forward(Activation::ReLU, a[i] + b[i]));
  act_backward(int64_t(count), Activation::ReLU, y2.data(), a.data(), dx.data(), true);
  for (size_t i = 0; i < count; ++i) ASSERT_EQ(dx[i], 1.0f + (y2[i] > 0 ? a[i] : 0.0f));
}

INSTANTIATE_TEST_SUITE_P(Shapes, BlockedEltwise, ::testing::Range(0, 9));

}  // namespace
}  // namespace nns::ops::cpu::blocked
