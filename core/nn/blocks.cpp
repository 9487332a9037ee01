#include "core/nn/blocks.h"

namespace nns::nn {

namespace {
void ensure_like(Tensor& t, const Tensor& like) {
  if (!t.defined() || t.device() != like.device())
    t = Tensor(like.shape(), DType::F32, like.device());
  else if (t.shape() != like.shape())
    t.resize(like.shape());
}
}  // namespace

BasicBlock::BasicBlock(int in_planes, int planes, int stride) {
  conv1 = std::make_unique<Conv2d>(in_planes, planes, 3, stride, 1, 1, false);
  bn1 = std::make_unique<BatchNorm2d>(planes);
  relu1 = std::make_unique<Activation>(ops::Activation::ReLU);
  conv2 = std::make_unique<Conv2d>(planes, planes, 3, 1, 1, 1, false);
  bn2 = std::make_unique<BatchNorm2d>(planes);
  register_module("conv1", conv1.get());
  register_module("bn1", bn1.get());
  register_module("relu", relu1.get());
  register_module("conv2", conv2.get());
  register_module("bn2", bn2.get());
  if (stride != 1 || in_planes != planes) {
    downsample = std::make_unique<Sequential>();
    downsample->add("0", std::make_unique<Conv2d>(in_planes, planes, 1, stride, 0, 1, false));
    downsample->add("1", std::make_unique<BatchNorm2d>(planes));
    register_module("downsample", downsample.get());
  }
}

std::string BasicBlock::describe() const {
  return downsample ? "BasicBlock(downsample)" : "BasicBlock";
}

const Tensor& BasicBlock::forward(const Tensor& x) {
  const Tensor& a = bn2->forward(conv2->forward(relu1->forward(bn1->forward(conv1->forward(x)))));
  const Tensor& sc = downsample ? downsample->forward(x) : x;
  ensure_like(out_, a);
  ops::add(ctx(), a.numel(), a.f32(), sc.f32(), out_.f32());
  ops::activation_forward(ctx(), ops::Activation::ReLU, out_.numel(), out_.f32(), out_.f32());
  return out_;
}

const Tensor& BasicBlock::backward(const Tensor& dy) {
  ensure_like(dsum_, out_);
  ops::activation_backward(ctx(), ops::Activation::ReLU, dy.numel(), out_.f32(), dy.f32(),
                           dsum_.f32());
  const Tensor& dmain =
      conv1->backward(bn1->backward(relu1->backward(conv2->backward(bn2->backward(dsum_)))));
  const Tensor& dsc = downsample ? downsample->backward(dsum_) : dsum_;
  if (!needs_input_grad_) return dx_;
  ensure_like(dx_, dmain);
  ops::add(ctx(), dmain.numel(), dmain.f32(), dsc.f32(), dx_.f32());
  return dx_;
}

std::unique_ptr<Sequential> conv_bn_relu6(int inp, int oup, int kernel, int stride, int groups) {
  auto s = std::make_unique<Sequential>();
  s->add("0", std::make_unique<Conv2d>(inp, oup, kernel, stride, (kernel - 1) / 2, groups, false));
  s->add("1", std::make_unique<BatchNorm2d>(oup));
  s->add("2", std::make_unique<Activation>(ops::Activation::ReLU6));
  return s;
}

InvertedResidual::InvertedResidual(int inp, int oup, int stride, int expand_ratio)
    : inp_(inp), oup_(oup), stride_(stride), expand_(expand_ratio) {
  int hidden = inp * expand_ratio;
  use_res_connect = stride == 1 && inp == oup;
  conv = std::make_unique<Sequential>();
  int i = 0;
  if (expand_ratio != 1) conv->add(std::to_string(i++), conv_bn_relu6(inp, hidden, 1, 1, 1));
  conv->add(std::to_string(i++), conv_bn_relu6(hidden, hidden, 3, stride, hidden));
  conv->add(std::to_string(i++), std::make_unique<Conv2d>(hidden, oup, 1, 1, 0, 1, false));
  conv->add(std::to_string(i++), std::make_unique<BatchNorm2d>(oup));
  register_module("conv", conv.get());
}

std::string InvertedResidual::describe() const {
  return "InvertedResidual(" + std::to_string(inp_) + "->" + std::to_string(oup_) +
         ", s=" + std::to_string(stride_) + ", t=" + std::to_string(expand_) + ")";
}

const Tensor& InvertedResidual::forward(const Tensor& x) {
  const Tensor& y = conv->forward(x);
  if (!use_res_connect) return y;
  ensure_like(out_, y);
  ops::add(ctx(), y.numel(), y.f32(), x.f32(), out_.f32());
  return out_;
}

const Tensor& InvertedResidual::backward(const Tensor& dy) {
  const Tensor& d = conv->backward(dy);
  if (!use_res_connect) return d;
  ensure_like(dx_, d);
  ops::add(ctx(), d.numel(), d.f32(), dy.f32(), dx_.f32());
  return dx_;
}

}  // namespace nns::nn
