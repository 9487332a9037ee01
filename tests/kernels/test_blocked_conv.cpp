// The blocked-layout convolutions (kernels/cpu/blocked/conv_blocked.h) against naive
// double-precision loops on NCHW, on both instruction sets in one process (AVX2: 8 lanes,
// AVX-512: 16 lanes, skipped visibly where the CPU lacks it). Shapes: channels that are not a
// multiple of the lanes (3, 5, 17, 33), 1x1 maps and 1x1 kernels, stride 2 and 3, asymmetric
// padding, 5x5 and non-square kernels, depthwise, batch 1, 3 and 5 (whole images per thread
// and images split over threads), small maps (rows of <= 4 pixels: tiles over several images,
// kernel columns split) with batches of 9-11 (several image groups). Every pass: forward with bias + residual + ReLU/ReLU6 and a
// folded scale, backward data, backward weights for all filters and for filter lists (few and
// many), and the re-pack of a filter subset. Pad lanes are checked to be zero, and the scratch
// is surrounded by guard values that must survive.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/cpu/blocked/conv_blocked.h"
#include "kernels/cpu/cpu_isa.h"

namespace nns::ops::test {
namespace {

namespace blk = cpu::blocked;

struct BlockedCase {
  const char* name;
  blk::ConvDesc d;  // lanes filled in by the test
};

blk::ConvDesc desc(int n, int c_in, int h, int w, int c_out, int kh, int kw, int sh, int sw,
                   int pt, int pl, int pb, int pr, int groups = 1) {
  return {n, c_in, h, w, c_out, kh, kw, sh, sw, pt, pl, pb, pr, groups, 0};
}

const BlockedCase kCases[] = {
    {"c5_to_17_3x3_pad1_n3", desc(3, 5, 9, 7, 17, 3, 3, 1, 1, 1, 1, 1, 1)},
    {"c17_to_33_3x3_s2_asym_n1", desc(1, 17, 8, 9, 33, 3, 3, 2, 2, 1, 0, 2, 1)},
    {"c3_to_16_5x5_pad2_n3", desc(3, 3, 11, 11, 16, 5, 5, 1, 1, 2, 2, 2, 2)},
    {"c33_to_5_1x1_map1_n2", desc(2, 33, 1, 1, 5, 1, 1, 1, 1, 0, 0, 0, 0)},
    {"c16_to_32_1x1_s2_n3", desc(3, 16, 7, 7, 32, 1, 1, 2, 2, 0, 0, 0, 0)},
    {"c6_to_16_5x5_nopad_n5", desc(5, 6, 10, 10, 16, 5, 5, 1, 1, 0, 0, 0, 0)},
    {"c1_to_6_5x5_pad2_n3", desc(3, 1, 12, 12, 6, 5, 5, 1, 1, 2, 2, 2, 2)},
    {"c32_to_48_3x3_pad1_n5", desc(5, 32, 14, 14, 48, 3, 3, 1, 1, 1, 1, 1, 1)},
    {"c20_to_24_3x2_s21_asym_n2", desc(2, 20, 6, 5, 24, 3, 2, 2, 1, 0, 1, 1, 0)},
    {"c4_to_8_3x3_s3_n1", desc(1, 4, 10, 10, 8, 3, 3, 3, 3, 1, 1, 1, 1)},
    {"c64_to_64_3x3_pad1_n2", desc(2, 64, 6, 6, 64, 3, 3, 1, 1, 1, 1, 1, 1)},
    {"c9_to_7_3x3_map1_pad1_n2", desc(2, 9, 1, 1, 7, 3, 3, 1, 1, 1, 1, 1, 1)},
    {"c8_to_16_3x3_wide40_n1", desc(1, 8, 3, 40, 16, 3, 3, 1, 1, 1, 1, 1, 1)},
    {"c16_to_16_3x3_s2_pad1_n3", desc(3, 16, 9, 9, 16, 3, 3, 2, 2, 1, 1, 1, 1)},
    {"c5_to_5_3x3_bigpad_n1", desc(1, 5, 4, 4, 5, 3, 3, 1, 1, 3, 2, 3, 2)},
    {"c40_to_24_3x3_map2_n11", desc(11, 40, 2, 2, 24, 3, 3, 1, 1, 1, 1, 1, 1)},
    {"c24_to_36_3x3_s2_map4_n9", desc(9, 24, 4, 4, 36, 3, 3, 2, 2, 1, 1, 1, 1)},
    {"c18_to_40_1x1_s2_map8_n10", desc(10, 18, 8, 7, 40, 1, 1, 2, 2, 0, 0, 0, 0)},
    {"c12_to_20_3x3_s2_asym_small_n9", desc(9, 12, 5, 6, 20, 3, 3, 2, 2, 0, 1, 2, 0)},
    {"c3_to_8_7x7_s2_pad3_n2", desc(2, 3, 13, 12, 8, 7, 7, 2, 2, 3, 3, 3, 3)},
    {"c20_to_8_3x3_slide_asym_n3", desc(3, 20, 6, 17, 8, 3, 3, 1, 1, 1, 2, 0, 1)},
    {"c12_to_5_5x5_slide_n2", desc(2, 12, 5, 24, 5, 5, 5, 1, 1, 2, 2, 2, 2)},
    {"dw17_3x3_pad1_n2", desc(2, 17, 9, 9, 17, 3, 3, 1, 1, 1, 1, 1, 1, 17)},
    {"dw40_3x3_s2_pad1_n3", desc(3, 40, 9, 8, 40, 3, 3, 2, 2, 1, 1, 1, 1, 40)},
    {"dw24_5x5_asym_n1", desc(1, 24, 7, 6, 24, 5, 5, 1, 1, 2, 1, 0, 2, 24)},
};

int out_h(const blk::ConvDesc& d) { return blk::conv_out_h(d); }
int out_w(const blk::ConvDesc& d) { return blk::conv_out_w(d); }
int cin_g(const blk::ConvDesc& d) { return d.c_in / d.groups; }
size_t x_size(const blk::ConvDesc& d) { return size_t(d.n) * d.c_in * d.h * d.w; }
size_t y_size(const blk::ConvDesc& d) { return size_t(d.n) * d.c_out * out_h(d) * out_w(d); }
size_t w_size(const blk::ConvDesc& d) { return size_t(d.c_out) * cin_g(d) * d.kh * d.kw; }

// ---- naive references on NCHW (double accumulation) ----

// Calls f(x index, y index, w index) for every multiply-add of the convolution (NCHW, OIHW).
template <class F>
void for_each_mac(const blk::ConvDesc& d, F&& f) {
  const int oh_n = out_h(d), ow_n = out_w(d), cg = cin_g(d), og = d.c_out / d.groups;
  for (int n = 0; n < d.n; ++n)
    for (int co = 0; co < d.c_out; ++co)
      for (int oh = 0; oh < oh_n; ++oh)
        for (int ow = 0; ow < ow_n; ++ow)
          for (int ci = 0; ci < cg; ++ci)
            for (int kh = 0; kh < d.kh; ++kh)
              for (int kw = 0; kw < d.kw; ++kw) {
                const int ih = oh * d.stride_h - d.pad_t + kh, iw = ow * d.stride_w - d.pad_l + kw;
                if (ih < 0 || ih >= d.h || iw < 0 || iw >= d.w) continue;
                const int cx = (co / og) * cg + ci;
                f(((size_t(n) * d.c_in + cx) * d.h + ih) * d.w + iw,
                  ((size_t(n) * d.c_out + co) * oh_n + oh) * ow_n + ow,
                  ((size_t(co) * cg + ci) * d.kh + kh) * d.kw + kw);
              }
}

double ref_act(Activation a, double v) {
  if (a == Activation::ReLU) return std::max(v, 0.0);
  if (a == Activation::ReLU6) return std::min(std::max(v, 0.0), 6.0);
  return v;
}

// Tolerance: |got - ref| <= atol + rtol*|ref|, atol growing with the reduction length.
double atol_for(size_t reduction) { return 1e-5 + 2e-6 * double(reduction); }
constexpr double kRtol = 1e-4;

// The scratch a pass asks for, between guard values that must survive the call.
struct GuardedScratch {
  static constexpr size_t kGuard = 64;
  std::vector<float> buf;
  explicit GuardedScratch(size_t n) : buf(n + 2 * kGuard, sentinel()) {}
  float* data() { return buf.data() + kGuard; }
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; ++i)
      if (float_bits(buf[i]) != float_bits(sentinel()) ||
          float_bits(buf[buf.size() - 1 - i]) != float_bits(sentinel()))
        return false;
    return true;
  }
};

