// Optimizers and schedules against hand-computed PyTorch formulas.
#include <gtest/gtest.h>

#include <cmath>

#include "core/optim/optimizer.h"

using namespace nns;

namespace {

struct OneParam {
  nn::Parameter p;
  OneParam() {
    p.value = Tensor::from_vector({1.0f, -2.0f, 0.5f}, {3});
    p.ensure_grad();
  }
  optim::ParamList list() { return {{"w", &p}}; }
  void set_grad(std::vector<float> g) { std::copy(g.begin(), g.end(), p.grad.f32()); }
};

TEST(Optim, SgdNesterovWithWeightDecayMatchesPyTorchFormula) {
  OneParam o;
  optim::SgdOptions so;
  so.lr = 0.1f;
  so.momentum = 0.9f;
  so.weight_decay = 0.01f;
  so.nesterov = true;
  optim::SGD sgd(o.list(), so);
  double w[3] = {1.0, -2.0, 0.5}, buf[3] = {0, 0, 0};
  std::vector<std::vector<float>> grads = {{0.3f, -0.1f, 0.2f}, {0.1f, 0.4f, -0.5f}, {-0.2f, 0.0f, 0.1f}};
  for (size_t step = 0; step < grads.size(); ++step) {
    o.set_grad(grads[step]);
    sgd.step();
    for (int i = 0; i < 3; ++i) {
      double g = grads[step][i] + 0.01 * w[i];
      buf[i] = step == 0 ? g : 0.9 * buf[i] + g;
      w[i] -= 0.1 * (g + 0.9 * buf[i]);
      EXPECT_NEAR(o.p.value.f32()[i], w[i], 1e-6) << "step " << step << " i " << i;
    }
  }
}

TEST(Optim, AdamMatchesPyTorchFormula) {
  OneParam o;
  optim::AdamOptions ao;
  ao.lr = 0.05f;
  optim::Adam adam(o.list(), ao);
  double w[3] = {1.0, -2.0, 0.5}, m[3] = {0, 0, 0}, v[3] = {0, 0, 0};
  std::vector<std::vector<float>> grads = {{0.3f, -0.1f, 0.2f}, {0.1f, 0.4f, -0.5f}, {-0.2f, 0.0f, 0.1f}};
  for (size_t step = 0; step < grads.size(); ++step) {
    o.set_grad(grads[step]);
    adam.step();
    int t = int(step) + 1;
    for (int i = 0; i < 3; ++i) {
      double g = grads[step][i];
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.999 * v[i] + 0.001 * g * g;
      double mh = m[i] / (1 - std::pow(0.9, t)), vh = v[i] / (1 - std::pow(0.999, t));
      w[i] -= 0.05 * mh / (std::sqrt(vh) + 1e-8);
      EXPECT_NEAR(o.p.value.f32()[i], w[i], 1e-5) << "step " << step << " i " << i;
    }
  }
  EXPECT_EQ(adam.state().size(), 2u);
}

TEST(Optim, ZeroGradClears) {
  OneParam o;
  o.set_grad({1, 2, 3});
  optim::SGD sgd(o.list(), {});
  sgd.zero_grad();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(o.p.grad.f32()[i], 0.0f);
}

TEST(Schedule, CosineStepConstantAndWarmup) {
  optim::Schedule s;
  s.kind = "cosine";
  s.total_steps = 100;
  EXPECT_FLOAT_EQ(s.lr_at(0.1f, 0), 0.1f);
  EXPECT_NEAR(s.lr_at(0.1f, 50), 0.05f, 1e-7);
  EXPECT_NEAR(s.lr_at(0.1f, 100), 0.0f, 1e-7);
  s.kind = "step";
  s.step_size = 30;
  s.gamma = 0.1f;
  EXPECT_FLOAT_EQ(s.lr_at(1.0f, 29), 1.0f);
  EXPECT_FLOAT_EQ(s.lr_at(1.0f, 30), 0.1f);
  EXPECT_NEAR(s.lr_at(1.0f, 65), 0.01f, 1e-8);
  s.kind = "constant";
  EXPECT_FLOAT_EQ(s.lr_at(0.3f, 1000), 0.3f);
  s.warmup_steps = 10;
  EXPECT_FLOAT_EQ(s.lr_at(1.0f, 4), 0.5f);
  s.kind = "linear";
  EXPECT_THROW(s.lr_at(1.0f, 20), std::invalid_argument);
  EXPECT_THROW(optim::make_optimizer("rmsprop", {}, 0.1f, 0, 0, false), std::invalid_argument);
}

}  // namespace
