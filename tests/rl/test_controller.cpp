// The controller: REINFORCE gradients against finite differences, the sign of the update on a
// toy bandit, sampling, initialisation, determinism and state round trips.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "core/random.h"
#include "rl/controller.h"

namespace nns::rl {
namespace {

using Episode = Controller::Episode;

double reinforce_loss(Controller& c, const std::vector<Episode>& eps,
                      const std::vector<double>& r) {
  const double b = std::accumulate(r.begin(), r.end(), 0.0) / double(r.size());
  double loss = 0;
  for (size_t i = 0; i < eps.size(); ++i) loss -= (r[i] - b) * c.log_prob(eps[i]);
  return loss;
}

struct GradCase {
  std::string cell;
  int k;
  bool with_replacement;
};
void PrintTo(const GradCase& c, std::ostream* os) {
  *os << c.cell << " k=" << c.k << (c.with_replacement ? " with replacement" : " distinct");
}

class ControllerGrad : public ::testing::TestWithParam<GradCase> {};

TEST_P(ControllerGrad, ReinforceGradientMatchesFiniteDifferences) {
  const GradCase gc = GetParam();
  ControllerOptions o;
  o.cell = gc.cell;
  o.hidden = 6;
  o.token_size = 6;  // max token min(5, 4) = 4: column 5 of W_ih is never used
  o.k = gc.k;
  o.with_replacement = gc.with_replacement;
  o.init_range = 0.4f;  // larger than the default so that the probabilities are not flat
  o.seed = 5;
  Controller c({5, 7, 4}, o);
  // Non-zero head biases, so that their gradients are checked off the initial point too.
  Rng brng(99);
  for (auto& [name, p] : c.parameters())
    if (name.find(".bias") != std::string::npos && name.rfind("decoders.", 0) == 0)
      for (int64_t i = 0; i < p->value.numel(); ++i)
        p->value.f32()[i] = static_cast<float>(brng.uniform(-0.3, 0.3));

  Rng rng(17);
  std::vector<Episode> eps;
  for (int i = 0; i < 4; ++i) eps.push_back(c.sample(rng));
  for (const auto& e : eps) EXPECT_NEAR(e.log_prob, c.log_prob(e), 1e-5);
  const std::vector<double> r = {1.0, 0.25, 0.7, 0.1};

  const double loss = c.backward(eps, r);
  EXPECT_NEAR(loss, reinforce_loss(c, eps, r), 1e-5);
  std::vector<std::vector<float>> grads;
  for (auto& [name, p] : c.parameters()) grads.push_back(p->grad.to_vector());

  const float h = 1e-2f;
  int k = 0, checked = 0;
  double max_abs = 0;
  for (auto& [name, p] : c.parameters()) {
    float* v = p->value.f32();
    for (int64_t i = 0; i < p->value.numel(); ++i) {
      const float keep = v[i];
      v[i] = keep + h;
      const double lp = reinforce_loss(c, eps, r);
      v[i] = keep - h;
      const double lm = reinforce_loss(c, eps, r);
      v[i] = keep;
      const double fd = (lp - lm) / (2.0 * h);
      EXPECT_NEAR(grads[k][i], fd, 2e-4 + 1e-2 * std::fabs(fd)) << name << "[" << i << "]";
      max_abs = std::max(max_abs, std::fabs(fd));
      ++checked;
    }
    ++k;
  }
  EXPECT_GE(checked, 196);  // every parameter entry (196 for the RNN, 400 for the LSTM)
  EXPECT_GT(max_abs, 1e-2);  // the check is not vacuous
  // The one-hot input embedding: only the columns of W_ih of used tokens get a gradient.
  std::set<int> used;
  for (const auto& e : eps) used.insert(e.tokens.begin(), e.tokens.end());
  const auto& gih = grads[0];
  for (int row = 0; row < int(gih.size()) / o.token_size; ++row)
    for (int col = 0; col < o.token_size; ++col)
      if (!used.count(col)) {
        EXPECT_EQ(gih[size_t(row) * o.token_size + col], 0.0f);
      }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ControllerGrad,
    ::testing::Values(GradCase{"lstm", 1, false}, GradCase{"lstm", 3, false},
                      GradCase{"lstm", 3, true}, GradCase{"rnn", 1, false},
                      GradCase{"rnn", 3, false}, GradCase{"rnn", 2, true}),
    [](const ::testing::TestParamInfo<GradCase>& i) {
      return i.param.cell + "_k" + std::to_string(i.param.k) +
             (i.param.with_replacement ? "_replace" : "_distinct");
    });

TEST(DrawLogProb, RenormalisedOrderedDraw) {
  // z = log(0.5, 0.3, 0.2): P(draw 1 then 0) = 0.3 * 0.5 / 0.7.
  const float z[3] = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  EXPECT_NEAR(draw_log_prob(z, 3, {1, 0}, false), std::log(0.3 * 0.5 / 0.7), 1e-6);
  EXPECT_NEAR(draw_log_prob(z, 3, {1, 1}, true), 2 * std::log(0.3), 1e-6);
  // Every ordered full permutation sums to one.
  std::vector<int32_t> perm = {0, 1, 2};
  double total = 0;
  do total += std::exp(draw_log_prob(z, 3, perm, false));
  while (std::next_permutation(perm.begin(), perm.end()));
  EXPECT_NEAR(total, 1.0, 1e-6);
  EXPECT_THROW(draw_log_prob(z, 3, {1, 1}, false), std::invalid_argument);
  EXPECT_THROW(draw_log_prob(z, 3, {3}, false), std::invalid_argument);
}

TEST(ControllerSampling, FrequenciesMatchLogProbOfOrderedDraws) {
  ControllerOptions o;
  o.hidden = 8;
  o.token_size = 1;  // a single token: every episode has the same distribution
  o.k = 2;
  o.init_range = 1.0f;
  Controller c({4}, o);
  Rng rng(2024);
  std::map<std::pair<int, int>, int> count;
  const int n = 20000;
  Episode first;
  for (int i = 0; i < n; ++i) {
    Episode e = c.sample(rng);
    if (i == 0) first = e;
    ++count[{e.draws[0][0], e.draws[0][1]}];
  }
  double total = 0;
  for (int a = 0; a < 4; ++a)
    for (int b = 0; b < 4; ++b) {
      if (a == b) continue;
      Episode e = first;
      e.draws = {{a, b}};
      e.filters = {{std::min(a, b), std::max(a, b)}};
      const double p = std::exp(c.log_prob(e));
      total += p;
      const double freq = double(count[{a, b}]) / n;
      EXPECT_NEAR(freq, p, 4.5 * std::sqrt(p * (1 - p) / n) + 1e-3) << a << "," << b;
    }
  EXPECT_NEAR(total, 1.0, 1e-5);
}

TEST(ControllerSampling, EpisodesAreWellFormedAndSeeded) {
  const std::vector<int> filters = {6, 9, 3, 12};
  for (bool repl : {false, true}) {
    ControllerOptions o;
    o.hidden = 16;
    o.token_size = 8;
    o.k = 3;
    o.with_replacement = repl;
    o.seed = 42;
    Controller c(filters, o);
    EXPECT_EQ(c.max_token(), 3);  // min(token_size - 1, min filters)
    Rng rng(1);
    bool repeated = false;
    std::set<int> tokens_seen;
    for (int it = 0; it < 200; ++it) {
      Episode e = c.sample(rng);
      ASSERT_EQ(e.tokens.size(), filters.size());
      ASSERT_EQ(e.filters.size(), filters.size());
      ASSERT_EQ(e.draws.size(), filters.size());
      for (size_t l = 0; l < filters.size(); ++l) {
        EXPECT_GE(e.tokens[l], 0);
        EXPECT_LE(e.tokens[l], 3);
        tokens_seen.insert(e.tokens[l]);
        const auto& f = e.filters[l];
        ASSERT_EQ(f.size(), 3u);
        EXPECT_TRUE(std::is_sorted(f.begin(), f.end()));
        for (int v : f) {
          EXPECT_GE(v, 0);
          EXPECT_LT(v, filters[l]);
        }
        auto d = e.draws[l];
        std::sort(d.begin(), d.end());
        EXPECT_EQ(d, f);
        const bool distinct = std::adjacent_find(f.begin(), f.end()) == f.end();
        if (!repl) {
          EXPECT_TRUE(distinct);
        }
        if (!distinct) repeated = true;
      }
      EXPECT_TRUE(std::isfinite(e.log_prob));
      EXPECT_LT(e.log_prob, 0.0);
    }
    EXPECT_EQ(tokens_seen.size(), 4u);
    if (repl) {
      EXPECT_TRUE(repeated);  // the 3-filter layer repeats often with k = 3
    }

    // Seeded determinism: same seeds, same episodes; another sampling seed, other episodes.
    Controller c2(filters, o);
    Rng a(77), b(77), other(78);
    bool differs = false;
    for (int it = 0; it < 10; ++it) {
      Episode ea = c.sample(a), eb = c2.sample(b), eo = c.sample(other);
      EXPECT_EQ(ea.tokens, eb.tokens);
      EXPECT_EQ(ea.filters, eb.filters);
      EXPECT_EQ(ea.draws, eb.draws);
      EXPECT_EQ(ea.log_prob, eb.log_prob);
      if (ea.tokens != eo.tokens || ea.draws != eo.draws) differs = true;
    }
    EXPECT_TRUE(differs);
  }
}

TEST(ControllerInit, UniformRangeZeroHeadBiasesAndSeed) {
  ControllerOptions o;  // defaults: lstm, hidden 512, token 256, init 0.1
  o.hidden = 64;
  Controller c({16, 32}, o);
  auto params = c.parameters();
  std::vector<std::string> names;
  for (auto& [name, p] : params) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"cell.weight_ih", "cell.weight_hh", "cell.bias_ih",
                                             "cell.bias_hh", "decoders.0.weight",
                                             "decoders.0.bias", "decoders.1.weight",
                                             "decoders.1.bias"}));
  EXPECT_EQ(params[0].second->value.shape(), (Shape{256, 256}));
  EXPECT_EQ(params[1].second->value.shape(), (Shape{256, 64}));
  EXPECT_EQ(params[6].second->value.shape(), (Shape{32, 64}));
  EXPECT_EQ(params[7].second->value.shape(), (Shape{32}));
  for (auto& [name, p] : params) {
    auto v = p->value.to_vector();
    const bool head_bias = name.rfind("decoders.", 0) == 0 && name.find(".bias") != std::string::npos;
    double max_abs = 0, sum = 0;
    for (float x : v) {
      EXPECT_GE(x, -0.1f) << name;
      EXPECT_LE(x, 0.1f) << name;
      max_abs = std::max(max_abs, double(std::fabs(x)));
      sum += x;
    }
    if (head_bias) {
      EXPECT_EQ(max_abs, 0.0) << name;
    } else {
      EXPECT_GT(max_abs, 0.09) << name;
      EXPECT_LT(std::fabs(sum / double(v.size())), 0.03) << name;
    }
  }
  // Seeded: the same seed gives the same parameters, another seed others.
  Controller same({16, 32}, o);
  o.seed = 1;
  Controller other({16, 32}, o);
  EXPECT_EQ(same.parameters()[1].second->value.to_vector(), params[1].second->value.to_vector());
  EXPECT_NE(other.parameters()[1].second->value.to_vector(), params[1].second->value.to_vector());
  // Probabilities: one softmax per layer.
  auto probs = c.probabilities({0, 5});
  ASSERT_EQ(probs.size(), 2u);
  EXPECT_EQ(probs[1].size(), 32u);
  for (const auto& p : probs) EXPECT_NEAR(std::accumulate(p.begin(), p.end(), 0.0), 1.0, 1e-5);
}