// Blocked tensor pad lanes (channels >= c of the last block) are all zero.
::testing::AssertionResult pad_lanes_zero(const std::vector<float>& t, int n, int c, int h, int w,
                                          int lanes) {
  const int cb = (c + lanes - 1) / lanes;
  for (int i = 0; i < n; ++i)
    for (size_t p = 0; p < size_t(h) * w; ++p)
      for (int l = c - (cb - 1) * lanes; l < lanes; ++l) {
        const float v = t[((size_t(i) * cb + cb - 1) * h * w + p) * lanes + l];
        if (v != 0.0f)
          return ::testing::AssertionFailure() << "pad lane " << l << " of image " << i
                                               << " pixel " << p << " holds " << v;
      }
  return ::testing::AssertionSuccess();
}

class BlockedConvTest
    : public ::testing::TestWithParam<std::tuple<BlockedCase, cpu::CpuIsa>> {
 protected:
  BlockedConvTest() : rng_(std::hash<std::string>()(std::get<0>(GetParam()).name) & 0xffffffffu) {}
  void SetUp() override {
    const cpu::CpuIsa isa = std::get<1>(GetParam());
    if (isa == cpu::CpuIsa::Avx512 && !cpu::cpu_avx512_usable())
      GTEST_SKIP() << "no AVX-512 on this CPU or build";
    cpu::set_cpu_isa(isa);
    d_ = std::get<0>(GetParam()).d;
    d_.lanes = blk::lanes();
    ASSERT_EQ(d_.lanes, isa == cpu::CpuIsa::Avx512 ? 16 : 8);
    ASSERT_TRUE(blk::conv_supported(d_, blk::Pass::Forward));
  }
  void TearDown() override { cpu::set_cpu_isa(cpu::CpuIsa::Auto); }

  std::vector<float> blocked(const std::vector<float>& nchw, int c, int h, int w) {
    std::vector<float> b(blk::blocked_floats(d_.n, c, h, w, d_.lanes), sentinel());
    blk::to_blocked(d_.n, c, h, w, d_.lanes, nchw.data(), b.data());
    return b;
  }
  std::vector<float> plain(const std::vector<float>& b, int c, int h, int w) {
    std::vector<float> p(size_t(d_.n) * c * h * w, sentinel());
    blk::from_blocked(d_.n, c, h, w, d_.lanes, b.data(), p.data());
    return p;
  }
  std::vector<float> packed(blk::Pass pass, const std::vector<float>& w, const float* scale) {
    std::vector<float> p(blk::packed_weights_floats(d_, pass), sentinel());
    blk::pack_weights(d_, pass, w.data(), scale, p.data());
    return p;
  }

  blk::ConvDesc d_{};
  std::mt19937 rng_;
};

