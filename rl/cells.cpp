#include "rl/cells.h"

#include <stdexcept>
#include <utility>

#include "kernels/ops.h"

namespace nns::rl {

namespace {

std::string shape_of(const Tensor& t) { return shape_str(t.shape()); }

}  // namespace

RecurrentCell::RecurrentCell(int input_size, int hidden, int gates, Device device)
    : in_(input_size), hidden_(hidden), ngates_(gates), device_(device) {
  if (input_size < 1 || hidden < 1)
    throw std::invalid_argument("recurrent cell: input size and hidden size must be positive");
  const int64_t gh = int64_t(gates) * hidden;
  weight_ih_.value = Tensor({gh, input_size}, DType::F32, device);
  weight_hh_.value = Tensor({gh, hidden}, DType::F32, device);
  bias_ih_.value = Tensor({gh}, DType::F32, device);
  bias_hh_.value = Tensor({gh}, DType::F32, device);
}

std::vector<std::pair<std::string, nn::Parameter*>> RecurrentCell::parameters() {
  return {{"weight_ih", &weight_ih_},
          {"weight_hh", &weight_hh_},
          {"bias_ih", &bias_ih_},
          {"bias_hh", &bias_hh_}};
}

void RecurrentCell::init_uniform(Rng& rng, float r) {
  for (auto& [name, p] : parameters()) {
    std::vector<float> v(static_cast<size_t>(p->value.numel()));
    for (auto& e : v) e = static_cast<float>(rng.uniform(-double(r), double(r)));
    p->value.copy_from(Tensor::from_vector(v, p->value.shape()));
  }
}

void RecurrentCell::ensure(Tensor& t, const Shape& shape) const {
  if (!t.defined() || t.device() != device_ || t.dtype() != DType::F32)
    t = Tensor(shape, DType::F32, device_);
  else
    t.resize(shape);
}

const Tensor& RecurrentCell::forward(const Tensor& x, const Tensor* h0, const Tensor* c0) {
  if (x.ndim() != 3 || x.dim(2) != in_ || x.dim(0) < 1 || x.dim(1) < 1)
    throw std::invalid_argument("recurrent cell forward: x must be [T, B, " +
                                std::to_string(in_) + "], got " + shape_of(x));
  steps_ = static_cast<int>(x.dim(0));
  batch_ = static_cast<int>(x.dim(1));
  const int T = steps_, B = batch_, H = hidden_, GH = ngates_ * hidden_;
  auto check_state = [&](const Tensor* s, const char* what) {
    if (s && (s->numel() != int64_t(B) * H || s->dtype() != DType::F32))
      throw std::invalid_argument(std::string("recurrent cell forward: ") + what + " must be [" +
                                  std::to_string(B) + ", " + std::to_string(H) + "], got " +
                                  shape_of(*s));
  };
  check_state(h0, "h0");
  check_state(c0, "c0");

  const ops::Context c = ctx();
  ensure(x_, {T, B, in_});
  x_.copy_from(x);
  ensure(hs_, {T + 1, B, H});
  ensure(out_, {T, B, H});
  ensure(pre_, {T, B, GH});
  ensure(tmp_, {B, GH});
  if (h0)
    ops::copy_bytes(device_, hs_.f32(), h0->device(), h0->f32(), sizeof(float) * bh());
  else
    ops::fill(c, bh(), 0.0f, hs_.f32());
  begin_forward(c0);

  // The input part of every step in one GEMM: pre = x W_ih^T + b_ih over T*B rows.
  ops::Epilogue epi_ih;
  epi_ih.bias = bias_ih_.value.f32();
  ops::linear_forward(c, T * B, in_, GH, x_.f32(), weight_ih_.value.f32(), epi_ih, pre_.f32());
  ops::Epilogue epi_hh;
  epi_hh.bias = bias_hh_.value.f32();
  for (int t = 0; t < T; ++t) {
    float* pre_t = pre_.f32() + t * bg();
    const float* h_prev = hs_.f32() + t * bh();
    ops::linear_forward(c, B, H, GH, h_prev, weight_hh_.value.f32(), epi_hh, tmp_.f32());
    ops::add(c, bg(), pre_t, tmp_.f32(), pre_t);
    pointwise_forward(t, pre_t, hs_.f32() + (t + 1) * bh());
  }
  ops::copy_bytes(device_, out_.f32(), device_, hs_.f32() + bh(), sizeof(float) * T * bh());
  return out_;
}

const Tensor& RecurrentCell::backward(const Tensor& dh, bool need_dx) {
  const int T = steps_, B = batch_, H = hidden_, GH = ngates_ * hidden_;
  if (T == 0) throw std::logic_error("recurrent cell backward: no forward pass to go back through");
  if (dh.numel() != int64_t(T) * B * H || dh.dtype() != DType::F32)
    throw std::invalid_argument("recurrent cell backward: dh must be [" + std::to_string(T) +
                                ", " + std::to_string(B) + ", " + std::to_string(H) + "], got " +
                                shape_of(dh));
  const ops::Context c = ctx();
  ensure(dgates_, {T, B, GH});
  ensure(dh_run_, {B, H});
  ensure(dh_tot_, {B, H});
  ops::fill(c, bh(), 0.0f, dh_run_.f32());  // nothing reaches h_{T-1} from a later step
  begin_backward();
  for (int t = T - 1; t >= 0; --t) {
    ops::add(c, bh(), dh.f32() + t * bh(), dh_run_.f32(), dh_tot_.f32());
    float* dg = dgates_.f32() + t * bg();
    pointwise_backward(t, hs_.f32() + (t + 1) * bh(), dh_tot_.f32(), dg);
    // Gradient reaching h_{t-1} through the recurrent weights.
    ops::linear_backward_data(c, B, H, GH, dg, weight_hh_.value.f32(), dh_run_.f32());
  }
  ensure(dh0_, {B, H});
  ops::copy_bytes(device_, dh0_.f32(), device_, dh_run_.f32(), sizeof(float) * bh());
  end_backward();

  // Shared weights: the sums over steps, one GEMM over all T*B rows each (overwrites).
  for (nn::Parameter* p : {&weight_ih_, &weight_hh_, &bias_ih_, &bias_hh_}) p->ensure_grad();
  ops::linear_backward_weight(c, T * B, in_, GH, x_.f32(), dgates_.f32(), weight_ih_.grad.f32(),
                              bias_ih_.grad.f32(), nullptr, 0);
  // h_prev of steps 0..T-1 are the rows 0..T-1 of hs_ (h0 first).
  ops::linear_backward_weight(c, T * B, H, GH, hs_.f32(), dgates_.f32(), weight_hh_.grad.f32(),
                              bias_hh_.grad.f32(), nullptr, 0);
  if (need_dx) {
    ensure(dx_, {T, B, in_});
    ops::linear_backward_data(c, T * B, in_, GH, dgates_.f32(), weight_ih_.value.f32(),
                              dx_.f32());
  } else {
    dx_ = Tensor();
  }
  return dx_;
}

// ---------------------------------------------------------------------------------------------
// LSTM

LSTMCell::LSTMCell(int input_size, int hidden, Device device)
    : RecurrentCell(input_size, hidden, 4, device) {}

void LSTMCell::begin_forward(const Tensor* c0) {
  ensure(cs_, {steps_ + 1, batch_, hidden_});
  ensure(act_, {steps_, batch_, 4 * hidden_});
  if (c0)
    ops::copy_bytes(device_, cs_.f32(), c0->device(), c0->f32(), sizeof(float) * bh());
  else
    ops::fill(ctx(), bh(), 0.0f, cs_.f32());
}

void LSTMCell::pointwise_forward(int t, const float* gates_t, float* h_t) {
  ops::lstm_pointwise_forward(ctx(), batch_, hidden_, gates_t, cs_.f32() + t * bh(),
                              act_.f32() + t * bg(), h_t, cs_.f32() + (t + 1) * bh());
}

void LSTMCell::begin_backward() {
  ensure(dc_run_, {batch_, hidden_});
  ensure(dc_prev_, {batch_, hidden_});
  ops::fill(ctx(), bh(), 0.0f, dc_run_.f32());
}

void LSTMCell::pointwise_backward(int t, const float* /*h_t*/, const float* dh_total,
                                  float* dgates_t) {
  ops::lstm_pointwise_backward(ctx(), batch_, hidden_, act_.f32() + t * bg(),
                               cs_.f32() + t * bh(), cs_.f32() + (t + 1) * bh(), dh_total,
                               dc_run_.f32(), dgates_t, dc_prev_.f32());
  std::swap(dc_run_, dc_prev_);  // dc_run_ now reaches c_{t-1}
}

void LSTMCell::end_backward() {
  ensure(dc0_, {batch_, hidden_});
  ops::copy_bytes(device_, dc0_.f32(), device_, dc_run_.f32(), sizeof(float) * bh());
}

// ---------------------------------------------------------------------------------------------
// Elman RNN (tanh)

RNNCell::RNNCell(int input_size, int hidden, Device device)
    : RecurrentCell(input_size, hidden, 1, device) {}

void RNNCell::pointwise_forward(int /*t*/, const float* gates_t, float* h_t) {
  ops::activation_forward(ctx(), ops::Activation::Tanh, bh(), gates_t, h_t);
}

void RNNCell::pointwise_backward(int /*t*/, const float* h_t, const float* dh_total,
                                 float* dgates_t) {
  ops::activation_backward(ctx(), ops::Activation::Tanh, bh(), h_t, dh_total, dgates_t);
}

std::unique_ptr<RecurrentCell> make_cell(const std::string& kind, int input_size, int hidden,
                                         Device device) {
  if (kind == "lstm") return std::make_unique<LSTMCell>(input_size, hidden, device);
  if (kind == "rnn") return std::make_unique<RNNCell>(input_size, hidden, device);
  throw std::invalid_argument("unknown controller cell '" + kind + "' (expected lstm or rnn)");
}

}  // namespace nns::rl
