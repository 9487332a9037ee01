// Recurrent cells: forward against a naive double-precision reference (PyTorch LSTMCell /
// RNNCell semantics), and backward through time against central finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/random.h"
#include "rl/cells.h"

namespace nns::rl {
namespace {

std::vector<float> random_vec(Rng& rng, size_t n, double lo, double hi) {
  std::vector<float> v(n);
  for (auto& e : v) e = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Naive reference: returns h [T, B, H] in double.
std::vector<double> reference_forward(RecurrentCell& cell, const std::vector<float>& x, int T,
                                      int B, const std::vector<float>& h0,
                                      const std::vector<float>& c0) {
  const int in = cell.input_size(), H = cell.hidden();
  const bool lstm = cell.kind() == "lstm";
  const int G = lstm ? 4 : 1;
  auto params = cell.parameters();
  std::vector<float> wih = params[0].second->value.to_vector();
  std::vector<float> whh = params[1].second->value.to_vector();
  std::vector<float> bih = params[2].second->value.to_vector();
  std::vector<float> bhh = params[3].second->value.to_vector();
  std::vector<double> h(h0.begin(), h0.end()), c(c0.begin(), c0.end()), out;
  for (int t = 0; t < T; ++t) {
    std::vector<double> hn(size_t(B) * H), cn(size_t(B) * H);
    for (int b = 0; b < B; ++b) {
      std::vector<double> g(size_t(G) * H);
      for (int r = 0; r < G * H; ++r) {
        double s = bih[r] + bhh[r];
        for (int j = 0; j < in; ++j) s += double(x[(size_t(t) * B + b) * in + j]) * wih[size_t(r) * in + j];
        for (int j = 0; j < H; ++j) s += h[size_t(b) * H + j] * whh[size_t(r) * H + j];
        g[r] = s;
      }
      for (int u = 0; u < H; ++u) {
        const size_t o = size_t(b) * H + u;
        if (lstm) {
          const double i = sigm(g[u]), f = sigm(g[H + u]), gg = std::tanh(g[2 * H + u]),
                       oo = sigm(g[3 * H + u]);
          cn[o] = f * c[o] + i * gg;
          hn[o] = oo * std::tanh(cn[o]);
        } else {
          hn[o] = std::tanh(g[u]);
        }
      }
    }
    h = hn;
    c = cn;
    out.insert(out.end(), h.begin(), h.end());
  }
  return out;
}

class CellTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CellTest, ForwardMatchesReference) {
  const int in = 5, H = 6, T = 4, B = 3;
  auto cell = make_cell(GetParam(), in, H);
  Rng rng(11);
  cell->init_uniform(rng, 0.5f);
  auto x = random_vec(rng, size_t(T) * B * in, -1, 1);
  auto h0 = random_vec(rng, size_t(B) * H, -1, 1);
  auto c0 = random_vec(rng, size_t(B) * H, -1, 1);
  Tensor tx = Tensor::from_vector(x, {T, B, in});
  Tensor th0 = Tensor::from_vector(h0, {B, H}), tc0 = Tensor::from_vector(c0, {B, H});
  const Tensor& h = cell->forward(tx, &th0, &tc0);
  ASSERT_EQ(h.shape(), (Shape{T, B, H}));
  auto got = h.to_vector();
  auto want = reference_forward(*cell, x, T, B, h0, c0);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 2e-5) << i;

  // Zero initial state by default.
  std::vector<float> zeros(size_t(B) * H, 0.0f);
  got = cell->forward(tx).to_vector();
  want = reference_forward(*cell, x, T, B, zeros, zeros);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 2e-5) << i;
}