TEST_P(BlockedConvTest, ReorderRoundTrip) {
  const auto x = random_vec(x_size(d_), rng_);
  const auto xb = blocked(x, d_.c_in, d_.h, d_.w);
  EXPECT_TRUE(pad_lanes_zero(xb, d_.n, d_.c_in, d_.h, d_.w, d_.lanes));
  const auto back = plain(xb, d_.c_in, d_.h, d_.w);
  EXPECT_TRUE(all_close(back, x, 0.0, 0.0));
}

TEST_P(BlockedConvTest, ForwardMatchesReference) {
  const int oh = out_h(d_), ow = out_w(d_);
  const auto x = random_vec(x_size(d_), rng_);
  const auto w = random_vec(w_size(d_), rng_);
  const auto bias = random_vec(d_.c_out, rng_);
  const auto scale = random_vec(d_.c_out, rng_, 0.5f, 2.0f);
  const auto res = random_vec(y_size(d_), rng_, -2.0f, 2.0f);
  const auto xb = blocked(x, d_.c_in, d_.h, d_.w);
  const auto rb = blocked(res, d_.c_out, oh, ow);
  GuardedScratch scratch(blk::scratch_floats(d_, blk::Pass::Forward, omp_get_max_threads()));
  struct Variant {
    bool bias, residual, scale;
    Activation act;
    bool in_place = false;  // the residual is y itself (an inference plan's identity shortcut)
  };
  const Variant variants[] = {{false, false, false, Activation::None},
                              {true, true, true, Activation::ReLU},
                              {true, false, false, Activation::ReLU6},
                              {false, true, true, Activation::ReLU6},
                              {true, true, true, Activation::ReLU, true}};
  for (const Variant& v : variants) {
    const auto wp = packed(blk::Pass::Forward, w, v.scale ? scale.data() : nullptr);
    std::vector<float> yb(blk::blocked_floats(d_.n, d_.c_out, oh, ow, d_.lanes), sentinel());
    if (v.in_place) yb = rb;
    blk::conv_forward(d_, xb.data(), wp.data(), v.bias ? bias.data() : nullptr,
                      v.residual ? (v.in_place ? yb.data() : rb.data()) : nullptr, v.act,
                      yb.data(), scratch.data());
    std::vector<double> ref(y_size(d_), 0.0);
    for_each_mac(d_, [&](size_t xi, size_t yi, size_t wi) {
      const int co = int(wi / (size_t(cin_g(d_)) * d_.kh * d_.kw));
      ref[yi] += double(x[xi]) * double(w[wi]) * (v.scale ? double(scale[co]) : 1.0);
    });
    const size_t plane = size_t(oh) * ow;
    for (size_t i = 0; i < ref.size(); ++i) {
      const int co = int(i / plane % d_.c_out);
      double r = ref[i] + (v.bias ? bias[co] : 0.0) + (v.residual ? res[i] : 0.0);
      ref[i] = ref_act(v.act, r);
    }
    SCOPED_TRACE(testing::Message() << "bias " << v.bias << " residual " << v.residual
                                    << " scale " << v.scale << " act " << int(v.act)
                                    << " in place " << v.in_place);
    EXPECT_TRUE(pad_lanes_zero(yb, d_.n, d_.c_out, oh, ow, d_.lanes));
    EXPECT_TRUE(all_close(plain(yb, d_.c_out, oh, ow), ref,
                          atol_for(size_t(cin_g(d_)) * d_.kh * d_.kw), kRtol));
  }
  EXPECT_TRUE(scratch.guards_intact());
}