TEST(ControllerInit, RejectsBadArguments) {
  ControllerOptions o;
  o.hidden = 8;
  o.token_size = 8;
  EXPECT_THROW(Controller({}, o), std::invalid_argument);
  EXPECT_THROW(Controller({4, 0}, o), std::invalid_argument);
  o.k = 0;
  EXPECT_THROW(Controller({4, 8}, o), std::invalid_argument);
  // k above a layer's filters (without replacement): that layer draws all of them.
  o.k = 5;
  {
    Controller capped({4, 8}, o);
    Rng r(3);
    Episode e = capped.sample(r);
    EXPECT_EQ(e.filters[0], (std::vector<int32_t>{0, 1, 2, 3}));
    EXPECT_EQ(e.filters[1].size(), 5u);
    EXPECT_NEAR(capped.log_prob(e), e.log_prob, 1e-9);
  }
  o.with_replacement = true;
  EXPECT_NO_THROW(Controller({4, 8}, o));
  o.k = 1;
  o.cell = "gru";
  EXPECT_THROW(Controller({4, 8}, o), std::invalid_argument);
  o.cell = "lstm";
  Controller c({4, 8}, o);
  Rng rng(0);
  Episode e = c.sample(rng);
  EXPECT_THROW(c.update({e}, {1.0, 2.0}), std::invalid_argument);
  Episode bad = e;
  bad.tokens.pop_back();
  EXPECT_THROW(c.log_prob(bad), std::invalid_argument);
  bad = e;
  bad.draws[0] = {0, 1};
  EXPECT_THROW(c.log_prob(bad), std::invalid_argument);
}

