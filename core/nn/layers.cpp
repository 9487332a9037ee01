#include "core/nn/layers.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

namespace nns::nn {

namespace {
void require_ndim(const Tensor& x, int nd, const char* who) {
  if (x.ndim() != nd)
    throw std::invalid_argument(std::string(who) + ": expected a " + std::to_string(nd) +
                                "-d input, got " + shape_str(x.shape()));
}
void ensure(Tensor& t, const Shape& shape, Device dev, DType dt = DType::F32) {
  if (!t.defined() || t.device() != dev || t.dtype() != dt)
    t = Tensor(shape, dt, dev);
  else if (t.shape() != shape)
    t.resize(shape);
}
void uniform_fill(Tensor& t, Rng& rng, double bound) {
  Tensor cpu(t.shape());
  float* p = cpu.f32();
  for (int64_t i = 0; i < cpu.numel(); ++i) p[i] = static_cast<float>(rng.uniform(-bound, bound));
  t.copy_from(cpu);
}
// The ops take every pointer on the op's device, index lists included: `cache` holds `list`
// there, uploaded once per set_weight_grad (which resets it) and device.
const int32_t* device_list(const std::vector<int32_t>& list, Tensor& cache, Device dev) {
  if (!cache.defined() || cache.device() != dev) {
    Tensor host({int64_t(list.size())}, DType::I32);
    std::copy(list.begin(), list.end(), host.i32());
    cache = host.to(dev);
  }
  return cache.i32();
}
}  // namespace

// ------------------------------------------------------------------------------------- Conv2d
Conv2d::Conv2d(int c_in_, int c_out_, int kernel_, int stride_, int padding_, int groups_,
               bool bias_)
    : Conv2d(c_in_, c_out_,
             ConvGeometry{kernel_, kernel_, stride_, stride_, padding_, padding_, 1, 1, groups_,
                          bias_}) {}

Conv2d::Conv2d(int c_in_, int c_out_, const ConvGeometry& g)
    : c_in(c_in_), c_out(c_out_), kernel(g.kh), stride(g.stride_h), padding(g.pad_h),
      groups(g.groups), kh(g.kh), kw(g.kw), stride_h(g.stride_h), stride_w(g.stride_w),
      pad_h(g.pad_h), pad_w(g.pad_w), dil_h(g.dil_h), dil_w(g.dil_w), has_bias(g.bias) {
  if (groups < 1 || c_in % groups || c_out % groups)
    throw std::invalid_argument("Conv2d: channels not divisible by groups");
  if (kh < 1 || kw < 1 || stride_h < 1 || stride_w < 1 || pad_h < 0 || pad_w < 0 || dil_h < 1 ||
      dil_w < 1)
    throw std::invalid_argument("Conv2d: kernel, stride and dilation must be >= 1, padding >= 0");
  weight.value = Tensor({c_out, c_in / groups, kh, kw});
  register_parameter("weight", &weight);
  if (has_bias) {
    bias.value = Tensor({c_out});
    register_parameter("bias", &bias);
  }
}

std::string Conv2d::describe() const {
  std::ostringstream o;
  auto pair = [&](int a, int b) {
    if (a == b) return std::to_string(a);
    return std::to_string(a) + "x" + std::to_string(b);
  };
  o << "Conv2d(" << c_in << ", " << c_out << ", k=" << pair(kh, kw) << ", s="
    << pair(stride_h, stride_w) << ", p=" << pair(pad_h, pad_w);
  if (dilated()) o << ", d=" << pair(dil_h, dil_w);
  if (groups != 1) o << ", groups=" << groups;
  if (!has_bias) o << ", bias=False";
  o << ")";
  return o.str();
}

void Conv2d::init_default(Rng& rng) {
  double bound = 1.0 / std::sqrt(double(c_in / groups) * kh * kw);
  uniform_fill(weight.value, rng, bound);
  if (has_bias) uniform_fill(bias.value, rng, bound);
}

void Conv2d::init_kaiming_fan_out(Rng& rng) {
  double fan_out = double(c_out) * kh * kw / groups;
  double std = std::sqrt(2.0 / fan_out);
  Tensor cpu(weight.value.shape());
  float* p = cpu.f32();
  for (int64_t i = 0; i < cpu.numel(); ++i) p[i] = static_cast<float>(rng.normal() * std);
  weight.value.copy_from(cpu);
  if (has_bias) bias.value.zero();
}

void Conv2d::set_weight_grad(WeightGrad mode, std::vector<int32_t> filters) {
  for (int32_t f : filters)
    if (f < 0 || f >= c_out)
      throw std::out_of_range("Conv2d: filter " + std::to_string(f) + " outside [0, " +
                              std::to_string(c_out) + ")");
  wgrad_ = mode;
  filters_ = std::move(filters);
  filters_dev_ = Tensor();
}

ops::Conv2dShape Conv2d::shape_for(const Tensor& x) const {
  ops::Conv2dShape s;
  s.n = int(x.dim(0));
  s.c_in = c_in;
  s.h = int(x.dim(2));
  s.w = int(x.dim(3));
  s.c_out = c_out;
  s.kh = (kh - 1) * dil_h + 1;
  s.kw = (kw - 1) * dil_w + 1;
  s.stride_h = stride_h;
  s.stride_w = stride_w;
  s.pad_h = pad_h;
  s.pad_w = pad_w;
  s.groups = groups;
  return s;
}

void Conv2d::expand_dilated() {
  const int ekh = (kh - 1) * dil_h + 1, ekw = (kw - 1) * dil_w + 1;
  const Shape dense{c_out, c_in / groups, ekh, ekw};
  if (!dense_index_.defined() || dense_index_.device() != device_) {
    // Flat position of every weight entry in the dense kernel.
    Tensor idx({weight.value.numel()}, DType::I64);
    int64_t* p = idx.i64();
    const int64_t rows = int64_t(c_out) * (c_in / groups);
    for (int64_t r = 0; r < rows; ++r)
      for (int i = 0; i < kh; ++i)
        for (int j = 0; j < kw; ++j)
          *p++ = (r * ekh + int64_t(i) * dil_h) * ekw + int64_t(j) * dil_w;
    dense_index_ = idx.to(device_);
    dense_w_ = Tensor(dense, DType::F32, device_);  // zeros between the taps, never written
  }
  ops::scatter(ctx(), weight.value.numel(), dense_index_.i64(), weight.value.f32(),
               dense_w_.f32());
}

const Tensor& Conv2d::forward(const Tensor& x) {
  require_ndim(x, 4, "Conv2d");
  if (x.dim(1) != c_in)
    throw std::invalid_argument("Conv2d: expected " + std::to_string(c_in) +
                                " input channels, got input " + shape_str(x.shape()));
  auto s = shape_for(x);
  if (s.out_h() <= 0 || s.out_w() <= 0)
    throw std::invalid_argument("Conv2d: input " + shape_str(x.shape()) + " too small for " +
                                describe());
  input_ = x;
  ensure(out_, {s.n, c_out, s.out_h(), s.out_w()}, device_);
  ops::Epilogue epi;
  if (has_bias) epi.bias = bias.value.f32();
  if (folded_) {
    epi.scale = fold_scale_.f32();
    epi.shift = fold_shift_.f32();
    epi.act = fold_act_;
  }
  const float* w = weight.value.f32();
  if (dilated()) {
    expand_dilated();
    w = dense_w_.f32();
  }
  ops::conv2d_forward(ctx(), s, x.f32(), w, epi, out_.f32());
  if (post_forward) post_forward(x, out_);
  return out_;
}

void Conv2d::fold(Tensor scale, Tensor shift, ops::Activation act) {
  if (scale.numel() != c_out || shift.numel() != c_out)
    throw std::invalid_argument("Conv2d::fold: scale/shift must have " + std::to_string(c_out) +
                                " entries");
  fold_scale_ = std::move(scale);
  fold_shift_ = std::move(shift);
  fold_act_ = act;
  folded_ = true;
}

void Conv2d::unfold() {
  folded_ = false;
  fold_scale_ = Tensor();
  fold_shift_ = Tensor();
  fold_act_ = ops::Activation::None;
}

const Tensor& Conv2d::backward(const Tensor& dy_in) {
  auto s = shape_for(input_);
  const Tensor* dyp = &dy_in;
  if (folded_) {
    // Through the epilogue: dacc = dy * act'(y) * scale.
    ensure(dacc_, out_.shape(), device_);
    ops::epilogue_backward(ctx(), s.n, c_out, s.out_h() * s.out_w(), fold_act_, out_.f32(),
                           dy_in.f32(), fold_scale_.f32(), dacc_.f32());
    dyp = &dacc_;
  }
  const Tensor& dy = *dyp;
  if (wgrad_ != WeightGrad::None) {
    weight.ensure_grad();
    float* db = nullptr;
    if (has_bias) {
      bias.ensure_grad();
      db = bias.grad.f32();
    }
    float* dw = weight.grad.f32();
    if (dilated()) {
      ensure(dense_grad_, dense_w_.shape(), device_);
      dw = dense_grad_.f32();
    }
    if (wgrad_ == WeightGrad::All)
      ops::conv2d_backward_filter(ctx(), s, input_.f32(), dy.f32(), dw, db, nullptr, 0);
    else if (!filters_.empty())
      ops::conv2d_backward_filter(ctx(), s, input_.f32(), dy.f32(), dw, db,
                                  device_list(filters_, filters_dev_, device_),
                                  int(filters_.size()));
    if (dilated())
      ops::gather(ctx(), weight.value.numel(), dense_index_.i64(), dense_grad_.f32(),
                  weight.grad.f32());
  }
  if (!needs_input_grad_) return dx_;
  ensure(dx_, input_.shape(), device_);
  ops::conv2d_backward_data(ctx(), s, dy.f32(), dilated() ? dense_w_.f32() : weight.value.f32(),
                            dx_.f32());
  return dx_;
}

// ------------------------------------------------------------------------------------- Linear
Linear::Linear(int in_, int out_n, bool bias_) : in(in_), out(out_n), has_bias(bias_) {
  weight.value = Tensor({out, in});
  register_parameter("weight", &weight);
  if (has_bias) {
    bias.value = Tensor({out});
    register_parameter("bias", &bias);
  }
}

std::string Linear::describe() const {
  return "Linear(" + std::to_string(in) + ", " + std::to_string(out) + ")";
}

void Linear::init_default(Rng& rng) {
  double bound = 1.0 / std::sqrt(double(in));
  uniform_fill(weight.value, rng, bound);
  if (has_bias) uniform_fill(bias.value, rng, bound);
}

void Linear::set_weight_grad(WeightGrad mode, std::vector<int32_t> rows) {
  for (int32_t r : rows)
    if (r < 0 || r >= out)
      throw std::out_of_range("Linear: row " + std::to_string(r) + " outside [0, " +
                              std::to_string(out) + ")");
  wgrad_ = mode;
  rows_ = std::move(rows);
  rows_dev_ = Tensor();
}

const Tensor& Linear::forward(const Tensor& x) {
  if (x.ndim() < 2 || x.numel() / x.dim(0) != in)
    throw std::invalid_argument("Linear(" + std::to_string(in) + ", " + std::to_string(out) +
                                "): input " + shape_str(x.shape()) + " does not have " +
                                std::to_string(in) + " features");
  input_ = x;
  int n = int(x.dim(0));
  ensure(out_, {n, out}, device_);
  ops::Epilogue epi;
  if (has_bias) epi.bias = bias.value.f32();
  ops::linear_forward(ctx(), n, in, out, x.f32(), weight.value.f32(), epi, out_.f32());
  if (post_forward) post_forward(x, out_);
  return out_;
}

const Tensor& Linear::backward(const Tensor& dy) {
  int n = int(input_.dim(0));
  if (wgrad_ != WeightGrad::None) {
    weight.ensure_grad();
    float* db = nullptr;
    if (has_bias) {
      bias.ensure_grad();
      db = bias.grad.f32();
    }
    if (wgrad_ == WeightGrad::All)
      ops::linear_backward_weight(ctx(), n, in, out, input_.f32(), dy.f32(), weight.grad.f32(),
                                  db, nullptr, 0);
    else if (!rows_.empty())
      ops::linear_backward_weight(ctx(), n, in, out, input_.f32(), dy.f32(), weight.grad.f32(),
                                  db, device_list(rows_, rows_dev_, device_), int(rows_.size()));
  }
  if (!needs_input_grad_) return dx_;
  ensure(dx_, input_.shape(), device_);
  ops::linear_backward_data(ctx(), n, in, out, dy.f32(), weight.value.f32(), dx_.f32());
  return dx_;
}

// -------------------------------------------------------------------------------- BatchNorm2d
BatchNorm2d::BatchNorm2d(int c_, float eps_, float momentum_)
    : c(c_), eps(eps_), momentum(momentum_) {
  weight.value = Tensor({c});
  weight.value.fill(1.0f);
  bias.value = Tensor({c});
  running_mean = Tensor({c});
  running_var = Tensor({c});
  running_var.fill(1.0f);
  num_batches_tracked = Tensor(Shape{}, DType::I64);
  register_parameter("weight", &weight);
  register_parameter("bias", &bias);
  register_buffer("running_mean", &running_mean);
  register_buffer("running_var", &running_var);
  register_buffer("num_batches_tracked", &num_batches_tracked);
}

std::string BatchNorm2d::describe() const { return "BatchNorm2d(" + std::to_string(c) + ")"; }

const Tensor& BatchNorm2d::forward(const Tensor& x) {
  if (bypass_) {
    if (training_) throw std::logic_error("BatchNorm2d: folded into a conv but in training mode");
    return x;
  }
  if ((x.ndim() != 4 && x.ndim() != 2) || x.dim(1) != c)
    throw std::invalid_argument("BatchNorm2d(" + std::to_string(c) + "): bad input " +
                                shape_str(x.shape()));
  input_ = x;
  int n = int(x.dim(0));
  int hw = int(x.numel() / (int64_t(n) * c));
  ensure(out_, x.shape(), device_);
  forward_was_training_ = training_;
  if (training_) {
    ensure(save_mean_, {c}, device_);
    ensure(save_invstd_, {c}, device_);
    ops::batchnorm_forward_train(ctx(), n, c, hw, x.f32(), weight.value.f32(), bias.value.f32(),
                                 track_stats_ ? running_mean.f32() : nullptr,
                                 track_stats_ ? running_var.f32() : nullptr, momentum, eps,
                                 out_.f32(), save_mean_.f32(), save_invstd_.f32());
    if (track_stats_) {
      // num_batches_tracked lives on the host side of the bookkeeping: copy, bump, copy back.
      Tensor nbt = num_batches_tracked.to(Device::CPU);
      nbt.i64()[0] += 1;
      num_batches_tracked.copy_from(nbt);
    }
  } else {
    ops::batchnorm_forward_eval(ctx(), n, c, hw, x.f32(), weight.value.f32(), bias.value.f32(),
                                running_mean.f32(), running_var.f32(), eps, out_.f32());
  }
  return out_;
}

const Tensor& BatchNorm2d::backward(const Tensor& dy) {
  if (bypass_) return dy;
  int n = int(input_.dim(0));
  int hw = int(input_.numel() / (int64_t(n) * c));
  ensure(dx_, input_.shape(), device_);
  float* dg = nullptr;
  float* db = nullptr;
  if (param_grad_) {
    weight.ensure_grad();
    bias.ensure_grad();
    dg = weight.grad.f32();
    db = bias.grad.f32();
  }
  if (forward_was_training_) {
    ops::batchnorm_backward(ctx(), n, c, hw, input_.f32(), dy.f32(), weight.value.f32(),
                            save_mean_.f32(), save_invstd_.f32(), dx_.f32(), dg, db);
  } else {
    ops::batchnorm_backward_eval(ctx(), n, c, hw, input_.f32(), dy.f32(), weight.value.f32(),
                                 running_mean.f32(), running_var.f32(), eps, dx_.f32(), dg, db);
  }
  return dx_;
}

// --------------------------------------------------------------------------------- Activation
std::string Activation::describe() const {
  switch (act_) {
    case ops::Activation::ReLU: return "ReLU";
    case ops::Activation::ReLU6: return "ReLU6";
    default: return "Identity";
  }
}

const Tensor& Activation::forward(const Tensor& x) {
  if (bypass_) return x;
  ensure(out_, x.shape(), device_);
  ops::activation_forward(ctx(), act_, x.numel(), x.f32(), out_.f32());
  return out_;
}

const Tensor& Activation::backward(const Tensor& dy) {
  if (bypass_) return dy;
  ensure(dx_, out_.shape(), device_);
  ops::activation_backward(ctx(), act_, dy.numel(), out_.f32(), dy.f32(), dx_.f32());
  return dx_;
}

// ---------------------------------------------------------------------------------- MaxPool2d
std::string MaxPool2d::describe() const {
  return "MaxPool2d(k=" + std::to_string(kernel_) + ", s=" + std::to_string(stride_) +
         ", p=" + std::to_string(padding_) + ")";
}

static ops::Pool2dShape pool_shape(const Tensor& x, int k, int s, int p) {
  require_ndim(x, 4, "pool");
  ops::Pool2dShape ps;
  ps.n = int(x.dim(0));
  ps.c = int(x.dim(1));
  ps.h = int(x.dim(2));
  ps.w = int(x.dim(3));
  ps.kh = ps.kw = k;
  ps.stride_h = ps.stride_w = s;
  ps.pad_h = ps.pad_w = p;
  if (ps.out_h() <= 0 || ps.out_w() <= 0)
    throw std::invalid_argument("pooling: input " + shape_str(x.shape()) + " too small");
  return ps;
}

const Tensor& MaxPool2d::forward(const Tensor& x) {
  shape_ = pool_shape(x, kernel_, stride_, padding_);
  Shape os{shape_.n, shape_.c, shape_.out_h(), shape_.out_w()};
  ensure(out_, os, device_);
  ensure(argmax_, os, device_, DType::I32);
  ops::maxpool2d_forward(ctx(), shape_, x.f32(), out_.f32(), argmax_.i32());
  return out_;
}

const Tensor& MaxPool2d::backward(const Tensor& dy) {
  ensure(dx_, {shape_.n, shape_.c, shape_.h, shape_.w}, device_);
  ops::maxpool2d_backward(ctx(), shape_, dy.f32(), argmax_.i32(), dx_.f32());
  return dx_;
}

std::string AvgPool2d::describe() const {
  return "AvgPool2d(k=" + std::to_string(kernel_) + ", s=" + std::to_string(stride_) + ")";
}

const Tensor& AvgPool2d::forward(const Tensor& x) {
  shape_ = pool_shape(x, kernel_, stride_, padding_);
  ensure(out_, {shape_.n, shape_.c, shape_.out_h(), shape_.out_w()}, device_);
  ops::avgpool2d_forward(ctx(), shape_, x.f32(), out_.f32());
  return out_;
}

const Tensor& AvgPool2d::backward(const Tensor& dy) {
  ensure(dx_, {shape_.n, shape_.c, shape_.h, shape_.w}, device_);
  ops::avgpool2d_backward(ctx(), shape_, dy.f32(), dx_.f32());
  return dx_;
}

// ------------------------------------------------------------------- GlobalAvgPool, Flatten
const Tensor& GlobalAvgPoolFlatten::forward(const Tensor& x) {
  require_ndim(x, 4, "AdaptiveAvgPool2d");
  in_shape_ = x.shape();
  int n = int(x.dim(0)), c = int(x.dim(1)), hw = int(x.dim(2) * x.dim(3));
  ensure(out_, {n, c}, device_);
  ops::global_avgpool_forward(ctx(), n, c, hw, x.f32(), out_.f32());
  return out_;
}

const Tensor& GlobalAvgPoolFlatten::backward(const Tensor& dy) {
  ensure(dx_, in_shape_, device_);
  int n = int(in_shape_[0]), c = int(in_shape_[1]), hw = int(in_shape_[2] * in_shape_[3]);
  ops::global_avgpool_backward(ctx(), n, c, hw, dy.f32(), dx_.f32());
  return dx_;
}

const Tensor& Flatten::forward(const Tensor& x) {
  in_shape_ = x.shape();
  out_ = x.view({x.dim(0), x.numel() / x.dim(0)});
  return out_;
}

const Tensor& Flatten::backward(const Tensor& dy) {
  dx_ = dy.view(in_shape_);
  return dx_;
}

// ------------------------------------------------------------------------------------ Dropout
std::string Dropout::describe() const {
  std::ostringstream o;
  o << "Dropout(p=" << p_ << ")";
  return o.str();
}

uint64_t Dropout::next_seed() { return Rng::derive(seed_, calls_++); }

const Tensor& Dropout::forward(const Tensor& x) {
  active_ = active();
  if (!active_) return x;
  ensure(out_, x.shape(), device_);
  ensure(mask_, x.shape(), device_, DType::U8);
  uint64_t seed = next_seed();
  ops::dropout_forward(ctx(), x.numel(), p_, seed, x.f32(), out_.f32(), mask_.u8());
  return out_;
}

const Tensor& Dropout::backward(const Tensor& dy) {
  if (!active_) return dy;
  ensure(dx_, dy.shape(), device_);
  ops::dropout_backward(ctx(), dy.numel(), p_, mask_.u8(), dy.f32(), dx_.f32());
  return dx_;
}

}  // namespace nns::nn