TEST_P(BlockedConvTest, BackwardDataMatchesReference) {
  const int oh = out_h(d_), ow = out_w(d_);
  const auto dy = random_vec(y_size(d_), rng_);
  const auto w = random_vec(w_size(d_), rng_);
  const auto scale = random_vec(d_.c_out, rng_, 0.5f, 2.0f);
  const auto dyb = blocked(dy, d_.c_out, oh, ow);
  const auto wp = packed(blk::Pass::BackwardData, w, scale.data());
  GuardedScratch scratch(
      blk::scratch_floats(d_, blk::Pass::BackwardData, omp_get_max_threads()));
  std::vector<float> dxb(blk::blocked_floats(d_.n, d_.c_in, d_.h, d_.w, d_.lanes), sentinel());
  blk::conv_backward_data(d_, dyb.data(), wp.data(), dxb.data(), scratch.data());
  std::vector<double> ref(x_size(d_), 0.0);
  for_each_mac(d_, [&](size_t xi, size_t yi, size_t wi) {
    const int co = int(wi / (size_t(cin_g(d_)) * d_.kh * d_.kw));
    ref[xi] += double(dy[yi]) * double(w[wi]) * double(scale[co]);
  });
  EXPECT_TRUE(pad_lanes_zero(dxb, d_.n, d_.c_in, d_.h, d_.w, d_.lanes));
  EXPECT_TRUE(all_close(plain(dxb, d_.c_in, d_.h, d_.w), ref,
                        atol_for(size_t(d_.c_out / d_.groups) * d_.kh * d_.kw), kRtol));
  EXPECT_TRUE(scratch.guards_intact());
}

