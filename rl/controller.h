// The NNSplitter controller (SPEC.md §1): a recurrent policy unrolled over the eligible layers.
// Step l reads a one-hot token, updates the hidden state (initially zero), and a per-layer
// linear head (hidden -> filters of layer l) gives a softmax over that layer's filters, from
// which k filters are drawn. Trained by REINFORCE with the batch-mean baseline and Adam:
//   loss = -sum_i (R_i - b) log pi(a_i),  b = mean_i R_i
// (the authors' code minimises +sum (R - b) log pi, the wrong sign; this is the correct one).
//
// The cell and the heads run through kernels/ops.h on opt.device; only the small probability
// vectors are copied to the host for sampling and for the log-probability gradients.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/nn/module.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "core/tensor.h"
#include "rl/cells.h"

namespace nns::rl {

struct ControllerOptions {
  std::string cell = "lstm";        // lstm | rnn
  int hidden = 512, token_size = 256;
  int k = 1;                        // filters drawn per layer (without replacement: at most
                                    // the layer's filters, all of them when it has fewer)
  bool with_replacement = false;    // true reproduces the authors (draws may repeat)
  float init_range = 0.1f;          // every parameter U(-r, r), decoder (head) biases 0
  float lr = 0.01f;                 // Adam
  uint64_t seed = 0;                // parameter initialisation
  Device device = Device::CPU;
};

class Controller {
 public:
  Controller(std::vector<int> filters_per_layer, ControllerOptions opt);
  ~Controller();
  Controller(const Controller&) = delete;
  Controller& operator=(const Controller&) = delete;

  struct Episode {
    // One per layer: the one-hot index, in [0, max_token()].
    std::vector<int32_t> tokens;
    // Per layer, the k chosen filters, sorted ascending (distinct unless with_replacement).
    std::vector<std::vector<int32_t>> filters;
    // Per layer, the same filters in the order they were drawn. Without replacement log pi is
    // the probability of this ordered draw, so update() and log_prob() use it; when empty
    // (a hand-made episode), `filters` is taken as the draw order.
    std::vector<std::vector<int32_t>> draws;
    double log_prob = 0;  // sum over layers and draws of log pi, at sampling time
  };

  // Draws one episode: the tokens (uniform in [0, max_token()], one per layer, drawn first),
  // then layer by layer k filters: without replacement sequentially from the softmax
  // renormalised over the not-yet-chosen filters, with replacement k independent draws.
  // Every random number comes from rng.
  Episode sample(Rng& rng);

  // REINFORCE with the batch-mean baseline: loss = -sum_i (R_i - b) log pi(a_i), b = mean(R),
  // log pi evaluated under the current parameters with the episodes' tokens and draws; one Adam
  // step. Returns the loss value (before the step).
  double update(const std::vector<Episode>& episodes, const std::vector<double>& rewards);
  // The same loss and its gradient (left in parameters()' grad fields), without the step.
  double backward(const std::vector<Episode>& episodes, const std::vector<double>& rewards);

  // log pi(episode) under the current parameters (tokens and draws fixed).
  double log_prob(const Episode& e);
  // Per layer, the softmax over its filters for the given tokens (before any draw).
  std::vector<std::vector<float>> probabilities(const std::vector<int32_t>& tokens);

  // Parameters by name: cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, then per
  // layer l decoders.<l>.weight [filters_l, hidden] and decoders.<l>.bias [filters_l]. The grad
  // fields hold the gradients of the last backward()/update().
  std::vector<std::pair<std::string, nn::Parameter*>> parameters();

  // All state for resumable searches, as CPU tensors: the parameters (names above), the Adam
  // moments (adam_m.<name>, adam_v.<name>) and the Adam step count (adam_step, I64 [1]).
  // Sampling randomness is not part of it (the caller owns the Rng).
  std::vector<std::pair<std::string, Tensor>> state() const;
  // Restores from such a list (any device). Every name of state() must be present with the
  // same shape (otherwise std::invalid_argument); other entries are ignored.
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state);

  int num_layers() const { return static_cast<int>(filters_.size()); }
  const std::vector<int>& filters_per_layer() const { return filters_; }
  const ControllerOptions& options() const { return opt_; }
  // Largest token index: min(token_size - 1, min filters).
  int max_token() const { return max_token_; }
  int64_t adam_steps() const;
  RecurrentCell& cell() { return *cell_; }

 private:
  // Runs the cell and the heads over a batch of token sequences; fills logits_host_
  // (per layer l, [B, filters_l] at offset_[l] * B).
  void forward(const std::vector<const std::vector<int32_t>*>& tokens);
  const float* host_logits(int layer, int b) const;
  const std::vector<int32_t>& draw_order(const Episode& e, int layer) const;
  void check_episode(const Episode& e) const;
  int draws_in(size_t layer) const;  // k, capped at the layer's filters without replacement

  std::vector<int> filters_;
  std::vector<int64_t> offset_;  // prefix sums of filters_
  int64_t total_filters_ = 0;
  ControllerOptions opt_;
  int max_token_ = 0;
  std::unique_ptr<RecurrentCell> cell_;
  std::vector<nn::Parameter> head_w_, head_b_;
  std::unique_ptr<optim::Adam> adam_;

  int batch_ = 0;
  Tensor x_;       // [L, B, token_size] one-hot (device)
  Tensor logits_;  // [total_filters * B] (device)
  Tensor dlogits_, dh_;
  std::vector<float> logits_host_;
};

// Numerics of one layer's draw, on the host (exposed for tests). z: the n logits; draws: the
// chosen filters in draw order. Returns log pi of the draw; when grad is non-null it receives
// d log pi / dz (n entries). Without replacement the draws must be distinct, and each draw's
// probability is renormalised over the not-yet-chosen filters.
double draw_log_prob(const float* z, int n, const std::vector<int32_t>& draws,
                     bool with_replacement, std::vector<double>* grad = nullptr);

}  // namespace nns::rl
