// conv2d_forward / backward_data / backward_filter against naive double-precision loops and
// against central finite differences of the forward, over a sweep of shapes: odd sizes, stride
// 2, padding, 1x1 / 3x3 / 5x5 and non-square kernels, groups = 2, depthwise, batch 1, and
// batches large enough that several images share one GEMM block.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/cpu/conv_internal.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/ops.h"

namespace nns::ops::test {
namespace {

Conv2dShape conv_shape(int n, int c_in, int h, int w, int c_out, int kh, int kw, int sh, int sw,
                       int ph, int pw, int groups) {
  Conv2dShape s;
  s.n = n;
  s.c_in = c_in;
  s.h = h;
  s.w = w;
  s.c_out = c_out;
  s.kh = kh;
  s.kw = kw;
  s.stride_h = sh;
  s.stride_w = sw;
  s.pad_h = ph;
  s.pad_w = pw;
  s.groups = groups;
  return s;
}

std::string describe(const Conv2dShape& s) {
  std::string d;
  for (auto [tag, v] : {std::pair{"n", s.n}, {"_cin", s.c_in}, {"_", s.h}, {"x", s.w},
                        {"_cout", s.c_out}, {"_k", s.kh}, {"x", s.kw}, {"_s", s.stride_h},
                        {"x", s.stride_w}, {"_p", s.pad_h}, {"x", s.pad_w}, {"_g", s.groups}}) {
    d += tag;
    d += std::to_string(v);
  }
  return d;
}

// ---- naive references (double accumulation) ----

double ref_act(Activation a, double v) {
  if (a == Activation::ReLU) return std::max(v, 0.0);
  if (a == Activation::ReLU6) return std::min(std::max(v, 0.0), 6.0);
  return v;
}

std::vector<double> ref_forward(const Conv2dShape& s, const std::vector<float>& x,
                                const std::vector<float>& w, const Epilogue& e) {
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int cin_g = s.c_in / s.groups, cout_g = s.c_out / s.groups;
  std::vector<double> y(s.y_size());
  for (int n = 0; n < s.n; ++n)
    for (int co = 0; co < s.c_out; ++co) {
      const int g = co / cout_g;
      for (int oh = 0; oh < oh_n; ++oh)
        for (int ow = 0; ow < ow_n; ++ow) {
          double acc = 0.0;
          for (int ci = 0; ci < cin_g; ++ci)
            for (int kh = 0; kh < s.kh; ++kh)
              for (int kw = 0; kw < s.kw; ++kw) {
                const int ih = oh * s.stride_h - s.pad_h + kh;
                const int iw = ow * s.stride_w - s.pad_w + kw;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                acc += double(x[((size_t(n) * s.c_in + g * cin_g + ci) * s.h + ih) * s.w + iw]) *
                       double(w[((size_t(co) * cin_g + ci) * s.kh + kh) * s.kw + kw]);
              }
          const double b = e.bias ? e.bias[co] : 0.0;
          const double sc = e.scale ? e.scale[co] : 1.0;
          const double sh = e.shift ? e.shift[co] : 0.0;
          y[((size_t(n) * s.c_out + co) * oh_n + oh) * ow_n + ow] =
              ref_act(e.act, sc * (acc + b) + sh);
        }
    }
  return y;
}

std::vector<double> ref_backward_data(const Conv2dShape& s, const std::vector<float>& dy,
                                      const std::vector<float>& w) {
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int cin_g = s.c_in / s.groups, cout_g = s.c_out / s.groups;
  std::vector<double> dx(s.x_size(), 0.0);
  for (int n = 0; n < s.n; ++n)
    for (int co = 0; co < s.c_out; ++co) {
      const int g = co / cout_g;
      for (int oh = 0; oh < oh_n; ++oh)
        for (int ow = 0; ow < ow_n; ++ow) {
          const double d = dy[((size_t(n) * s.c_out + co) * oh_n + oh) * ow_n + ow];
          for (int ci = 0; ci < cin_g; ++ci)
            for (int kh = 0; kh < s.kh; ++kh)
              for (int kw = 0; kw < s.kw; ++kw) {
                const int ih = oh * s.stride_h - s.pad_h + kh;
                const int iw = ow * s.stride_w - s.pad_w + kw;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                dx[((size_t(n) * s.c_in + g * cin_g + ci) * s.h + ih) * s.w + iw] +=
                    d * w[((size_t(co) * cin_g + ci) * s.kh + kh) * s.kw + kw];
              }
        }
    }
  return dx;
}

void ref_backward_filter(const Conv2dShape& s, const std::vector<float>& x,
                         const std::vector<float>& dy, std::vector<double>& dw,
                         std::vector<double>& db) {
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int cin_g = s.c_in / s.groups, cout_g = s.c_out / s.groups;
  dw.assign(s.w_size(), 0.0);
  db.assign(s.c_out, 0.0);
  for (int n = 0; n < s.n; ++n)
    for (int co = 0; co < s.c_out; ++co) {
      const int g = co / cout_g;
      for (int oh = 0; oh < oh_n; ++oh)
        for (int ow = 0; ow < ow_n; ++ow) {
          const double d = dy[((size_t(n) * s.c_out + co) * oh_n + oh) * ow_n + ow];
          db[co] += d;
          for (int ci = 0; ci < cin_g; ++ci)
            for (int kh = 0; kh < s.kh; ++kh)
              for (int kw = 0; kw < s.kw; ++kw) {
                const int ih = oh * s.stride_h - s.pad_h + kh;
                const int iw = ow * s.stride_w - s.pad_w + kw;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                dw[((size_t(co) * cin_g + ci) * s.kh + kh) * s.kw + kw] +=
                    d * x[((size_t(n) * s.c_in + g * cin_g + ci) * s.h + ih) * s.w + iw];
              }
        }
    }
}

// ---- the shape sweep ----

struct ConvCase {
  std::string name;
  Conv2dShape s;
};

// Readable parameters in failure messages (instead of the bytes of the struct).
void PrintTo(const ConvCase& c, std::ostream* os) { *os << c.name << " " << describe(c.s); }

std::vector<ConvCase> conv_cases() {
  std::vector<ConvCase> c = {
      {"k3_pad1", conv_shape(2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 1)},
      {"k3_stride2_pad1_odd", conv_shape(3, 4, 9, 11, 6, 3, 3, 2, 2, 1, 1, 1)},
      {"pointwise", conv_shape(2, 5, 4, 3, 7, 1, 1, 1, 1, 0, 0, 1)},
      {"pointwise_stride2", conv_shape(2, 4, 7, 7, 8, 1, 1, 2, 2, 0, 0, 1)},
      {"k5_pad2_batch1", conv_shape(1, 3, 8, 9, 5, 5, 5, 1, 1, 2, 2, 1)},
      {"k3_batch1_pad1", conv_shape(1, 6, 10, 7, 4, 3, 3, 1, 1, 1, 1, 1)},
      {"groups2", conv_shape(2, 4, 6, 5, 6, 3, 3, 1, 1, 1, 1, 2)},
      {"groups2_stride2", conv_shape(3, 6, 9, 8, 4, 3, 3, 2, 2, 1, 1, 2)},
      {"depthwise", conv_shape(3, 6, 7, 9, 6, 3, 3, 1, 1, 1, 1, 6)},
      {"depthwise_stride2", conv_shape(2, 5, 8, 7, 5, 3, 3, 2, 2, 1, 1, 5)},
      {"depthwise_k5_batch1", conv_shape(1, 4, 9, 6, 4, 5, 5, 1, 1, 2, 2, 4)},
      {"depth_multiplier2", conv_shape(2, 3, 6, 6, 6, 3, 3, 1, 1, 1, 1, 3)},
      {"nonsquare_kernel", conv_shape(2, 3, 5, 9, 4, 1, 3, 1, 2, 0, 1, 1)},
      {"nonsquare_kernel_tall", conv_shape(2, 2, 9, 4, 3, 5, 3, 2, 1, 2, 0, 1)},
      {"kernel_covers_input", conv_shape(3, 3, 5, 5, 4, 5, 5, 1, 1, 0, 0, 1)},
      {"stride3_pad2", conv_shape(2, 2, 10, 11, 3, 3, 3, 3, 3, 2, 2, 1)},
      // Small maps and batch > threads: several images per GEMM block, a short last block.
      {"blocked_images", conv_shape(9, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1)},
      {"blocked_pointwise", conv_shape(8, 6, 2, 3, 5, 1, 1, 1, 1, 0, 0, 1)},
      {"blocked_groups2", conv_shape(11, 4, 3, 4, 6, 3, 3, 1, 1, 1, 1, 2)},
      {"blocked_depthwise", conv_shape(10, 3, 4, 4, 3, 3, 3, 1, 1, 1, 1, 3)},
      // Large enough (>= 2^18 multiply-adds) for the ops to use several threads: image
      // blocks with per-thread partial sums, a batch of 1 split inside the image, a partial
      // 16 + 8 (4 used) channel tiling in the direct kernel.
      {"parallel_blocked", conv_shape(8, 16, 6, 6, 24, 3, 3, 1, 1, 1, 1, 1)},
      {"parallel_groups2_stride2", conv_shape(6, 16, 11, 11, 20, 3, 3, 2, 2, 1, 1, 2)},
      {"parallel_batch1", conv_shape(1, 16, 20, 18, 24, 3, 3, 1, 1, 1, 1, 1)},
      {"parallel_depthwise", conv_shape(4, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 32)},
      {"parallel_pointwise", conv_shape(6, 32, 7, 7, 40, 1, 1, 1, 1, 0, 0, 1)},
      {"resnet_like", conv_shape(4, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1, 1)},
      {"resnet_like_down", conv_shape(4, 16, 12, 12, 32, 3, 3, 2, 2, 1, 1, 1)},
      // Wider than one AVX-512 tile: 32 + a partial 16 (41 = 32 + 9 channels), and groups of
      // 18 output channels (a 32-wide tile with 18 valid rows).
      {"wide_tiles_odd", conv_shape(3, 19, 9, 7, 41, 3, 3, 1, 1, 1, 1, 1)},
      {"wide_tiles_groups2", conv_shape(2, 34, 7, 9, 36, 3, 3, 1, 1, 1, 1, 2)},
  };
  // Random shapes from a fixed seed.
  std::mt19937 rng(20240611);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  for (int i = 0; i < 14; ++i) {
    const int kh = std::vector<int>{1, 3, 5}[pick(0, 2)];
    const int kw = pick(0, 3) == 0 ? std::vector<int>{1, 3, 5}[pick(0, 2)] : kh;
    const int mode = pick(0, 2);  // 0: dense, 1: groups 2, 2: depthwise
    int groups = 1, cin = pick(1, 5), cout = pick(1, 6);
    if (mode == 1) {
      groups = 2;
      cin = 2 * pick(1, 3);
      cout = 2 * pick(1, 3);
    } else if (mode == 2) {
      groups = cin = cout = pick(2, 6);
    }
    const int ph = pick(0, kh / 2), pw = pick(0, kw / 2);
    const int h = pick(std::max(1, kh - 2 * ph), 11), w = pick(std::max(1, kw - 2 * pw), 11);
    ConvCase c0{"random" + std::to_string(i),
                conv_shape(pick(1, 6), cin, h, w, cout, kh, kw, pick(1, 2), pick(1, 2), ph, pw,
                           groups)};
    c.push_back(c0);
  }
  return c;
}

// A CPU algorithm and, for the direct kernel, the instruction set of its micro-kernels.
struct ConvVariant {
  cpu::ConvAlgo algo;
  cpu::CpuIsa isa;
};
const ConvVariant kVariants[] = {{cpu::ConvAlgo::Im2colGemm, cpu::CpuIsa::Avx2},
                                 {cpu::ConvAlgo::Direct, cpu::CpuIsa::Avx2},
                                 {cpu::ConvAlgo::Direct, cpu::CpuIsa::Avx512}};

std::string variant_name(const ConvVariant& v) {
  if (v.algo == cpu::ConvAlgo::Im2colGemm) return "im2col";
  return std::string("direct_") + cpu::cpu_isa_name(v.isa);
}
void PrintTo(const ConvVariant& v, std::ostream* os) { *os << variant_name(v); }

// Selects a variant for the life of the object; false from active() (the caller skips) when it
// needs AVX-512 and this CPU or build has none.
class VariantScope {
 public:
  explicit VariantScope(const ConvVariant& v) {
    if (v.isa == cpu::CpuIsa::Avx512 && !cpu::cpu_avx512_usable()) return;
    cpu::set_conv_algo(v.algo);
    cpu::set_cpu_isa(v.isa);
    active_ = true;
  }
  ~VariantScope() {
    cpu::set_conv_algo(cpu::ConvAlgo::Auto);
    cpu::set_cpu_isa(cpu::CpuIsa::Auto);
  }
  bool active() const { return active_; }

