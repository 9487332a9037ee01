// The ops of imported graphs (kernels/ops.h: clip, hardsigmoid, broadcast binary ops, strided
// copy) and ceil-mode / count_include_pad pooling, on the CPU against plain references.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>

#include "kernels/ops.h"
#include "tests/kernels/kernel_test_util.h"

namespace nns::ops::test {
namespace {

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& d) {
  int64_t n = 1;
  for (int64_t x : d) n *= x;
  return n;
}

TEST(GraphOps, ClipAndHardSigmoidForwardBackward) {
  std::mt19937 rng(1);
  auto x = random_vec(1000, rng, -8.0f, 8.0f);
  x[0] = 0.0f;  // at the bounds: zero gradient (PyTorch's hardtanh)
  x[1] = 6.0f;
  x[2] = -3.0f;
  auto dy = random_vec(1000, rng);
  std::vector<float> y(1000), dx(1000);
  clip_forward(kCpu, 1000, 0.0f, 6.0f, x.data(), y.data());
  clip_backward(kCpu, 1000, 0.0f, 6.0f, x.data(), dy.data(), dx.data());
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(y[i], std::min(std::max(x[i], 0.0f), 6.0f));
    EXPECT_EQ(dx[i], (x[i] > 0.0f && x[i] < 6.0f) ? dy[i] : 0.0f) << x[i];
  }
  const float a = 1.0f / 6.0f, b = 0.5f;
  hardsigmoid_forward(kCpu, 1000, a, b, x.data(), y.data());
  hardsigmoid_backward(kCpu, 1000, a, b, x.data(), dy.data(), dx.data());
  for (size_t i = 0; i < x.size(); ++i) {
    const double t = double(a) * x[i] + b;
    EXPECT_NEAR(y[i], std::min(std::max(t, 0.0), 1.0), 1e-6);
    EXPECT_NEAR(dx[i], (t > 0 && t < 1) ? dy[i] * a : 0.0, 1e-6) << x[i];
  }
  // NaN stays NaN.
  float nan = std::numeric_limits<float>::quiet_NaN(), out = 0;
  clip_forward(kCpu, 1, 0.0f, 6.0f, &nan, &out);
  EXPECT_TRUE(std::isnan(out));
}

// Reference broadcast over 4-d shapes (dims of a and b are 1 or out's).
struct Bc {
  Shape out, a, b;
};

int64_t offset(const Shape& d, const Shape& idx) {
  int64_t o = 0;
  for (size_t k = 0; k < d.size(); ++k) o = o * d[k] + (d[k] == 1 ? 0 : idx[k]);
  return o;
}

