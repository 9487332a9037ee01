// The attack_aware method (ProDiF's bi-level idea, arXiv 2503.13224, extended to the attacks
// that undo NNSplitter here). Hypothesis (docs/methods.md): NNSplitter maximises the loss of the
// model as deployed, and the damage it finds is what BatchNorm re-estimation and a few steps of
// fine-tuning remove first; maximising the loss *after* a simulated attacker finds damage that
// survives them, if any exists at the budget.
//
// Each obfuscation step, on NNSplitter's mask for the chosen filters:
//   1. g_dep = dCE/dw of the deployed model (eval mode, running statistics) on a training batch;
//   2. the simulated attacker, from the current weights: BatchNorm on each batch's own
//      statistics (what re-estimating them on unlabelled images gives), then `steps` plain SGD
//      steps (lr `lr`, every parameter, BN's affine included) on another labelled training
//      batch; g_att = dCE/dw at the attacked weights on the first batch, taken as the gradient
//      with respect to the obfuscated entries (first order, as first-order MAML); the attacked
//      weights are then put back;
//   3. masked Adam ascent on g_dep + weight * g_att, clamped to the shared bounds.
// The episode's score (reward and early stopping) is max(deployed accuracy, accuracy after the
// simulated attack), both on the validation data; the lowest score's weights are kept. A step
// costs steps + 2 full forward/backward passes (nnsplitter: one masked pass).
#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/nn/layers.h"
#include "core/optim/optimizer.h"
#include "core/splitter/method.h"
#include "kernels/ops.h"

namespace nns::splitter {

namespace {

// Eval mode; with `batch`, every BatchNorm normalises with the batch's own statistics and leaves
// its running statistics as they are.
void batchnorm_on_batch_statistics(models::Model& m, bool batch) {
  m.set_training(false);
  for (auto& [name, mod] : m.modules())
    if (auto* b = dynamic_cast<nn::BatchNorm2d*>(mod)) {
      b->set_track_stats(!batch);
      b->set_training(batch);
    }
}

class AttackAwareMethod : public Method {
 public:
  AttackAwareMethod(models::Model& model, std::vector<EligibleLayer> layers, MethodOptions opt)
      : Method(model, std::move(layers), std::move(opt)),
        steps_(int(opt_.integer("steps"))),
        lr_(float(opt_.number("lr"))),
        weight_(float(opt_.number("weight"))) {
    if (steps_ < 0 || !(lr_ > 0) || !(weight_ >= 0))
      throw std::invalid_argument("attack_aware: steps >= 0, lr > 0 and weight >= 0 required");
  }

 protected:
  MaskSet obfuscate_episode(const FilterChoice& filters, ObfuscationData& data, uint64_t,
                            EpisodeOutcome& out) override {
    MaskSet set(layers_, select_mask(layers_, filters, opt_.c, opt_.eps));
    try {
      obfuscate_against_attacker(set.masks(), data, out);
    } catch (...) {
      batchnorm_on_batch_statistics(model_, false);
      throw;
    }
    batchnorm_on_batch_statistics(model_, false);
    return set;
  }

 private:
  struct Slot {
    nn::Parameter* p;
    Tensor idx, m, v, best, g;
    int64_t n;
  };

