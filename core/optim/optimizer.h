// Optimizers over named parameters (PyTorch semantics) and learning-rate schedules.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/nn/module.h"

namespace nns::optim {

using ParamList = std::vector<std::pair<std::string, nn::Parameter*>>;

class Optimizer {
 public:
  explicit Optimizer(ParamList params, float lr) : params_(std::move(params)), lr_(lr) {}
  virtual ~Optimizer() = default;
  // One update from the parameters' current gradients.
  virtual void step() = 0;
  void zero_grad();
  void set_lr(float lr) { lr_ = lr; }
  float lr() const { return lr_; }
  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }
  // Internal buffers (momentum, Adam moments) by name, for checkpoints.
  virtual std::vector<std::pair<std::string, Tensor*>> state() = 0;

 protected:
  ParamList params_;
  float lr_;
  int64_t t_ = 0;
};

struct SgdOptions {
  float lr = 0.1f, momentum = 0.9f, weight_decay = 5e-4f;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(ParamList params, SgdOptions o);
  void step() override;
  std::vector<std::pair<std::string, Tensor*>> state() override;

 private:
  SgdOptions o_;
  std::vector<Tensor> buf_;
};

struct AdamOptions {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
};

class Adam : public Optimizer {
 public:
  Adam(ParamList params, AdamOptions o);
  void step() override;
  std::vector<std::pair<std::string, Tensor*>> state() override;

 private:
  AdamOptions o_;
  std::vector<Tensor> m_, v_;
};

// Learning rate at a given step: "constant", "cosine" (to 0 over total_steps, per step, like
// CosineAnnealingLR stepped per iteration), or "step" (multiplied by gamma every step_size
// steps).
struct Schedule {
  std::string kind = "cosine";
  int64_t total_steps = 1;
  int64_t step_size = 1;
  float gamma = 0.1f;
  int64_t warmup_steps = 0;  // linear warm-up from 0 (0 = none)
  float lr_at(float base_lr, int64_t step) const;
};

// "sgd" or "adam" with the given base lr (other settings default); invalid name throws.
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, ParamList params, float lr,
                                          float weight_decay, float momentum, bool nesterov);

}  // namespace nns::optim
