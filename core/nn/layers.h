// The layers of the zoo, each with explicit forward and backward over kernels/ops.h.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/nn/module.h"
#include "core/random.h"

namespace nns::nn {

// The geometry of a convolution beyond the zoo's square kernels (models read from ONNX):
// kernel, stride, symmetric padding and dilation per axis.
struct ConvGeometry {
  int kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  int groups = 1;
  bool bias = true;
};

// Conv2d: weight [C_out, C_in/groups, KH, KW], optional bias [C_out]. PyTorch semantics.
// A dilated convolution runs as the dense convolution of its kernel expanded with zeros
// ((K - 1) * dilation + 1 taps per axis, rebuilt from the weight at every forward); its weight
// gradient is read back from the dense one (all filters: with set_weight_grad(Subset) the rows
// of unlisted filters hold whatever the dense gradient had).
class Conv2d : public Module {
 public:
  Conv2d(int c_in, int c_out, int kernel, int stride = 1, int padding = 0, int groups = 1,
         bool bias = true);
  Conv2d(int c_in, int c_out, const ConvGeometry& g);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

  // Weight gradients: all filters (default), none, or only the listed output filters.
  void set_weight_grad(WeightGrad mode, std::vector<int32_t> filters = {});
  WeightGrad weight_grad() const { return wgrad_; }
  const std::vector<int32_t>& weight_grad_filters() const { return filters_; }
  // Initialisation: PyTorch's default (kaiming_uniform with a = sqrt(5), i.e.
  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias) or torchvision's
  // kaiming_normal(fan_out, relu) with zero bias.
  void init_default(Rng& rng);
  void init_kaiming_fan_out(Rng& rng);
  // Folds a frozen (eval-mode) BatchNorm and an activation into this convolution's epilogue:
  // y = act(scale * (conv + bias) + shift). scale/shift [C_out] on this layer's device.
  // Backward then goes through the epilogue (ops::epilogue_backward). unfold() undoes it.
  void fold(Tensor scale, Tensor shift, ops::Activation act);
  void unfold();
  bool folded() const { return folded_; }

  // Called after the forward computes its output (before anything downstream sees it), with the
  // input and the output to adjust in place. Split inference subtracts the secure side's
  // correction here. Not part of backward.
  std::function<void(const Tensor& input, Tensor& output)> post_forward;

  bool dilated() const { return dil_h != 1 || dil_w != 1; }
  // The convolution the kernels run for input x (a dilated one: its dense expansion).
  ops::Conv2dShape shape_for(const Tensor& x) const;

  int c_in, c_out;
  int kernel, stride, padding;  // the zoo's square view: kh, stride_h, pad_h
  int groups;
  int kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h = 1, dil_w = 1;
  Parameter weight;
  Parameter bias;  // undefined when the layer has no bias
  bool has_bias;

 private:
  void expand_dilated();  // dense_w_ = the weight spread over the dilated taps
  Tensor input_, out_, dx_, dacc_;
  Tensor dense_w_, dense_grad_, dense_index_;  // dilated convolutions only
  WeightGrad wgrad_ = WeightGrad::All;
  std::vector<int32_t> filters_;
  Tensor filters_dev_;  // filters_ on the layer's device (ops take device pointers)
  bool folded_ = false;
  Tensor fold_scale_, fold_shift_;
  ops::Activation fold_act_ = ops::Activation::None;
};

// Linear: weight [out, in], bias [out]. y = x W^T + b over the flattened trailing dims.
class Linear : public Module {
 public:
  Linear(int in, int out, bool bias = true);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  void set_weight_grad(WeightGrad mode, std::vector<int32_t> rows = {});
  WeightGrad weight_grad() const { return wgrad_; }
  const std::vector<int32_t>& weight_grad_rows() const { return rows_; }
  void init_default(Rng& rng);

  // See Conv2d::post_forward.
  std::function<void(const Tensor& input, Tensor& output)> post_forward;

  int in, out;
  Parameter weight, bias;
  bool has_bias;

 private:
  Tensor input_, out_, dx_;
  WeightGrad wgrad_ = WeightGrad::All;
  std::vector<int32_t> rows_;
  Tensor rows_dev_;  // rows_ on the layer's device
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
  bool param_grad() const { return param_grad_; }
  // Identity in forward and backward (its transform was folded into the preceding conv).
  void set_bypass(bool v) { bypass_ = v; }
  bool bypassed() const { return bypass_; }
  // Whether a training-mode forward updates running_mean/var and num_batches_tracked (off: it
  // normalises with the batch's statistics and leaves every buffer as it is; the obfuscation's
  // batch-statistics mode, splitter.bn_stats: batch).
  void set_track_stats(bool v) { track_stats_ = v; }
  bool tracks_stats() const { return track_stats_; }

  int c;
  float eps, momentum;
  Parameter weight, bias;
  Tensor running_mean, running_var, num_batches_tracked;

 private:
  Tensor input_, out_, dx_, save_mean_, save_invstd_;
  bool forward_was_training_ = true;
  bool param_grad_ = true;
  bool bypass_ = false;
  bool track_stats_ = true;
};

// ReLU or ReLU6 (element-wise, backward from the output).
class Activation : public Module {
 public:
  explicit Activation(ops::Activation act) : act_(act) {}
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  ops::Activation kind() const { return act_; }
  // Identity in forward and backward (folded into the preceding conv's epilogue).
  void set_bypass(bool v) { bypass_ = v; }

 private:
  ops::Activation act_;
  bool bypass_ = false;
  Tensor out_, dx_;
};

class MaxPool2d : public Module {
 public:
  MaxPool2d(int kernel, int stride, int padding = 0)
      : kernel_(kernel), stride_(stride), padding_(padding) {}
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  int kernel() const { return kernel_; }
  int stride() const { return stride_; }
  int padding() const { return padding_; }

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
  int kernel() const { return kernel_; }
  int stride() const { return stride_; }
  int padding() const { return padding_; }

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
  float p() const { return p_; }
  bool enabled() const { return enabled_; }
  // Whether a forward now applies a mask (training, enabled, p > 0), and the seed of the next
  // forward's mask (advances the sequence as forward does: an execution plan running this
  // layer draws the same masks).
  bool active() const { return training_ && enabled_ && p_ > 0.0f; }
  uint64_t next_seed();

 private:
  float p_;
  uint64_t seed_;
  uint64_t calls_ = 0;
  bool enabled_ = true;
  bool active_ = false;  // whether the last forward applied a mask
  Tensor out_, dx_, mask_;
};

}  // namespace nns::nn

namespace nns::nn {
// Folds every eval-mode BatchNorm (and a directly following ReLU/ReLU6) into the convolution
// that feeds it, across the whole tree: conv -> BN [-> act] in a Sequential, and
// conv1/bn1/relu, conv2/bn2 in a BasicBlock. Valid while BN statistics and parameters are
// frozen (eval mode). Returns the number of folded convolutions.
int fold_batchnorm(Module& root);
void unfold_batchnorm(Module& root);
// Folds one frozen BatchNorm and the activation `act` after it into `conv` (the BN is bypassed;
// the caller bypasses the activation). False when either is already folded.
bool fold_conv_bn(Conv2d& conv, BatchNorm2d& bn, ops::Activation act);
}  // namespace nns::nn
