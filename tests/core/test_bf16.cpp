// splitter.precision: bf16 — the oneDNN convolution with bf16 operands against naive loops in
// double precision on bf16-rounded operands (so the only difference left is fp32 accumulation),
// on odd shapes (channels not a multiple of 16, stride 2, groups, a 1x1 map); and the plan rule:
// only the obfuscation step's plan runs in bf16, evaluations stay fp32 bit for bit.
// Skipped, visibly, where the CPU has no avx512_bf16.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "core/engine/conv_kernel.h"
#include "core/engine/plan.h"
#include "core/models/zoo.h"
#include "core/random.h"
#include "core/splitter/mask.h"
#include "core/splitter/obfuscator.h"
#include "kernels/cpu/blocked/eltwise.h"
#include "kernels/cpu/onednn/conv.h"
#include "kernels/ops.h"

namespace nns {
namespace {

using engine::ConvSpec;
using engine::CpuEngine;
using engine::Precision;
namespace blk = ops::cpu::blocked;

// Round to the nearest bf16, ties to even (what oneDNN's reorder does), returned as a float.
float to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  float r;
  std::memcpy(&r, &u, 4);
  return r;
}

std::vector<float> random_vec(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = float(rng.normal());
  return v;
}

std::vector<float> rounded(std::vector<float> v) {
  for (auto& x : v) x = to_bf16(x);
  return v;
}

// max |a - b| over max |b|.
double rel_err(const std::vector<float>& a, const std::vector<double>& b) {
  double worst = 0, scale = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return worst / scale;
}

struct Shape {
  int n, c_in, h, w, c_out, k, stride, pad, groups;
};

class Bf16Conv : public ::testing::TestWithParam<Shape> {
 protected:
  void SetUp() override {
    if (!ops::cpu::onednn::bf16_supported()) GTEST_SKIP() << "no avx512_bf16 on this CPU";
  }
};

// Calls f(x index, y index, w index) for every multiply-add (NCHW, OIHW).
template <class F>
void each_mac(const ConvSpec& s, F&& f) {
  const int oh = s.out_h(), ow = s.out_w(), cig = s.c_in / s.groups, cog = s.c_out / s.groups;
  for (int n = 0; n < s.n; ++n)
    for (int o = 0; o < s.c_out; ++o)
      for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x)
          for (int i = 0; i < cig; ++i)
            for (int ky = 0; ky < s.kh; ++ky)
              for (int kx = 0; kx < s.kw; ++kx) {
                const int iy = y * s.stride_h - s.pad_t + ky, ix = x * s.stride_w - s.pad_l + kx;
                if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
                const int ci = (o / cog) * cig + i;
                f(((size_t(n) * s.c_in + ci) * s.h + iy) * s.w + ix,
                  ((size_t(n) * s.c_out + o) * oh + y) * ow + x,
                  ((size_t(o) * cig + i) * s.kh + ky) * s.kw + kx);
              }
}

