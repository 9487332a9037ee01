#include "core/optim/optimizer.h"

#include <cmath>
#include <stdexcept>

namespace nns::optim {

void Optimizer::zero_grad() {
  for (auto& [name, p] : params_)
    if (p->grad.defined()) p->grad.zero();
}

SGD::SGD(ParamList params, SgdOptions o) : Optimizer(std::move(params), o.lr), o_(o) {
  for (auto& [name, p] : params_) buf_.emplace_back(p->value.shape(), DType::F32, p->value.device());
}

void SGD::step() {
  bool first = t_ == 0;
  ++t_;
  for (size_t i = 0; i < params_.size(); ++i) {
    nn::Parameter* p = params_[i].second;
    if (!p->grad.defined()) continue;
    ops::Context ctx{p->value.device(), nullptr};
    ops::sgd_update(ctx, p->value.numel(), p->value.f32(), p->grad.f32(), buf_[i].f32(), lr_,
                    o_.momentum, o_.weight_decay, o_.nesterov, first);
  }
}

Adam::Adam(ParamList params, AdamOptions o) : Optimizer(std::move(params), o.lr), o_(o) {
  for (auto& [name, p] : params_) {
    m_.emplace_back(p->value.shape(), DType::F32, p->value.device());
    v_.emplace_back(p->value.shape(), DType::F32, p->value.device());
  }
}

void Adam::step() {
  ++t_;
  for (size_t i = 0; i < params_.size(); ++i) {
    nn::Parameter* p = params_[i].second;
    if (!p->grad.defined()) continue;
    ops::Context ctx{p->value.device(), nullptr};
    ops::adam_update(ctx, p->value.numel(), p->value.f32(), p->grad.f32(), m_[i].f32(),
                     v_[i].f32(), lr_, o_.beta1, o_.beta2, o_.eps, o_.weight_decay, t_);
  }
}

std::vector<std::pair<std::string, Tensor*>> SGD::state() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (size_t i = 0; i < params_.size(); ++i)
    out.emplace_back("momentum." + params_[i].first, &buf_[i]);
  return out;
}

std::vector<std::pair<std::string, Tensor*>> Adam::state() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out.emplace_back("adam_m." + params_[i].first, &m_[i]);
    out.emplace_back("adam_v." + params_[i].first, &v_[i]);
  }
  return out;
}

float Schedule::lr_at(float base_lr, int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps)
    return base_lr * float(step + 1) / float(warmup_steps);
  if (kind == "constant") return base_lr;
  if (kind == "cosine") {
    double t = double(step - warmup_steps) / double(std::max<int64_t>(1, total_steps - warmup_steps));
    if (t > 1) t = 1;
    return float(0.5 * base_lr * (1.0 + std::cos(M_PI * t)));
  }
  if (kind == "step") {
    int64_t k = step / std::max<int64_t>(1, step_size);
    return float(base_lr * std::pow(double(gamma), double(k)));
  }
  throw std::invalid_argument("unknown schedule '" + kind + "' (expected constant, cosine, step)");
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, ParamList params, float lr,
                                          float weight_decay, float momentum, bool nesterov) {
  if (name == "sgd") {
    SgdOptions o;
    o.lr = lr;
    o.weight_decay = weight_decay;
    o.momentum = momentum;
    o.nesterov = nesterov;
    return std::make_unique<SGD>(std::move(params), o);
  }
  if (name == "adam") {
    AdamOptions o;
    o.lr = lr;
    o.weight_decay = weight_decay;
    return std::make_unique<Adam>(std::move(params), o);
  }
  throw std::invalid_argument("unknown optimizer '" + name + "' (expected sgd or adam)");
}

}  // namespace nns::optim
