// Module: a layer or a tree of layers with explicit forward and backward passes, and a
// registry of named parameters and buffers that yields PyTorch state_dict keys.
//
// forward(x) returns a reference to the module's own output buffer (reused across batches);
// the caller must keep x alive and unchanged until backward. backward(dy) fills the parameters'
// gradients and returns a reference to dx (the gradient w.r.t. the last forward input).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "kernels/ops.h"

namespace nns::nn {

struct Parameter {
  Tensor value;
  Tensor grad;  // same shape as value; allocated on first use
  void ensure_grad();
};

// One entry of the state dict: a parameter (param != nullptr) or a buffer.
struct StateEntry {
  std::string key;
  Tensor* tensor = nullptr;
  Parameter* param = nullptr;
};

// Which weight gradients a layer computes in backward (the obfuscator needs only a few filters).
enum class WeightGrad { All, None, Subset };

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  virtual const Tensor& forward(const Tensor& x) = 0;
  virtual const Tensor& backward(const Tensor& dy) = 0;
  // Short type name for `info`, e.g. "Conv2d(16, 32, k=3, s=2, p=1)".
  virtual std::string describe() const = 0;

  // Recursive. Training mode: BatchNorm uses batch statistics, dropout is active.
  virtual void set_training(bool training);
  bool training() const { return training_; }
  // Moves every parameter and buffer, recursively. (Virtual: graph::GraphNet re-shares the
  // tensors that several of its layers use.)
  virtual void to(Device device);
  Device device() const { return device_; }
  // When false, backward need not compute dx (the stem of a network). Default true.
  void set_needs_input_grad(bool v) { needs_input_grad_ = v; }

  // PyTorch order: own parameters, own buffers, then children in registration order.
  // (Virtual: graph::GraphNet lists its layers' tensors under the names of the file it was
  // read from.)
  virtual void collect_state(const std::string& prefix, std::vector<StateEntry>& out);
  void collect_modules(const std::string& prefix,
                       std::vector<std::pair<std::string, Module*>>& out);
  const std::vector<std::pair<std::string, Module*>>& children() const { return children_; }

 protected:
  void register_parameter(const std::string& name, Parameter* p);
  void register_buffer(const std::string& name, Tensor* t);
  void register_module(const std::string& name, Module* m);
  ops::Context ctx() const { return ops::Context{device_, nullptr}; }

  bool training_ = true;
  bool needs_input_grad_ = true;
  Device device_ = Device::CPU;

 private:
  std::vector<std::pair<std::string, Parameter*>> params_;
  std::vector<std::pair<std::string, Tensor*>> buffers_;
  std::vector<std::pair<std::string, Module*>> children_;
};

// Children owned and run in order; names are the PyTorch attribute names ("0", "conv1", ...).
class Sequential : public Module {
 public:
  Sequential() = default;
  // Adds a child; returns a typed pointer to it.
  template <class M>
  M* add(const std::string& name, std::unique_ptr<M> m) {
    M* raw = m.get();
    register_module(name, raw);
    owned_.push_back(std::move(m));
    return raw;
  }
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override { return "Sequential"; }
  size_t size() const { return owned_.size(); }
  Module* at(size_t i) { return owned_[i].get(); }

 private:
  std::vector<std::unique_ptr<Module>> owned_;
};

}  // namespace nns::nn
