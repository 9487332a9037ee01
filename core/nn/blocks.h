// Residual blocks of the zoo: ResNet's BasicBlock and MobileNetV2's InvertedResidual, with
// torchvision's attribute names.
#pragma once

#include <memory>

#include "core/nn/layers.h"

namespace nns::nn {

// out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); shortcut = downsample (1x1 conv
// + BN) when the shape changes, identity otherwise.
class BasicBlock : public Module {
 public:
  BasicBlock(int in_planes, int planes, int stride);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

  std::unique_ptr<Conv2d> conv1, conv2;
  std::unique_ptr<BatchNorm2d> bn1, bn2;
  std::unique_ptr<Activation> relu1;
  std::unique_ptr<Sequential> downsample;  // null for the identity shortcut

 private:
  Tensor sum_, out_, dsum_, dx_;
};

// MobileNetV2 inverted residual (torchvision layout of `conv`):
//   expand_ratio != 1: conv.0 = [1x1 conv, BN, ReLU6], conv.1 = [3x3 depthwise, BN, ReLU6],
//                      conv.2 = 1x1 conv, conv.3 = BN
//   expand_ratio == 1: conv.0 = [3x3 depthwise, BN, ReLU6], conv.1 = 1x1 conv, conv.2 = BN
// Residual connection when stride == 1 and inp == oup.
class InvertedResidual : public Module {
 public:
  InvertedResidual(int inp, int oup, int stride, int expand_ratio);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;

  std::unique_ptr<Sequential> conv;
  bool use_res_connect;

 private:
  int inp_, oup_, stride_, expand_;
  Tensor out_, dx_;
};

// [conv kxk (no bias), BN, ReLU6] as torchvision's Conv2dNormActivation ("0", "1", "2").
std::unique_ptr<Sequential> conv_bn_relu6(int inp, int oup, int kernel, int stride, int groups);

}  // namespace nns::nn