TEST(GraphOps, BroadcastForwardBackwardMatchReference) {
  const Bc cases[] = {
      {{2, 3, 4, 5}, {2, 3, 4, 5}, {2, 3, 1, 1}},  // squeeze-excitation gate
      {{2, 3, 4, 5}, {1, 3, 1, 1}, {2, 3, 4, 5}},  // per-channel scale, broadcast a
      {{2, 3, 4, 5}, {2, 3, 4, 5}, {2, 3, 4, 5}},  // same shapes
      {{2, 3, 4, 5}, {2, 1, 4, 1}, {1, 3, 1, 5}},  // both broadcast
      {{2, 3, 4, 5}, {1, 1, 1, 1}, {2, 3, 4, 5}},  // scalar
      {{1, 1, 1, 7}, {1, 1, 1, 7}, {1, 1, 1, 1}},
  };
  std::mt19937 rng(2);
  for (const Bc& c : cases) {
    for (Binary op : {Binary::Add, Binary::Mul}) {
      const int64_t n = shape_numel(c.out), na = shape_numel(c.a), nb = shape_numel(c.b);
      auto a = random_vec(size_t(na), rng), b = random_vec(size_t(nb), rng);
      auto dy = random_vec(size_t(n), rng);
      BroadcastShape s;
      s.rank = 4;
      for (int k = 0; k < 4; ++k) {
        s.out[k] = c.out[size_t(k)];
        s.a[k] = c.a[size_t(k)];
        s.b[k] = c.b[size_t(k)];
      }
      std::vector<float> y(static_cast<size_t>(n)), da(static_cast<size_t>(na)),
          db(static_cast<size_t>(nb));
      broadcast_forward(kCpu, op, s, a.data(), b.data(), y.data());
      broadcast_backward(kCpu, op, s, a.data(), b.data(), dy.data(), da.data(), db.data());
      std::vector<double> ry(static_cast<size_t>(n)), rda(static_cast<size_t>(na), 0.0),
          rdb(static_cast<size_t>(nb), 0.0);
      Shape idx(4);
      for (int64_t e = 0; e < n; ++e) {
        int64_t r = e;
        for (int k = 3; k >= 0; --k) {
          idx[size_t(k)] = r % c.out[size_t(k)];
          r /= c.out[size_t(k)];
        }
        const int64_t ia = offset(c.a, idx), ib = offset(c.b, idx);
        ry[size_t(e)] = op == Binary::Add ? double(a[size_t(ia)]) + b[size_t(ib)]
                                          : double(a[size_t(ia)]) * b[size_t(ib)];
        rda[size_t(ia)] += op == Binary::Add ? dy[size_t(e)] : double(dy[size_t(e)]) * b[size_t(ib)];
        rdb[size_t(ib)] += op == Binary::Add ? dy[size_t(e)] : double(dy[size_t(e)]) * a[size_t(ia)];
      }
      EXPECT_TRUE(all_close(y, ry, 1e-6, 1e-6));
      EXPECT_TRUE(all_close(da, rda, 1e-5, 1e-5));
      EXPECT_TRUE(all_close(db, rdb, 1e-5, 1e-5));
      // Null gradients are skipped.
      broadcast_backward(kCpu, op, s, a.data(), b.data(), dy.data(), nullptr, db.data());
      EXPECT_TRUE(all_close(db, rdb, 1e-5, 1e-5));
    }
  }
  BroadcastShape bad;
  bad.rank = 1;
  bad.out[0] = 4;
  bad.a[0] = 3;
  bad.b[0] = 4;
  float buf[4] = {};
  EXPECT_THROW(broadcast_forward(kCpu, Binary::Add, bad, buf, buf, buf), std::invalid_argument);
}

TEST(GraphOps, StridedCopyTransposesSlicesAndPads) {
  // A transpose [2, 3, 4] -> [4, 2, 3] (perm 2, 0, 1).
  std::vector<float> x(24), y(24, -1.0f);
  for (int i = 0; i < 24; ++i) x[size_t(i)] = float(i);
  StridedCopy t;
  t.rank = 3;
  const int64_t n[3] = {4, 2, 3}, src[3] = {1, 12, 4}, dst[3] = {6, 3, 1};
  for (int k = 0; k < 3; ++k) {
    t.n[k] = n[k];
    t.src_stride[k] = src[k];
    t.dst_stride[k] = dst[k];
  }
  copy_strided(kCpu, t, x.data(), y.data());
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 2; ++j)
      for (int k = 0; k < 3; ++k) EXPECT_EQ(y[size_t(i * 6 + j * 3 + k)], x[size_t(j * 12 + k * 4 + i)]);
  // Every other element of a row (a slice with step 2), into a padded buffer: untouched
  // elements stay.
  std::vector<float> p(10, 7.0f);
  StridedCopy s;
  s.rank = 1;
  s.n[0] = 3;
  s.src_stride[0] = 2;
  s.dst_stride[0] = 3;
  copy_strided(kCpu, s, x.data() + 1, p.data() + 1);
  EXPECT_EQ(p, (std::vector<float>{7, 1, 7, 7, 3, 7, 7, 5, 7, 7}));
  // Large enough for the parallel path, contiguous rows merged.
  std::vector<float> big(1 << 17), out(1 << 17);
  for (size_t i = 0; i < big.size(); ++i) big[i] = float(i % 1000);
  StridedCopy c;
  c.rank = 2;
  c.n[0] = 256;
  c.n[1] = 512;
  c.src_stride[0] = 512;
  c.src_stride[1] = 1;
  c.dst_stride[0] = 512;
  c.dst_stride[1] = 1;
  copy_strided(kCpu, c, big.data(), out.data());
  EXPECT_EQ(big, out);
}

