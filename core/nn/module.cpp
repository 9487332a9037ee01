#include "core/nn/module.h"

#include <stdexcept>

namespace nns::nn {

void Parameter::ensure_grad() {
  if (!grad.defined() || grad.shape() != value.shape() || grad.device() != value.device())
    grad = Tensor(value.shape(), DType::F32, value.device());
}

void Module::set_training(bool training) {
  training_ = training;
  for (auto& [name, child] : children_) child->set_training(training);
}

void Module::to(Device device) {
  for (auto& [name, p] : params_) {
    if (p->value.defined() && p->value.device() != device) p->value = p->value.to(device);
    if (p->grad.defined() && p->grad.device() != device) p->grad = p->grad.to(device);
  }
  for (auto& [name, t] : buffers_)
    if (t->defined() && t->device() != device) *t = t->to(device);
  for (auto& [name, child] : children_) child->to(device);
  device_ = device;
}

void Module::collect_state(const std::string& prefix, std::vector<StateEntry>& out) {
  for (auto& [name, p] : params_) out.push_back({prefix + name, &p->value, p});
  for (auto& [name, t] : buffers_) out.push_back({prefix + name, t, nullptr});
  for (auto& [name, child] : children_) child->collect_state(prefix + name + ".", out);
}

void Module::collect_modules(const std::string& prefix,
                             std::vector<std::pair<std::string, Module*>>& out) {
  for (auto& [name, child] : children_) {
    std::string full = prefix.empty() ? name : prefix + "." + name;
    out.emplace_back(full, child);
    child->collect_modules(full, out);
  }
}

void Module::register_parameter(const std::string& name, Parameter* p) {
  params_.emplace_back(name, p);
}
void Module::register_buffer(const std::string& name, Tensor* t) { buffers_.emplace_back(name, t); }
void Module::register_module(const std::string& name, Module* m) {
  for (auto& [n, c] : children_)
    if (n == name) throw std::logic_error("duplicate child module name '" + name + "'");
  children_.emplace_back(name, m);
}

const Tensor& Sequential::forward(const Tensor& x) {
  const Tensor* cur = &x;
  for (auto& m : owned_) cur = &m->forward(*cur);
  return *cur;
}

const Tensor& Sequential::backward(const Tensor& dy) {
  const Tensor* cur = &dy;
  for (size_t i = owned_.size(); i-- > 0;) cur = &owned_[i]->backward(*cur);
  return *cur;
}

}  // namespace nns::nn