TEST_P(Bf16Conv, MatchesNaiveLoopsOnRoundedOperands) {
  const Shape sh = GetParam();
  ConvSpec s;
  s.n = sh.n, s.c_in = sh.c_in, s.h = sh.h, s.w = sh.w, s.c_out = sh.c_out, s.kh = sh.k,
  s.kw = sh.k;
  s.stride_h = s.stride_w = sh.stride;
  s.pad_t = s.pad_l = s.pad_b = s.pad_r = sh.pad;
  s.groups = sh.groups;
  s.src_lanes = s.dst_lanes = 16;
  s.bias = true;
  s.training = s.backward_data = s.backward_weights = s.backward_bias = true;
  s.bf16 = true;
  auto k = engine::make_onednn_conv(s);
  EXPECT_NE(k->impl().find("bf16"), std::string::npos) << k->impl();

  const int oh = s.out_h(), ow = s.out_w();
  const size_t xs = size_t(s.n) * s.c_in * s.h * s.w, ys = size_t(s.n) * s.c_out * oh * ow;
  const size_t ws = size_t(s.c_out) * (s.c_in / s.groups) * s.kh * s.kw;
  const auto x = random_vec(xs, 1), w = random_vec(ws, 2), dy = random_vec(ys, 3),
             bias = random_vec(size_t(s.c_out), 4);
  const auto xr = rounded(x), wr = rounded(w), dyr = rounded(dy);

  // References in double on the rounded operands; and, for contrast, on the fp32 ones.
  std::vector<double> y_ref(ys), y_fp32(ys), dx_ref(xs, 0), dw_ref(ws, 0), db_ref(size_t(s.c_out), 0);
  for (size_t i = 0; i < ys; ++i) y_ref[i] = y_fp32[i] = bias[(i / (size_t(oh) * ow)) % s.c_out];
  each_mac(s, [&](size_t xi, size_t yi, size_t wi) {
    y_ref[yi] += double(xr[xi]) * wr[wi];
    y_fp32[yi] += double(x[xi]) * w[wi];
    dx_ref[xi] += double(dyr[yi]) * wr[wi];
    dw_ref[wi] += double(dyr[yi]) * xr[xi];
  });
  for (size_t i = 0; i < ys; ++i) db_ref[(i / (size_t(oh) * ow)) % s.c_out] += dyr[i];

  const blk::Dims dx_dims{s.n, s.c_in, s.h * s.w, 16}, dy_dims{s.n, s.c_out, oh * ow, 16};
  std::vector<float> xb(size_t(dx_dims.size())), yb(size_t(dy_dims.size())),
      dyb(size_t(dy_dims.size())), dxb(size_t(dx_dims.size()));
  blk::to_blocked(dx_dims, x.data(), xb.data());
  blk::to_blocked(dy_dims, dy.data(), dyb.data());
  std::vector<char> wf(k->fwd_weights_bytes()), wb(k->bwd_weights_bytes()),
      dwi(k->diff_weights_bytes()), scratch(k->scratch_bytes());
  k->pack(w.data(), wf.data(), wb.data());  // the fp32 weights: the kernel rounds them

  k->forward(xb.data(), wf.data(), bias.data(), nullptr, yb.data(), scratch.data());
  std::vector<float> y(ys), dx(xs), dw(ws), db(size_t(s.c_out));
  blk::from_blocked(dy_dims, yb.data(), y.data());
  k->backward_data(dyb.data(), wb.data(), dxb.data(), scratch.data());
  blk::from_blocked(dx_dims, dxb.data(), dx.data());
  k->backward_weights(xb.data(), dyb.data(), dwi.data(), dw.data(), db.data(), nullptr, 0,
                      scratch.data());

  EXPECT_LT(rel_err(y, y_ref), 1e-5) << "forward";
  EXPECT_LT(rel_err(dx, dx_ref), 1e-5) << "backward data";
  EXPECT_LT(rel_err(dw, dw_ref), 1e-5) << "backward weights";
  EXPECT_LT(rel_err(db, db_ref), 1e-4) << "bias gradient (from the rounded dy)";
  // It really ran in bf16: against the unrounded operands it is off by bf16's rounding.
  EXPECT_GT(rel_err(y, y_fp32), 1e-4) << "forward agrees with fp32 too closely for bf16";
}

INSTANTIATE_TEST_SUITE_P(OddShapes, Bf16Conv,
                         ::testing::Values(Shape{2, 5, 9, 7, 20, 3, 1, 1, 1},
                                           Shape{3, 16, 8, 8, 32, 3, 2, 1, 1},
                                           Shape{2, 24, 6, 6, 24, 3, 1, 1, 24},
                                           Shape{4, 33, 1, 1, 17, 1, 1, 0, 1}));

struct Restore {
  CpuEngine engine = engine::cpu_engine();
  ~Restore() {
    engine::set_search_precision(Precision::Fp32);
    engine::set_cpu_engine(engine);
  }
};