Pool2dShape pool(int h, int k, int s, int p, bool ceil, bool include_pad) {
  Pool2dShape ps;
  ps.n = 2;
  ps.c = 3;
  ps.h = ps.w = h;
  ps.kh = ps.kw = k;
  ps.stride_h = ps.stride_w = s;
  ps.pad_h = ps.pad_w = p;
  ps.ceil_mode = ceil;
  ps.count_include_pad = include_pad;
  return ps;
}

TEST(GraphOps, CeilModePoolingFollowsPyTorch) {
  // Output sizes (PyTorch's rule, checked against torch.nn.functional.max_pool2d).
  EXPECT_EQ(pool(28, 3, 2, 1, true, true).out_h(), 15);
  EXPECT_EQ(pool(28, 3, 2, 1, false, true).out_h(), 14);
  EXPECT_EQ(pool(7, 2, 2, 0, true, true).out_h(), 4);
  EXPECT_EQ(pool(6, 3, 2, 0, true, true).out_h(), 3);  // squeezenet's 13 -> 6 -> 3 pattern
  EXPECT_EQ(pool(13, 3, 2, 0, true, true).out_h(), 6);
  EXPECT_EQ(pool(5, 2, 2, 1, true, true).out_h(), 3);  // the last window would start in padding
  std::mt19937 rng(3);
  for (const Pool2dShape& s : {pool(7, 2, 2, 0, true, true), pool(7, 3, 2, 1, true, true),
                               pool(7, 3, 2, 1, true, false), pool(6, 3, 1, 1, false, false),
                               pool(9, 3, 2, 1, true, false)}) {
    const int oh = s.out_h();
    const size_t in = size_t(s.n) * s.c * s.h * s.w, out = size_t(s.n) * s.c * oh * oh;
    auto x = random_vec(in, rng);
    auto dy = random_vec(out, rng);
    std::vector<float> y(out), dx(in);
    std::vector<float> my(out);
    std::vector<int32_t> am(out);
    avgpool2d_forward(kCpu, s, x.data(), y.data());
    avgpool2d_backward(kCpu, s, dy.data(), dx.data());
    maxpool2d_forward(kCpu, s, x.data(), my.data(), am.data());
    std::vector<double> ry(out), rdx(in, 0.0), rmy(out);
    for (int p = 0; p < s.n * s.c; ++p)
      for (int i = 0; i < oh; ++i)
        for (int j = 0; j < oh; ++j) {
          const int h0 = i * s.stride_h - s.pad_h, w0 = j * s.stride_w - s.pad_w;
          const int h1 = std::min(h0 + s.kh, s.h + s.pad_h), w1 = std::min(w0 + s.kw, s.w + s.pad_w);
          const int span = (h1 - h0) * (w1 - w0);
          const int hs = std::max(h0, 0), ws = std::max(w0, 0), he = std::min(h1, s.h), we = std::min(w1, s.w);
          const int div = s.count_include_pad ? span : (he - hs) * (we - ws);
          double acc = 0, best = -1e30;
          for (int a = hs; a < he; ++a)
            for (int b = ws; b < we; ++b) {
              acc += x[size_t(p * s.h * s.w + a * s.w + b)];
              best = std::max(best, double(x[size_t(p * s.h * s.w + a * s.w + b)]));
            }
          const size_t o = size_t(p * oh * oh + i * oh + j);
          ry[o] = acc / div;
          rmy[o] = best;
          for (int a = hs; a < he; ++a)
            for (int b = ws; b < we; ++b) rdx[size_t(p * s.h * s.w + a * s.w + b)] += dy[o] / div;
        }
    EXPECT_TRUE(all_close(y, ry, 1e-6, 1e-5));
    EXPECT_TRUE(all_close(dx, rdx, 1e-6, 1e-5));
    EXPECT_TRUE(all_close(my, rmy, 0, 0));
  }
}

}  // namespace
}  // namespace nns::ops::test