// Toy bandit: one rewarded filter per layer; reward = the fraction of layers where it was
// chosen. With the correct REINFORCE sign the policy concentrates on the rewarded filters.
void run_bandit(const std::string& cell) {
  const std::vector<int> filters = {8, 16, 10};
  const std::vector<int> target = {3, 11, 7};
  ControllerOptions o;
  o.cell = cell;
  o.hidden = 64;
  o.seed = 3;
  Controller c(filters, o);
  Rng rng(123);
  // Fixed probe token sequences (the tokens are random in every episode).
  std::vector<std::vector<int32_t>> probes;
  for (int i = 0; i < 4; ++i) {
    std::vector<int32_t> t;
    for (size_t l = 0; l < filters.size(); ++l) t.push_back(int32_t(rng.below(c.max_token() + 1)));
    probes.push_back(t);
  }
  auto min_target_prob = [&]() {
    double m = 1;
    for (const auto& t : probes) {
      auto p = c.probabilities(t);
      for (size_t l = 0; l < filters.size(); ++l) m = std::min(m, double(p[l][target[l]]));
    }
    return m;
  };
  auto max_target_prob = [&]() {
    double m = 0;
    for (const auto& t : probes) {
      auto p = c.probabilities(t);
      for (size_t l = 0; l < filters.size(); ++l) m = std::max(m, double(p[l][target[l]]));
    }
    return m;
  };
  EXPECT_LT(max_target_prob(), 0.3);
  int updates = 0;
  double best = 0;
  for (; updates < 400; ++updates) {
    std::vector<Episode> eps;
    std::vector<double> r;
    for (int i = 0; i < 5; ++i) {
      eps.push_back(c.sample(rng));
      int hit = 0;
      for (size_t l = 0; l < filters.size(); ++l) hit += eps.back().filters[l][0] == target[l];
      r.push_back(double(hit) / double(filters.size()));
    }
    c.update(eps, r);
    if (updates % 10 == 9) {
      best = min_target_prob();
      if (best > 0.9) break;
    }
  }
  EXPECT_GT(best, 0.9) << cell << " after " << updates + 1 << " updates";
  EXPECT_EQ(c.adam_steps(), updates + 1);
  std::printf("[bandit %s] min p(target) %.3f after %d updates\n", cell.c_str(), best,
              updates + 1);
}