  void obfuscate_against_attacker(const std::vector<LayerMask>& masks, ObfuscationData& data,
                                  EpisodeOutcome& out) {
    const ObfuscatorOptions& o = opt_.obfuscator;
    const Device dev = model_.device();
    const ops::Context ctx{dev, nullptr};
    std::vector<Slot> slots;
    for (const auto& mask : masks) {
      if (mask.index.empty()) continue;
      Slot s;
      s.p = layers_.at(mask.layer).param;
      s.n = int64_t(mask.index.size());
      Tensor ih({s.n}, DType::I64);
      std::copy(mask.index.begin(), mask.index.end(), ih.i64());
      s.idx = ih.to(dev);
      for (Tensor* t : {&s.m, &s.v, &s.best, &s.g}) *t = Tensor({s.n}, DType::F32, dev);
      slots.push_back(std::move(s));
    }
    auto params = model_.parameters();
    std::vector<Tensor> snapshot;
    for (auto& [key, p] : params) snapshot.push_back(p->value.clone());
    auto take_snapshot = [&] {
      for (size_t i = 0; i < params.size(); ++i) snapshot[i].copy_from(params[i].second->value);
    };
    auto put_snapshot = [&] {
      for (size_t i = 0; i < params.size(); ++i) params[i].second->value.copy_from(snapshot[i]);
    };
    optim::SGD sgd(params, {lr_, 0.0f, 0.0f, false});
    Tensor x(Shape{1}, DType::F32, dev), y(Shape{1}, DType::I32, dev);
    Tensor xa(Shape{1}, DType::F32, dev), ya(Shape{1}, DType::I32, dev);
    Tensor probs(Shape{1}, DType::F32, dev), dlogits(Shape{1}, DType::F32, dev);
    int epochs = 0;
    auto next = [&](Tensor& bx, Tensor& by) {
      if (data.next_batch(bx, by)) return true;
      ++epochs;
      return data.next_batch(bx, by);
    };
    // The simulated attacker, in place (the caller puts the snapshot back).
    auto attack = [&] {
      batchnorm_on_batch_statistics(model_, true);
      for (int s = 0; s < steps_; ++s) {
        cross_entropy_backward(model_, xa, ya, probs, dlogits);
        sgd.step();
      }
    };
    auto score = [&] {
      batchnorm_on_batch_statistics(model_, false);
      const double deployed = data.accuracy();
      take_snapshot();
      attack();
      const double attacked = data.accuracy();
      put_snapshot();
      batchnorm_on_batch_statistics(model_, false);
      ++out.evaluations;
      return std::max(deployed, attacked);
    };
    if (slots.empty() || !next(xa, ya)) {
      out.accuracy = score();
      return;
    }
    auto save_best = [&] {
      for (auto& s : slots) ops::gather(ctx, s.n, s.idx.i64(), s.p->value.f32(), s.best.f32());
    };
    save_best();
    double best = INFINITY;
    int since_best = 0;
    auto evaluate = [&] {  // true when patience ran out
      const double a = score();
      if (a < best) {
        best = a;
        since_best = 0;
        save_best();
      } else {
        ++since_best;
      }
      return since_best >= o.patience;
    };
    bool stop = false;
    while (!stop && epochs < o.max_epochs) {
      if (o.stop && o.stop->load()) break;
      if (!next(x, y) || !next(xa, ya)) break;
      // 1. the deployed model's gradient at the obfuscated entries
      batchnorm_on_batch_statistics(model_, false);
      cross_entropy_backward(model_, x, y, probs, dlogits);
      for (auto& s : slots) ops::gather(ctx, s.n, s.idx.i64(), s.p->grad.f32(), s.g.f32());
      // 2. the gradient after the simulated attacker, taken at the obfuscated entries
      take_snapshot();
      attack();
      cross_entropy_backward(model_, x, y, probs, dlogits);
      std::vector<Tensor> g_att;
      for (auto& s : slots) {
        Tensor t({s.n}, DType::F32, dev);
        ops::gather(ctx, s.n, s.idx.i64(), s.p->grad.f32(), t.f32());
        g_att.push_back(t.to(Device::CPU));
      }
      put_snapshot();
      batchnorm_on_batch_statistics(model_, false);
      // 3. masked Adam ascent on g_dep + weight * g_att
      ++out.steps;
      for (size_t k = 0; k < slots.size(); ++k) {
        auto& s = slots[k];
        Tensor g = s.g.to(Device::CPU);
        for (int64_t i = 0; i < s.n; ++i) g.f32()[i] += weight_ * g_att[k].f32()[i];
        s.g.copy_from(g);
        ops::scatter(ctx, s.n, s.idx.i64(), s.g.f32(), s.p->grad.f32());
        ops::masked_adam_clamp(ctx, s.n, s.idx.i64(), s.p->value.f32(), s.p->grad.f32(), s.m.f32(),
                               s.v.f32(), o.lr, o.beta1, o.beta2, o.adam_eps, out.steps, -1.0f,
                               o.l1, o.clamp_lo, o.clamp_hi);
      }
      const bool due = o.eval_every > 0 && out.steps % o.eval_every == 0;
      if (due) stop = evaluate();
      if (o.max_steps > 0 && out.steps >= o.max_steps) {
        if (!due) evaluate();
        stop = true;
      }
    }
    if (out.evaluations == 0) evaluate();
    for (auto& s : slots) ops::scatter(ctx, s.n, s.idx.i64(), s.best.f32(), s.p->value.f32());
    out.accuracy = best;
  }

  int steps_;
  float lr_, weight_;
};

}  // namespace

MethodInfo attack_aware_method_info() {
  using T = MethodKey::Type;
  return {"attack_aware",
          "nnsplitter's mask; Adam maximises the loss of the deployed model plus the loss after "
          "a simulated attacker (BN statistics from the batch, then a few SGD steps on labelled "
          "data); reward = the worse of the two accuracies",
          "the damage NNSplitter finds is what BN re-estimation and brief fine-tuning remove "
          "first; maximising the loss after a simulated attacker finds damage that survives them, "
          "if any exists at the budget",
          {{"steps", T::Int, "2", "the simulated attacker's SGD steps per obfuscation step", 0, 64, {}},
           {"lr", T::Float, "0.05", "the simulated attacker's SGD learning rate", 1e-9, {}, {}},
           {"weight", T::Float, "1",
            "weight of the loss after the simulated attack beside the deployed model's loss", 0,
            {}, {}}},
          [](models::Model& m, std::vector<EligibleLayer> l, MethodOptions o) -> std::unique_ptr<Method> {
            return std::make_unique<AttackAwareMethod>(m, std::move(l), std::move(o));
          }};
}

}  // namespace nns::splitter