TEST_P(CellTest, GradientsMatchFiniteDifferences) {
  const int in = 3, H = 4, T = 5, B = 2;
  auto cell = make_cell(GetParam(), in, H);
  Rng rng(7);
  cell->init_uniform(rng, 0.6f);
  Tensor x = Tensor::from_vector(random_vec(rng, size_t(T) * B * in, -1, 1), {T, B, in});
  Tensor h0 = Tensor::from_vector(random_vec(rng, size_t(B) * H, -1, 1), {B, H});
  Tensor c0 = Tensor::from_vector(random_vec(rng, size_t(B) * H, -1, 1), {B, H});
  // loss = sum_t <P_t, h_t>; some steps get no external gradient at all.
  std::vector<float> proj(size_t(T) * B * H);
  for (auto& e : proj) e = static_cast<float>(rng.normal());
  for (int i = 0; i < B * H; ++i) proj[size_t(2) * B * H + i] = 0.0f;
  Tensor P = Tensor::from_vector(proj, {T, B, H});
  const bool lstm = cell->has_cell_state();

  auto loss = [&]() {
    auto h = cell->forward(x, &h0, lstm ? &c0 : nullptr).to_vector();
    double s = 0;
    for (size_t i = 0; i < h.size(); ++i) s += double(h[i]) * proj[i];
    return s;
  };
  loss();
  const std::vector<float> dx = cell->backward(P).to_vector();
  const std::vector<float> dh0 = cell->grad_h0().to_vector();
  const std::vector<float> dc0 = lstm ? cell->grad_c0().to_vector() : std::vector<float>();
  std::vector<std::vector<float>> grads;
  for (auto& [name, p] : cell->parameters()) grads.push_back(p->grad.to_vector());

  const float eps = 1e-2f;
  int checked = 0;
  auto check = [&](const std::string& what, float* v, int64_t n, const std::vector<float>& g) {
    ASSERT_EQ(static_cast<int64_t>(g.size()), n) << what;
    for (int64_t i = 0; i < n; ++i) {
      const float keep = v[i];
      v[i] = keep + eps;
      const double lp = loss();
      v[i] = keep - eps;
      const double lm = loss();
      v[i] = keep;
      const double fd = (lp - lm) / (2.0 * eps);
      EXPECT_NEAR(g[i], fd, 1e-3 + 1e-2 * std::fabs(fd)) << what << "[" << i << "]";
      ++checked;
    }
  };
  int k = 0;
  for (auto& [name, p] : cell->parameters()) {
    check(name, p->value.f32(), p->value.numel(), grads[k]);
    ++k;
  }
  check("x", x.f32(), x.numel(), dx);
  check("h0", h0.f32(), h0.numel(), dh0);
  if (lstm) check("c0", c0.f32(), c0.numel(), dc0);
  EXPECT_GE(checked, 74);  // every parameter, input and initial-state entry
}

TEST_P(CellTest, BackwardOverwritesGradientsAndSkipsDx) {
  const int in = 3, H = 4, T = 3, B = 1;
  auto cell = make_cell(GetParam(), in, H);
  Rng rng(3);
  cell->init_uniform(rng, 0.3f);
  Tensor x = Tensor::from_vector(random_vec(rng, size_t(T) * B * in, -1, 1), {T, B, in});
  std::vector<float> ones(size_t(T) * B * H, 1.0f);
  Tensor dh = Tensor::from_vector(ones, {T, B, H});
  cell->forward(x);
  cell->backward(dh);
  auto first = cell->parameters()[1].second->grad.to_vector();
  cell->forward(x);
  const Tensor& dx = cell->backward(dh, /*need_dx=*/false);
  EXPECT_FALSE(dx.defined());
  EXPECT_EQ(cell->parameters()[1].second->grad.to_vector(), first);  // not accumulated
}

INSTANTIATE_TEST_SUITE_P(Cells, CellTest, ::testing::Values("lstm", "rnn"));

TEST(Cells, NamesShapesAndInit) {
  auto lstm = make_cell("lstm", 7, 5);
  auto p = lstm->parameters();
  ASSERT_EQ(p.size(), 4u);
  EXPECT_EQ(p[0].first, "weight_ih");
  EXPECT_EQ(p[1].first, "weight_hh");
  EXPECT_EQ(p[2].first, "bias_ih");
  EXPECT_EQ(p[3].first, "bias_hh");
  EXPECT_EQ(p[0].second->value.shape(), (Shape{20, 7}));
  EXPECT_EQ(p[1].second->value.shape(), (Shape{20, 5}));
  EXPECT_EQ(p[2].second->value.shape(), (Shape{20}));
  auto rnn = make_cell("rnn", 7, 5);
  EXPECT_EQ(rnn->parameters()[0].second->value.shape(), (Shape{5, 7}));
  EXPECT_THROW(make_cell("gru", 7, 5), std::invalid_argument);
  Rng rng(1);
  lstm->init_uniform(rng, 0.1f);
  for (auto& [name, q] : lstm->parameters())
    for (float v : q->value.to_vector()) {
      EXPECT_GE(v, -0.1f);
      EXPECT_LE(v, 0.1f);
    }
}

}  // namespace
}  // namespace nns::rl