TEST_P(BlockedConvTest, BackwardWeightsMatchesReference) {
  const int oh = out_h(d_), ow = out_w(d_);
  const auto x = random_vec(x_size(d_), rng_);
  const auto dy = random_vec(y_size(d_), rng_);
  const auto xb = blocked(x, d_.c_in, d_.h, d_.w);
  const auto dyb = blocked(dy, d_.c_out, oh, ow);
  std::vector<double> ref_dw(w_size(d_), 0.0), ref_db(d_.c_out, 0.0);
  for_each_mac(d_, [&](size_t xi, size_t yi, size_t wi) {
    ref_dw[wi] += double(x[xi]) * double(dy[yi]);
  });
  for (size_t i = 0; i < dy.size(); ++i) ref_db[i / (size_t(oh) * ow) % d_.c_out] += dy[i];
  const size_t row = w_size(d_) / d_.c_out;
  GuardedScratch scratch(
      blk::scratch_floats(d_, blk::Pass::BackwardWeights, omp_get_max_threads()));
  // All filters; one filter; a few (unsorted, a duplicate); many (every other filter).
  std::vector<std::vector<int32_t>> lists = {{}, {d_.c_out - 1}};
  if (d_.c_out > 2) lists.push_back({d_.c_out - 1, 0, d_.c_out / 2, 0});
  std::vector<int32_t> many;
  for (int f = 0; f < d_.c_out; f += 2) many.push_back(f);
  if (many.size() > 4) lists.push_back(many);
  for (const auto& list : lists) {
    const bool all = list.empty();
    std::vector<float> dw(w_size(d_), sentinel()), db(d_.c_out, sentinel());
    blk::conv_backward_weights(d_, xb.data(), dyb.data(), dw.data(), db.data(),
                               all ? nullptr : list.data(), static_cast<int>(list.size()),
                               scratch.data());
    SCOPED_TRACE(testing::Message() << "filters " << (all ? d_.c_out : int(list.size())));
    std::vector<bool> sel(d_.c_out, all);
    for (int f : list) sel[f] = true;
    const double atol = atol_for(size_t(d_.n) * oh * ow);
    for (int f = 0; f < d_.c_out; ++f) {
      std::vector<float> got(dw.begin() + f * row, dw.begin() + (f + 1) * row);
      if (!sel[f]) {
        // Rows of unlisted filters are left untouched.
        for (float v : got) ASSERT_EQ(float_bits(v), float_bits(sentinel())) << "filter " << f;
        ASSERT_EQ(float_bits(db[f]), float_bits(sentinel())) << "filter " << f;
        continue;
      }
      std::vector<double> ref(ref_dw.begin() + f * row, ref_dw.begin() + (f + 1) * row);
      EXPECT_TRUE(all_close(got, ref, atol, kRtol)) << "filter " << f;
      EXPECT_NEAR(db[f], ref_db[f], atol + kRtol * std::fabs(ref_db[f])) << "filter " << f;
    }
  }
  // db may be null.
  std::vector<float> dw(w_size(d_), sentinel());
  blk::conv_backward_weights(d_, xb.data(), dyb.data(), dw.data(), nullptr, nullptr, 0,
                             scratch.data());
  EXPECT_TRUE(all_close(dw, ref_dw, atol_for(size_t(d_.n) * oh * ow), kRtol));
  EXPECT_TRUE(scratch.guards_intact());
}

