// The layers of the zoo, each with explicit forward and backward over kernels/ops.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/nn/module.h"
#include "core/random.h"

namespace nns::nn {

// Conv2d: weight [C_out, C_in/groups, KH, KW], optional bias [C_out]. PyTorch semantics.
class Conv2d : public Module {
 public:
  Conv2d(int c_in, int c_out, int kernel, int stride = 1, int padding = 0, int groups = 1,
         bool bias = true);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

  // Weight gradients: all filters (default), none, or only the listed output filters.
  void set_weight_grad(WeightGrad mode, std::vector<int32_t> filters = {});
  // Initialisation: PyTorch's default (kaiming_uniform with a = sqrt(5), i.e.
  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias) or torchvision's
  // kaiming_normal(fan_out, relu) with zero bias.
  void init_default(Rng& rng);
  void init_kaiming_fan_out(Rng& rng);

  int c_in, c_out, kernel, stride, padding, groups;
  Parameter weight;
  Parameter bias;  // undefined when the layer has no bias
  bool has_bias;

 private:
  ops::Conv2dShape shape_for(const Tensor& x) const;
  Tensor input_, out_, dx_;
  WeightGrad wgrad_ = WeightGrad::All;
  std::vector<int32_t> filters_;
};

// Linear: weight [out, in], bias [out]. y = x W^T + b over the flattened trailing dims.
class Linear : public Module {
 public:
  Linear(int in, int out, bool bias = true);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  void set_weight_grad(WeightGrad mode, std::vector<int32_t> rows = {});
  void init_default(Rng& rng);

  int in, out;
  Parameter weight, bias;
  bool has_bias;

 private:
  Tensor input_, out_, dx_;
  WeightGrad wgrad_ = WeightGrad::All;
  std::vector<int32_t> rows_;
};

// BatchNorm2d (also fine for [N, C] inputs): eps 1e-5, momentum 0.1; running statistics and
// num_batches_tracked (I64, shape []) as buffers.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int c, float eps = 1e-5f, float momentum = 0.1f);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  // Whether backward computes gamma/beta gradients (off while obfuscating).
  void set_param_grad(bool v) { param_grad_ = v; }

  int c;
  float eps, momentum;
  Parameter weight, bias;
  Tensor running_mean, running_var, num_batches_tracked;

 private:
  Tensor input_, out_, dx_, save_mean_, save_invstd_;
  bool forward_was_training_ = true;
  bool param_grad_ = true;
};

// ReLU or ReLU6 (element-wise, backward from the output).
class Activation : public Module {
 public:
  explicit Activation(ops::Activation act) : act_(act) {}
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  ops::Activation act_;
  Tensor out_, dx_;
};

class MaxPool2d : public Module {
 public:
  MaxPool2d(int kernel, int stride, int padding = 0)
      : kernel_(kernel), stride_(stride), padding_(padding) {}
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  ops::Pool2dShape shape_;
  Tensor out_, dx_, argmax_;
  int kernel_, stride_, padding_;
};

class AvgPool2d : public Module {
 public:
  AvgPool2d(int kernel, int stride, int padding = 0)
      : kernel_(kernel), stride_(stride), padding_(padding) {}
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

 private:
  ops::Pool2dShape shape_;
  Tensor out_, dx_;
  int kernel_, stride_, padding_;
};

// AdaptiveAvgPool2d(1) followed by flatten: [N, C, H, W] -> [N, C] (PyTorch's
// avgpool + torch.flatten(x, 1) in ResNet/VGG, and MobileNetV2's mean over H x W).
class GlobalAvgPoolFlatten : public Module {
 public:
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override { return "AdaptiveAvgPool2d(1)+flatten"; }

 private:
  Shape in_shape_;
  Tensor out_, dx_;
};

// flatten(x, 1): a view [N, C*H*W]; backward views dy back.
class Flatten : public Module {
 public:
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override { return "Flatten"; }

 private:
  Shape in_shape_;
  Tensor out_, dx_;
};

// Dropout with a counter-based mask (same on CPU and CUDA for the same seed); identity in eval.
class Dropout : public Module {
 public:
  explicit Dropout(float p, uint64_t seed = 0x5eed) : p_(p), seed_(seed) {}
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  // Forces identity even in training mode (used to compare with PyTorch fixtures).
  void set_enabled(bool v) { enabled_ = v; }
  void reseed(uint64_t seed) { seed_ = seed; calls_ = 0; }

 private:
  float p_;
  uint64_t seed_;
  uint64_t calls_ = 0;
  bool enabled_ = true;
  bool active_ = false;  // whether the last forward applied a mask
  Tensor out_, dx_, mask_;
};

}  // namespace nns::nn
