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
    : c_in(c_in_), c_out(c_out_), kernel(kernel_), stride(stride_), padding(padding_),
      groups(groups_), has_bias(bias_) {
  if (c_in % groups || c_out % groups)
    throw std::invalid_argument("Conv2d: channels not divisible by groups");
  weight.value = Tensor({c_out, c_in / groups, kernel, kernel});
  register_parameter("weight", &weight);
  if (has_bias) {
    bias.value = Tensor({c_out});
    register_parameter("bias", &bias);
  }
}

std::string Conv2d::describe() const {
  std::ostringstream o;
  o << "Conv2d(" << c_in << ", " << c_out << ", k=" << kernel << ", s=" << stride
    << ", p=" << padding;
  if (groups != 1) o << ", groups=" << groups;
  if (!has_bias) o << ", bias=False";
  o << ")";
  return o.str();
}

void Conv2d::init_default(Rng& rng) {
  double bound = 1.0 / std::sqrt(double(c_in / groups) * kernel * kernel);
  uniform_fill(weight.value, rng, bound);
  if (has_bias) uniform_fill(bias.value, rng, bound);
}

void Conv2d::init_kaiming_fan_out(Rng& rng) {
  double fan_out = double(c_out) * kernel * kernel / groups;
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
  s.kh = s.kw = kernel;
  s.stride_h = s.stride_w = stride;
  s.pad_h = s.pad_w = padding;
  s.groups = groups;
  return s;
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
  ops::conv2d_forward(ctx(), s, x.f32(), weight.value.f32(), epi, out_.f32());
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
    if (wgrad_ == WeightGrad::All)
      ops::conv2d_backward_filter(ctx(), s, input_.f32(), dy.f32(), weight.grad.f32(), db,
                                  nullptr, 0);
    else if (!filters_.empty())
      ops::conv2d_backward_filter(ctx(), s, input_.f32(), dy.f32(), weight.grad.f32(), db,
                                  device_list(filters_, filters_dev_, device_),
                                  int(filters_.size()));
  }
  if (!needs_input_grad_) return dx_;
  ensure(dx_, input_.shape(), device_);
  ops::conv2d_backward_data(ctx(), s, dy.f32(), weight.value.f32(), dx_.f32());
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