// Re-packing a filter subset leaves exactly what packing everything anew gives.
TEST_P(BlockedConvTest, RepackFilterSubset) {
  const auto w = random_vec(w_size(d_), rng_);
  const auto scale = random_vec(d_.c_out, rng_, 0.5f, 2.0f);
  auto w2 = w;
  std::vector<int32_t> moved = {d_.c_out - 1, 0};
  if (d_.c_out > 4) moved.push_back(d_.c_out / 2);
  const size_t row = w_size(d_) / d_.c_out;
  for (int f : moved)
    for (size_t i = 0; i < row; ++i) w2[f * row + i] += 0.5f + 0.01f * float(i);
  for (blk::Pass pass : {blk::Pass::Forward, blk::Pass::BackwardData}) {
    auto p = packed(pass, w, scale.data());
    blk::pack_weights(d_, pass, w2.data(), scale.data(), p.data(), moved.data(),
                      static_cast<int>(moved.size()));
    const auto fresh = packed(pass, w2, scale.data());
    ASSERT_EQ(p.size(), fresh.size());
    for (size_t i = 0; i < p.size(); ++i)
      ASSERT_EQ(float_bits(p[i]), float_bits(fresh[i])) << "pass " << int(pass) << " at " << i;
  }
}

// The first layer's NCHW-input variants (stems of 1-4 channels), against the same references.
class NchwInputTest : public BlockedConvTest {};

TEST_P(NchwInputTest, ForwardAndWeightGradientMatchReference) {
  ASSERT_TRUE(blk::nchw_input_supported(d_));
  const int oh = out_h(d_), ow = out_w(d_);
  const auto x = random_vec(x_size(d_), rng_);
  const auto w = random_vec(w_size(d_), rng_);
  const auto bias = random_vec(d_.c_out, rng_);
  const auto res = random_vec(y_size(d_), rng_, -2.0f, 2.0f);
  const auto dy = random_vec(y_size(d_), rng_);
  const auto rb = blocked(res, d_.c_out, oh, ow);
  const auto dyb = blocked(dy, d_.c_out, oh, ow);
  size_t sn = 0;
  for (blk::Pass p : {blk::Pass::Forward, blk::Pass::BackwardWeights})
    sn = std::max(sn, blk::scratch_floats(d_, p, omp_get_max_threads()));
  GuardedScratch scratch(sn);
  const auto wp = packed(blk::Pass::Forward, w, nullptr);
  std::vector<float> yb(blk::blocked_floats(d_.n, d_.c_out, oh, ow, d_.lanes), sentinel());
  blk::conv_forward_nchw_input(d_, x.data(), wp.data(), bias.data(), rb.data(),
                               Activation::ReLU, yb.data(), scratch.data());
  std::vector<double> ref(y_size(d_), 0.0), ref_dw(w_size(d_), 0.0);
  for_each_mac(d_, [&](size_t xi, size_t yi, size_t wi) {
    ref[yi] += double(x[xi]) * double(w[wi]);
    ref_dw[wi] += double(x[xi]) * double(dy[yi]);
  });
  for (size_t i = 0; i < ref.size(); ++i)
    ref[i] = ref_act(Activation::ReLU, ref[i] + bias[i / (size_t(oh) * ow) % d_.c_out] + res[i]);
  EXPECT_TRUE(pad_lanes_zero(yb, d_.n, d_.c_out, oh, ow, d_.lanes));
  EXPECT_TRUE(all_close(plain(yb, d_.c_out, oh, ow), ref,
                        atol_for(size_t(d_.c_in) * d_.kh * d_.kw), kRtol));
  const double atol = atol_for(size_t(d_.n) * oh * ow);
  std::vector<float> dw(w_size(d_), sentinel());
  blk::conv_backward_weights_nchw_input(d_, x.data(), dyb.data(), dw.data(), nullptr, nullptr, 0,
                                        scratch.data());
  EXPECT_TRUE(all_close(dw, ref_dw, atol, kRtol));
  // One filter: only its row is written.
  std::fill(dw.begin(), dw.end(), sentinel());
  const int32_t f = d_.c_out - 1;
  blk::conv_backward_weights_nchw_input(d_, x.data(), dyb.data(), dw.data(), nullptr, &f, 1,
                                        scratch.data());
  const size_t row = w_size(d_) / d_.c_out;
  EXPECT_TRUE(all_close(std::vector<float>(dw.begin() + f * row, dw.end()),
                        std::vector<double>(ref_dw.begin() + f * row, ref_dw.end()), atol, kRtol));
  EXPECT_EQ(float_bits(dw[0]), float_bits(sentinel()));
  EXPECT_TRUE(scratch.guards_intact());
}