TEST(Bf16Settings, ParsesAndRefusesWhereItCannotRun) {
  Restore r;
  EXPECT_EQ(engine::parse_precision("fp32"), Precision::Fp32);
  EXPECT_EQ(engine::parse_precision("bf16"), Precision::Bf16);
  EXPECT_THROW(engine::parse_precision("fp16"), std::invalid_argument);
  engine::set_cpu_engine(CpuEngine::Native);
  EXPECT_NE(engine::bf16_unavailable().find("native"), std::string::npos);
  EXPECT_THROW(engine::set_search_precision(Precision::Bf16), std::invalid_argument);
  EXPECT_EQ(engine::search_precision(), Precision::Fp32);
  engine::set_cpu_engine(CpuEngine::Layers);
  EXPECT_THROW(engine::set_search_precision(Precision::Bf16), std::invalid_argument);
  engine::set_cpu_engine(CpuEngine::Onednn);
  if (ops::cpu::onednn::bf16_supported()) {
    EXPECT_EQ(engine::bf16_unavailable(), "");
    EXPECT_NO_THROW(engine::set_search_precision(Precision::Bf16));
  } else {
    EXPECT_THROW(engine::set_search_precision(Precision::Bf16), std::invalid_argument);
  }
}

// resnet20's obfuscation step in bf16 against the fp32 plan: the logits and the masked
// filters' gradients agree to bf16's rounding, and the plan says bf16; an evaluation (no
// gradient) under bf16 gives exactly the fp32 logits.
TEST(Bf16Plan, OnlyTheObfuscationStepRunsInBf16) {
  if (!ops::cpu::onednn::bf16_supported()) GTEST_SKIP() << "no avx512_bf16 on this CPU";
  Restore r;
  engine::set_cpu_engine(CpuEngine::Onednn);
  models::ModelSpec spec{"resnet20", 1, 28, 10, 1.0f};
  auto a = models::build_model(spec, 3);
  auto b = models::clone_model(*a);
  Rng rng(5);
  const int n = 8;
  Tensor x({n, 1, 28, 28}), y({n}, DType::I32);
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] = float(rng.normal());
  for (int i = 0; i < n; ++i) y.i32()[i] = int32_t(rng.below(10));

  auto step = [&](models::Model& m, Precision p) {
    engine::set_search_precision(p);
    auto layers = splitter::eligible(m, "spatial");
    std::vector<std::vector<int32_t>> filters;
    for (size_t l = 0; l < layers.size(); ++l) filters.push_back({int32_t(l % 3)});
    auto st = splitter::eligible_stats(layers);
    auto masks = splitter::select_mask(layers, filters, float(st.mean),
                                       float((st.max - st.min) * 0.2));
    splitter::enter_masked_mode(m, layers, masks);
    for (auto& [k, prm] : m.parameters()) {
      prm->ensure_grad();
      prm->grad.fill(0.0f);
    }
    Tensor probs({1}), dl({1});
    splitter::cross_entropy_backward(m, x, y, probs, dl);
    Tensor logits = m.forward(x).clone();
    EXPECT_NE(m.last_plan(), nullptr);
    const std::string desc = m.last_plan()->describe();
    std::vector<float> g;
    for (auto& [k, prm] : m.parameters()) {
      auto v = prm->grad.to_vector();
      g.insert(g.end(), v.begin(), v.end());
    }
    splitter::leave_masked_mode(m);
    // An evaluation in eval mode without gradients.
    m.set_training(false);
    models::NoGrad ng(m);
    Tensor eval = m.forward(x).clone();
    return std::make_tuple(logits, g, desc, eval);
  };
  auto [l32, g32, d32, e32] = step(*a, Precision::Fp32);
  auto [l16, g16, d16, e16] = step(*b, Precision::Bf16);
  EXPECT_EQ(d32.find("bf16"), std::string::npos) << d32;
  EXPECT_NE(d16.find("bf16"), std::string::npos) << d16;
  auto la = l32.to_vector(), lb = l16.to_vector();
  std::vector<double> lad(la.begin(), la.end());
  EXPECT_LT(rel_err(lb, lad), 3e-2) << "logits";
  EXPECT_GT(rel_err(lb, lad), 0.0) << "bf16 logits equal fp32's: bf16 did not run";
  double d2 = 0, b2 = 0;
  for (size_t i = 0; i < g32.size(); ++i) {
    d2 += double(g16[i] - g32[i]) * (g16[i] - g32[i]);
    b2 += double(g32[i]) * g32[i];
  }
  ASSERT_GT(b2, 0.0);
  EXPECT_LT(std::sqrt(d2 / b2), 5e-2) << "masked filters' gradients";
  EXPECT_EQ(e16.to_vector(), e32.to_vector()) << "evaluation must stay fp32";
}

}  // namespace
}  // namespace nns