TEST(ControllerBandit, ConcentratesOnRewardedFiltersLstm) { run_bandit("lstm"); }
TEST(ControllerBandit, ConcentratesOnRewardedFiltersRnn) { run_bandit("rnn"); }

TEST(ControllerUpdate, ReturnsLossAndEqualRewardsGiveZeroGradient) {
  ControllerOptions o;
  o.hidden = 16;
  o.token_size = 8;
  o.k = 2;
  Controller c({5, 6}, o);
  Rng rng(4);
  std::vector<Episode> eps = {c.sample(rng), c.sample(rng), c.sample(rng)};
  const std::vector<double> r = {0.5, 1.0, 0.0};
  const double expected = reinforce_loss(c, eps, r);
  EXPECT_NEAR(c.update(eps, r), expected, 1e-6);
  EXPECT_EQ(c.adam_steps(), 1);
  c.backward(eps, {0.3, 0.3, 0.3});
  for (auto& [name, p] : c.parameters())
    for (float g : p->grad.to_vector()) EXPECT_EQ(g, 0.0f) << name;
}

TEST(ControllerState, RoundTripContinuesIdentically) {
  ControllerOptions o;
  o.hidden = 24;
  o.token_size = 16;
  o.k = 2;
  o.seed = 8;
  const std::vector<int> filters = {6, 10, 7};
  Controller a(filters, o);
  Rng rng(5);
  auto step = [&](Controller& c, Rng& g) {
    std::vector<Episode> eps;
    std::vector<double> r;
    for (int i = 0; i < 5; ++i) {
      eps.push_back(c.sample(g));
      r.push_back(double(eps.back().filters[0][0] + eps.back().filters[2][1]) / 16.0);
    }
    return c.update(eps, r);
  };
  for (int i = 0; i < 3; ++i) step(a, rng);
  auto st = a.state();
  // Names: parameters, Adam moments, step.
  std::set<std::string> names;
  for (const auto& [n, t] : st) {
    names.insert(n);
    EXPECT_EQ(t.device(), Device::CPU);
  }
  EXPECT_TRUE(names.count("cell.weight_ih"));
  EXPECT_TRUE(names.count("adam_m.decoders.2.bias"));
  EXPECT_TRUE(names.count("adam_v.cell.weight_hh"));
  EXPECT_TRUE(names.count("adam_step"));
  EXPECT_EQ(st.size(), 3 * a.parameters().size() + 1);

  ControllerOptions o2 = o;
  o2.seed = 1234;  // different initial parameters, overwritten by the load
  Controller b(filters, o2);
  b.load_state(st);
  EXPECT_EQ(b.adam_steps(), 3);
  Rng ra(99), rb(99);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(step(a, ra), step(b, rb));
  auto pa = a.parameters(), pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i)
    EXPECT_EQ(pa[i].second->value.to_vector(), pb[i].second->value.to_vector()) << pa[i].first;
  auto sa = a.state(), sb = b.state();
  for (size_t i = 0; i + 1 < sa.size(); ++i)
    EXPECT_EQ(sa[i].second.to_vector(), sb[i].second.to_vector()) << sa[i].first;

  // Missing or mis-shaped entries are refused without touching the controller.
  auto missing = st;
  missing.erase(missing.begin() + 3);
  EXPECT_THROW(b.load_state(missing), std::invalid_argument);
  auto wrong = st;
  wrong[0].second = Tensor({3, 3});
  EXPECT_THROW(b.load_state(wrong), std::invalid_argument);
  EXPECT_EQ(b.adam_steps(), 7);
}

}  // namespace
}  // namespace nns::rl