 private:
  bool active_ = false;
};

// Each shape runs under every CPU variant: im2col + SGEMM, and the direct kernel (forward and
// stride-1 backward-data; where it is not compiled in, Direct falls back to im2col) with its
// AVX2 and AVX-512 micro-kernels (AVX-512 skipped, visibly, on CPUs without it).
class ConvTest : public ::testing::TestWithParam<std::tuple<ConvCase, ConvVariant>> {
 protected:
  ConvTest() : rng_(std::hash<std::string>()(std::get<0>(GetParam()).name) & 0xffffffffu) {}
  void SetUp() override {
    scope_ = std::make_unique<VariantScope>(std::get<1>(GetParam()));
    if (!scope_->active()) GTEST_SKIP() << "no AVX-512 on this CPU or build";
  }
  void TearDown() override { scope_.reset(); }
  const Conv2dShape& shape() const { return std::get<0>(GetParam()).s; }
  std::mt19937 rng_;
  std::unique_ptr<VariantScope> scope_;
};

TEST_P(ConvTest, ForwardMatchesReference) {
  const Conv2dShape s = shape();
  const auto x = random_vec(s.x_size(), rng_);
  const auto w = random_vec(s.w_size(), rng_);
  const auto bias = random_vec(s.c_out, rng_);
  const auto scale = random_vec(s.c_out, rng_, 0.5f, 8.0f);
  const auto shift = random_vec(s.c_out, rng_, -1.0f, 3.0f);
  // No epilogue, bias only (the conv bias), folded BatchNorm + ReLU, shift + ReLU6.
  std::vector<Epilogue> epis(4);
  epis[1].bias = bias.data();
  epis[2].scale = scale.data();
  epis[2].shift = shift.data();
  epis[2].act = Activation::ReLU;
  epis[3].bias = bias.data();
  epis[3].scale = scale.data();
  epis[3].shift = shift.data();
  epis[3].act = Activation::ReLU6;
  for (size_t e = 0; e < epis.size(); ++e) {
    std::vector<float> y(s.y_size(), sentinel());
    conv2d_forward(kCpu, s, x.data(), w.data(), epis[e], y.data());
    EXPECT_TRUE(all_close(y, ref_forward(s, x, w, epis[e]), 1e-4, 1e-4)) << "epilogue " << e;
  }
}

TEST_P(ConvTest, BackwardDataMatchesReference) {
  const Conv2dShape s = shape();
  const auto dy = random_vec(s.y_size(), rng_);
  const auto w = random_vec(s.w_size(), rng_);
  std::vector<float> dx(s.x_size(), sentinel());  // overwritten, not accumulated
  conv2d_backward_data(kCpu, s, dy.data(), w.data(), dx.data());
  EXPECT_TRUE(all_close(dx, ref_backward_data(s, dy, w), 1e-4, 1e-4));
}

TEST_P(ConvTest, BackwardFilterMatchesReference) {
  const Conv2dShape s = shape();
  const auto x = random_vec(s.x_size(), rng_);
  const auto dy = random_vec(s.y_size(), rng_);
  std::vector<double> rdw, rdb;
  ref_backward_filter(s, x, dy, rdw, rdb);
  std::vector<float> dw(s.w_size(), sentinel()), db(s.c_out, sentinel());
  conv2d_backward_filter(kCpu, s, x.data(), dy.data(), dw.data(), db.data(), nullptr, 0);
  EXPECT_TRUE(all_close(dw, rdw, 1e-4, 1e-4));
  EXPECT_TRUE(all_close(db, rdb, 1e-4, 1e-4));
  // db may be null.
  std::vector<float> dw2(s.w_size(), sentinel());
  conv2d_backward_filter(kCpu, s, x.data(), dy.data(), dw2.data(), nullptr, nullptr, 0);
  EXPECT_TRUE(all_close(dw2, rdw, 1e-4, 1e-4));
}

TEST_P(ConvTest, BackwardFilterSubsetWritesOnlyListedRows) {
  const Conv2dShape s = shape();
  const auto x = random_vec(s.x_size(), rng_);
  const auto dy = random_vec(s.y_size(), rng_);
  std::vector<double> rdw, rdb;
  ref_backward_filter(s, x, dy, rdw, rdb);
  // An unsorted subset: the last filter, the first, and every third one in between.
  std::vector<int32_t> filters = {s.c_out - 1};
  for (int f = 0; f < s.c_out - 1; f += 3) filters.push_back(f);
  if (s.c_out > 1 && filters.size() == size_t(s.c_out)) filters.pop_back();
  std::vector<bool> listed(s.c_out, false);
  for (int32_t f : filters) listed[f] = true;

  const int64_t row = s.w_size() / s.c_out;
  std::vector<float> dw(s.w_size(), sentinel()), db(s.c_out, sentinel());
  conv2d_backward_filter(kCpu, s, x.data(), dy.data(), dw.data(), db.data(), filters.data(),
                         static_cast<int>(filters.size()));
  for (int f = 0; f < s.c_out; ++f) {
    std::vector<float> got(dw.begin() + f * row, dw.begin() + (f + 1) * row);
    if (listed[f]) {
      std::vector<double> ref(rdw.begin() + f * row, rdw.begin() + (f + 1) * row);
      EXPECT_TRUE(all_close(got, ref, 1e-4, 1e-4)) << "filter " << f;
      EXPECT_NEAR(db[f], rdb[f], 1e-4 + 1e-4 * std::fabs(rdb[f])) << "filter " << f;
    } else {
      for (int64_t i = 0; i < row; ++i)
        ASSERT_EQ(float_bits(got[i]), float_bits(sentinel())) << "filter " << f << " touched";
      ASSERT_EQ(float_bits(db[f]), float_bits(sentinel())) << "bias " << f << " touched";
    }
  }
}

// loss = sum(conv(x, w) + b) * r): d loss/d x, d loss/d w and d loss/d b from the backward ops
// against central differences. The conv is linear in each argument, so a large step is exact up
// to float rounding of the forward.
TEST_P(ConvTest, GradientsMatchFiniteDifferences) {
  const Conv2dShape s = shape();
  auto x = random_vec(s.x_size(), rng_);
  auto w = random_vec(s.w_size(), rng_);
  auto b = random_vec(s.c_out, rng_);
  const auto r = random_vec(s.y_size(), rng_);
  std::vector<float> y(s.y_size());
  auto loss = [&]() {
    Epilogue e;
    e.bias = b.data();
    conv2d_forward(kCpu, s, x.data(), w.data(), e, y.data());
    return dot(y, r);
  };
  std::vector<float> dx(s.x_size()), dw(s.w_size()), db(s.c_out);
  conv2d_backward_data(kCpu, s, r.data(), w.data(), dx.data());
  conv2d_backward_filter(kCpu, s, x.data(), r.data(), dw.data(), db.data(), nullptr, 0);
  const double h = 0.5;
  for (size_t i : sample_indices(x.size(), 12, rng_)) {
    const double fd = central_difference(x, i, h, loss);
    EXPECT_NEAR(dx[i], fd, 2e-3 * (1.0 + std::fabs(fd))) << "dx[" << i << "]";
  }
  for (size_t i : sample_indices(w.size(), 12, rng_)) {
    const double fd = central_difference(w, i, h, loss);
    EXPECT_NEAR(dw[i], fd, 2e-3 * (1.0 + std::fabs(fd))) << "dw[" << i << "]";
  }
  for (size_t i : sample_indices(b.size(), 4, rng_)) {
    const double fd = central_difference(b, i, h, loss);
    EXPECT_NEAR(db[i], fd, 2e-3 * (1.0 + std::fabs(fd))) << "db[" << i << "]";
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvTest,
                         ::testing::Combine(::testing::ValuesIn(conv_cases()),
                                            ::testing::ValuesIn(kVariants)),
                         [](const ::testing::TestParamInfo<ConvTest::ParamType>& info) {
                           const ConvCase& c = std::get<0>(info.param);
                           std::string name = c.name;
                           name += "_";
                           name += describe(c.s);
                           name += "_";
                           name += variant_name(std::get<1>(info.param));
                           return name;
                         });

// The same results whatever the number of OpenMP threads: one thread (no block parallelism),
// and three (more threads than images for small batches: BLAS-threaded path).
TEST(Conv, ThreadCountDoesNotChangeResults) {
  const int saved = omp_get_max_threads();
  std::mt19937 rng(7);
  // Shapes above the size where the ops go parallel (conv_threads).
  for (const Conv2dShape& s : {conv_shape(5, 16, 8, 8, 24, 3, 3, 1, 1, 1, 1, 1),
                               conv_shape(4, 16, 13, 11, 32, 3, 3, 2, 2, 1, 1, 2),
                               conv_shape(4, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1, 32)}) {
    const auto x = random_vec(s.x_size(), rng);
    const auto w = random_vec(s.w_size(), rng);
    const auto dy = random_vec(s.y_size(), rng);
    std::vector<double> rdw, rdb;
    ref_backward_filter(s, x, dy, rdw, rdb);
    for (int threads : {1, 3}) {
      for (const ConvVariant& v : kVariants) {
        SCOPED_TRACE(variant_name(v));
        VariantScope scope(v);
        if (!scope.active()) continue;  // no AVX-512: the parameterized tests report the skip
        omp_set_num_threads(threads);
        std::vector<float> y(s.y_size()), dx(s.x_size()), dw(s.w_size()), db(s.c_out);
        conv2d_forward(kCpu, s, x.data(), w.data(), Epilogue{}, y.data());
        conv2d_backward_data(kCpu, s, dy.data(), w.data(), dx.data());
        conv2d_backward_filter(kCpu, s, x.data(), dy.data(), dw.data(), db.data(), nullptr, 0);
        EXPECT_TRUE(all_close(y, ref_forward(s, x, w, Epilogue{}), 1e-4, 1e-4))
            << describe(s) << " threads " << threads;
        EXPECT_TRUE(all_close(dx, ref_backward_data(s, dy, w), 1e-4, 1e-4))
            << describe(s) << " threads " << threads;
        EXPECT_TRUE(all_close(dw, rdw, 1e-4, 1e-4)) << describe(s) << " threads " << threads;
        EXPECT_TRUE(all_close(db, rdb, 1e-4, 1e-4)) << describe(s) << " threads " << threads;
      }
    }
  }
  omp_set_num_threads(saved);
}

// Calls reuse per-thread scratch: a small conv after a large one must not see stale columns.
TEST(Conv, ScratchReuseAcrossShapes) {
  std::mt19937 rng(11);
  const Conv2dShape big = conv_shape(4, 8, 16, 16, 8, 5, 5, 1, 1, 2, 2, 1);
  const Conv2dShape small = conv_shape(4, 2, 3, 3, 3, 3, 3, 1, 1, 1, 1, 1);
  for (const Conv2dShape& s : {big, small, big, small}) {
    const auto x = random_vec(s.x_size(), rng);
    const auto w = random_vec(s.w_size(), rng);
    std::vector<float> y(s.y_size());
    conv2d_forward(kCpu, s, x.data(), w.data(), Epilogue{}, y.data());
    EXPECT_TRUE(all_close(y, ref_forward(s, x, w, Epilogue{}), 1e-4, 1e-4)) << describe(s);
  }
}

TEST(Conv, FilterIndexOutOfRangeThrows) {
  const Conv2dShape s = conv_shape(1, 2, 4, 4, 3, 3, 3, 1, 1, 1, 1, 1);
  std::vector<float> x(s.x_size(), 1.0f), dy(s.y_size(), 1.0f), dw(s.w_size());
  const int32_t bad[] = {0, 3};
  EXPECT_THROW(conv2d_backward_filter(kCpu, s, x.data(), dy.data(), dw.data(), nullptr, bad, 2),
               std::out_of_range);
  const int32_t neg[] = {-1};
  EXPECT_THROW(conv2d_backward_filter(kCpu, s, x.data(), dy.data(), dw.data(), nullptr, neg, 1),
               std::out_of_range);
}

TEST(Conv, InvalidShapeThrows) {
  Conv2dShape s = conv_shape(1, 3, 4, 4, 4, 3, 3, 1, 1, 1, 1, 2);  // groups does not divide c_in
  std::vector<float> buf(1024);
  EXPECT_THROW(conv2d_forward(kCpu, s, buf.data(), buf.data(), Epilogue{}, buf.data()),
               std::invalid_argument);
  s = conv_shape(1, 2, 2, 2, 2, 5, 5, 1, 1, 0, 0, 1);  // kernel larger than the input
  EXPECT_THROW(conv2d_backward_data(kCpu, s, buf.data(), buf.data(), buf.data()),
               std::invalid_argument);
}

// A conv followed by an eval-mode BatchNorm and ReLU equals the conv with the folded BatchNorm
// as its epilogue.
TEST(Conv, FoldedBatchNormEpilogueMatchesSeparateOps) {
  std::mt19937 rng(3);
  const Conv2dShape s = conv_shape(3, 4, 7, 7, 5, 3, 3, 1, 1, 1, 1, 1);
  const auto x = random_vec(s.x_size(), rng);
  const auto w = random_vec(s.w_size(), rng);
  const auto gamma = random_vec(s.c_out, rng, 0.5f, 1.5f);
  const auto beta = random_vec(s.c_out, rng);
  const auto mean = random_vec(s.c_out, rng);
  const auto var = random_vec(s.c_out, rng, 0.2f, 2.0f);
  const int hw = s.out_h() * s.out_w();
  std::vector<float> y(s.y_size()), bn(s.y_size());
  conv2d_forward(kCpu, s, x.data(), w.data(), Epilogue{}, y.data());
  batchnorm_forward_eval(kCpu, s.n, s.c_out, hw, y.data(), gamma.data(), beta.data(),
                         mean.data(), var.data(), 1e-5f, bn.data());
  activation_forward(kCpu, Activation::ReLU, s.y_size(), bn.data(), bn.data());
  std::vector<float> scale(s.c_out), shift(s.c_out);
  batchnorm_fold(kCpu, s.c_out, gamma.data(), beta.data(), mean.data(), var.data(), 1e-5f,
                 scale.data(), shift.data());
  Epilogue e;
  e.scale = scale.data();
  e.shift = shift.data();
  e.act = Activation::ReLU;
  std::vector<float> fused(s.y_size());
  conv2d_forward(kCpu, s, x.data(), w.data(), e, fused.data());
  EXPECT_TRUE(all_close(fused, bn, 1e-5, 1e-5));
}

// set_cpu_isa overrides the detected instruction set and Auto restores it; AVX-512 cannot be
// forced where it is not usable.
TEST(CpuIsa, OverrideAndRestore) {
  cpu::set_cpu_isa(cpu::CpuIsa::Avx2);
  EXPECT_EQ(cpu::cpu_isa(), cpu::CpuIsa::Avx2);
  cpu::set_cpu_isa(cpu::CpuIsa::Auto);
  EXPECT_NE(cpu::cpu_isa(), cpu::CpuIsa::Auto);
  if (cpu::cpu_avx512_usable()) {
    cpu::set_cpu_isa(cpu::CpuIsa::Avx512);
    EXPECT_EQ(cpu::cpu_isa(), cpu::CpuIsa::Avx512);
  } else {
    EXPECT_THROW(cpu::set_cpu_isa(cpu::CpuIsa::Avx512), std::invalid_argument);
  }
  cpu::set_cpu_isa(cpu::CpuIsa::Auto);
}

}  // namespace
}  // namespace nns::ops::test
