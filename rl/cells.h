// Recurrent cells of the controller with explicit forward and backward through time (BPTT),
// built on kernels/ops.h so the same code runs on either backend.
//
// A cell runs a whole sequence at once: forward(x [T, B, in]) -> h [T, B, H], keeping every
// step's activations; backward(dh [T, B, H]) then walks the steps in reverse. The weights are
// shared across time, so their gradients are the sums over steps; they are computed with one
// GEMM over all T*B rows at the end of backward (the same sum as per-step accumulation).
//
// Semantics and parameter names follow PyTorch's nn.LSTMCell / nn.RNNCell (tanh):
//   LSTM: gates = x W_ih^T + b_ih + h W_hh^T + b_hh  [B, 4H], order (i, f, g, o);
//         c' = sigmoid(f) c + sigmoid(i) tanh(g);  h' = sigmoid(o) tanh(c')
//   RNN:  h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)
// weight_ih [G*H, in], weight_hh [G*H, H], bias_ih [G*H], bias_hh [G*H] with G = 4 (LSTM) or 1.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/nn/module.h"
#include "core/random.h"
#include "core/tensor.h"

namespace nns::rl {

class RecurrentCell {
 public:
  RecurrentCell(int input_size, int hidden, int gates, Device device);
  virtual ~RecurrentCell() = default;
  RecurrentCell(const RecurrentCell&) = delete;
  RecurrentCell& operator=(const RecurrentCell&) = delete;

  virtual std::string kind() const = 0;  // "lstm" or "rnn"
  virtual bool has_cell_state() const = 0;

  int input_size() const { return in_; }
  int hidden() const { return hidden_; }
  Device device() const { return device_; }

  // Every parameter uniform in [-r, r] (drawn in the order of parameters()).
  void init_uniform(Rng& rng, float r);

  // Runs a sequence. x [T, B, in] (on device()); h0 / c0 [B, H] optional initial states (zero
  // when null; c0 ignored by the RNN). Returns the outputs h [T, B, H], valid until the next
  // forward. x is copied: the caller need not keep it alive for backward.
  const Tensor& forward(const Tensor& x, const Tensor* h0 = nullptr, const Tensor* c0 = nullptr);

  // BPTT from the gradient reaching each step's output, dh [T, B, H] (the recurrent path is
  // added internally). OVERWRITES the parameters' gradients (allocating them on first use).
  // When need_dx, also computes dx [T, B, in]. Returns dx (an empty tensor when not computed).
  // After backward, grad_h0() / grad_c0() hold the gradients reaching the initial states.
  const Tensor& backward(const Tensor& dh, bool need_dx = true);
  const Tensor& grad_h0() const { return dh0_; }
  const Tensor& grad_c0() const { return dc0_; }  // LSTM only (empty for the RNN)

  // The outputs of the last forward, h [T, B, H].
  const Tensor& output() const { return out_; }
  int steps() const { return steps_; }
  int batch() const { return batch_; }

  // PyTorch names: weight_ih, weight_hh, bias_ih, bias_hh.
  std::vector<std::pair<std::string, nn::Parameter*>> parameters();

 protected:
  // Hooks of the subclasses, called by forward / backward.
  // Sizes the subclass's own buffers for steps_ x batch_ and sets the initial cell state.
  virtual void begin_forward(const Tensor* c0) = 0;
  // Step t: gates_t [B, G*H] (summed pre-activations) and the previous state -> h_t (written
  // to hs_ row t + 1) and whatever the subclass saves for backward.
  virtual void pointwise_forward(int t, const float* gates_t, float* h_t) = 0;
  virtual void begin_backward() = 0;
  // Step t in reverse order: dh_total [B, H] reaches h_t (external + recurrent); writes
  // dgates_t [B, G*H] and carries the cell-state gradient to step t - 1.
  virtual void pointwise_backward(int t, const float* h_t, const float* dh_total,
                                  float* dgates_t) = 0;
  virtual void end_backward() = 0;

  ops::Context ctx() const { return ops::Context{device_, nullptr}; }
  int64_t bh() const { return int64_t(batch_) * hidden_; }
  int64_t bg() const { return int64_t(batch_) * ngates_ * hidden_; }
  // Sizes t (F32 on device_), reusing its allocation when possible; contents unspecified.
  void ensure(Tensor& t, const Shape& shape) const;

  int in_, hidden_, ngates_;
  Device device_;
  nn::Parameter weight_ih_, weight_hh_, bias_ih_, bias_hh_;

  int steps_ = 0, batch_ = 0;
  // Saved for backward.
  Tensor x_;       // [T, B, in]
  Tensor hs_;      // [T + 1, B, H]: h0, then h_0 .. h_{T-1}
  Tensor out_;     // [T, B, H]: the returned outputs h_0 .. h_{T-1}
  Tensor pre_;     // [T, B, G*H]: gate pre-activations
  Tensor tmp_;     // [B, G*H] scratch
  // Backward.
  Tensor dgates_;  // [T, B, G*H]
  Tensor dx_, dh0_, dc0_, dh_run_, dh_tot_;
};

// nn.LSTMCell.
class LSTMCell : public RecurrentCell {
 public:
  LSTMCell(int input_size, int hidden, Device device = Device::CPU);
  std::string kind() const override { return "lstm"; }
  bool has_cell_state() const override { return true; }

 protected:
  void begin_forward(const Tensor* c0) override;
  void pointwise_forward(int t, const float* gates_t, float* h_t) override;
  void begin_backward() override;
  void pointwise_backward(int t, const float* h_t, const float* dh_total,
                          float* dgates_t) override;
  void end_backward() override;

 private:
  Tensor cs_;   // [T + 1, B, H]: c0, then c_0 .. c_{T-1}
  Tensor act_;  // [T, B, 4H]: activated gates (sigmoid i, sigmoid f, tanh g, sigmoid o)
  Tensor dc_run_, dc_prev_;
};

// nn.RNNCell(nonlinearity="tanh"): the authors' controller.
class RNNCell : public RecurrentCell {
 public:
  RNNCell(int input_size, int hidden, Device device = Device::CPU);
  std::string kind() const override { return "rnn"; }
  bool has_cell_state() const override { return false; }

 protected:
  void begin_forward(const Tensor*) override {}
  void pointwise_forward(int t, const float* gates_t, float* h_t) override;
  void begin_backward() override {}
  void pointwise_backward(int t, const float* h_t, const float* dh_total,
                          float* dgates_t) override;
  void end_backward() override {}
};

// "lstm" or "rnn" (anything else throws std::invalid_argument).
std::unique_ptr<RecurrentCell> make_cell(const std::string& kind, int input_size, int hidden,
                                         Device device = Device::CPU);

}  // namespace nns::rl