const BlockedCase kNchwCases[] = {
    {"c1_to_16_3x3_pad1_n3", desc(3, 1, 12, 11, 16, 3, 3, 1, 1, 1, 1, 1, 1)},
    {"c3_to_20_3x3_pad1_n5", desc(5, 3, 9, 10, 20, 3, 3, 1, 1, 1, 1, 1, 1)},
    {"c1_to_6_5x5_pad2_n2", desc(2, 1, 12, 12, 6, 5, 5, 1, 1, 2, 2, 2, 2)},
    {"c3_to_8_7x7_s2_pad3_n2", desc(2, 3, 13, 12, 8, 7, 7, 2, 2, 3, 3, 3, 3)},
    {"c4_to_9_3x3_s2_asym_n1", desc(1, 4, 7, 8, 9, 3, 3, 2, 2, 0, 1, 1, 0)},
    {"c2_to_5_1x1_n3", desc(3, 2, 5, 6, 5, 1, 1, 1, 1, 0, 0, 0, 0)},
};

std::string case_name(const testing::TestParamInfo<std::tuple<BlockedCase, cpu::CpuIsa>>& i) {
  return std::string(std::get<0>(i.param).name) + "_" + cpu::cpu_isa_name(std::get<1>(i.param));
}

INSTANTIATE_TEST_SUITE_P(Shapes, BlockedConvTest,
                         ::testing::Combine(::testing::ValuesIn(kCases),
                                            ::testing::Values(cpu::CpuIsa::Avx2,
                                                              cpu::CpuIsa::Avx512)),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Stems, NchwInputTest,
                         ::testing::Combine(::testing::ValuesIn(kNchwCases),
                                            ::testing::Values(cpu::CpuIsa::Avx2,
                                                              cpu::CpuIsa::Avx512)),
                         case_name);

// Refusals and errors name the problem.
TEST(BlockedConv, RefusesGroupedAndBadShapes) {
  blk::ConvDesc d = desc(1, 8, 5, 5, 8, 3, 3, 1, 1, 1, 1, 1, 1, 2);
  d.lanes = 8;
  EXPECT_FALSE(blk::conv_supported(d, blk::Pass::Forward));
  std::vector<float> buf(4096);
  EXPECT_THROW(blk::conv_forward(d, buf.data(), buf.data(), nullptr, nullptr, Activation::None,
                                 buf.data(), buf.data()),
               std::invalid_argument);
  d.groups = 1;
  d.lanes = 4;
  EXPECT_FALSE(blk::conv_supported(d, blk::Pass::Forward));
  d.lanes = 8;
  const int32_t bad = 8;
  EXPECT_THROW(blk::conv_backward_weights(d, buf.data(), buf.data(), buf.data(), nullptr, &bad, 1,
                                          buf.data()),
               std::invalid_argument);
}

}  // namespace
}  // namespace nns::ops::test
