#include "core/splitter/obfuscator.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

#include "core/nn/layers.h"
#include "kernels/ops.h"

namespace nns::splitter {

void enter_masked_mode(models::Model& model, const std::vector<EligibleLayer>& layers,
                       const std::vector<LayerMask>& masks, bool bn_batch_stats) {
  model.set_training(false);
  if (!bn_batch_stats) nn::fold_batchnorm(model.net());
  for (auto& [name, m] : model.modules()) {
    if (auto* c = dynamic_cast<nn::Conv2d*>(m)) c->set_weight_grad(nn::WeightGrad::None);
    if (auto* l = dynamic_cast<nn::Linear*>(m)) l->set_weight_grad(nn::WeightGrad::None);
    if (auto* b = dynamic_cast<nn::BatchNorm2d*>(m)) {
      b->set_param_grad(false);
      if (bn_batch_stats) {
        b->set_track_stats(false);
        b->set_training(true);
      }
    }
  }
  for (const auto& mask : masks) {
    if (mask.index.empty()) continue;
    const EligibleLayer& l = layers.at(mask.layer);
    nn::Module* owner = model.module_for(l.key);
    if (auto* c = dynamic_cast<nn::Conv2d*>(owner))
      c->set_weight_grad(nn::WeightGrad::Subset, mask.filters);
    else if (auto* lin = dynamic_cast<nn::Linear*>(owner))
      lin->set_weight_grad(nn::WeightGrad::Subset, mask.filters);
    else
      throw std::runtime_error("obfuscator: layer " + l.key + " is not a Conv2d or Linear weight");
  }
}

void leave_masked_mode(models::Model& model) {
  nn::unfold_batchnorm(model.net());
  for (auto& [name, m] : model.modules()) {
    if (auto* c = dynamic_cast<nn::Conv2d*>(m)) c->set_weight_grad(nn::WeightGrad::All);
    if (auto* l = dynamic_cast<nn::Linear*>(m)) l->set_weight_grad(nn::WeightGrad::All);
    if (auto* b = dynamic_cast<nn::BatchNorm2d*>(m)) {
      b->set_param_grad(true);
      if (!b->tracks_stats()) {
        b->set_track_stats(true);
        b->set_training(false);  // as the rest of the model (enter_masked_mode: eval)
      }
    }
  }
}

void cross_entropy_backward(models::Model& model, const Tensor& x, const Tensor& y, Tensor& probs,
                            Tensor& dlogits) {
  const ops::Context ctx{model.device(), nullptr};
  const int n = int(x.dim(0)), k = model.spec().num_classes;
  const Tensor& logits = model.forward(x);
  probs.resize({n, k});
  dlogits.resize({n, k});
  float loss = 0;
  ops::softmax_cross_entropy_forward(ctx, n, k, logits.f32(), y.i32(), probs.f32(), &loss);
  ops::softmax_cross_entropy_backward(ctx, n, k, probs.f32(), y.i32(), 1.0f, dlogits.f32());
  model.backward(dlogits);
}

ObfuscationResult obfuscate(models::Model& model, const std::vector<EligibleLayer>& layers,
                            const std::vector<LayerMask>& masks, ObfuscationData& data,
                            const ObfuscatorOptions& o, const EntryBounds* bounds) {
  auto t0 = std::chrono::steady_clock::now();
  if (!(o.clamp_lo < o.clamp_hi))
    throw std::invalid_argument("obfuscator: clamp lo must be below hi");
  const Device dev = model.device();
  const ops::Context ctx{dev, nullptr};

  // Per masked layer: indexes on the device, sparse Adam moments, best values.
  struct Slot {
    float* w;
    nn::Parameter* p;
    Tensor idx, m, v, best;
    int64_t n;
    const std::vector<float>*lo = nullptr, *hi = nullptr;
  };
  if (bounds && (bounds->lo.size() != masks.size() || bounds->hi.size() != masks.size()))
    throw std::invalid_argument("obfuscator: bounds given for another number of masks");
  std::vector<Slot> slots;
  for (size_t mi = 0; mi < masks.size(); ++mi) {
    const auto& mask = masks[mi];
    if (mask.index.empty()) continue;
    Slot s;
    if (bounds) {
      s.lo = &bounds->lo[mi];
      s.hi = &bounds->hi[mi];
      if (s.lo->size() != mask.index.size() || s.hi->size() != mask.index.size())
        throw std::invalid_argument("obfuscator: bounds of layer " + layers.at(mask.layer).key +
                                    " do not match its mask");
    }
    s.p = layers.at(mask.layer).param;
    s.w = s.p->value.f32();
    s.n = int64_t(mask.index.size());
    Tensor ih({s.n}, DType::I64);
    std::copy(mask.index.begin(), mask.index.end(), ih.i64());
    s.idx = ih.to(dev);
    s.m = Tensor({s.n}, DType::F32, dev);
    s.v = Tensor({s.n}, DType::F32, dev);
    s.best = Tensor({s.n}, DType::F32, dev);
    s.p->ensure_grad();
    slots.push_back(std::move(s));
  }
  ObfuscationResult r;
  if (slots.empty()) {
    // Nothing to move: the accuracy is the pretrained one.
    model.set_training(false);
    r.best_accuracy = data.accuracy();
    r.evaluations = 1;
    r.accuracy_curve.push_back(r.best_accuracy);
    r.curve_steps.push_back(0);
    return r;
  }

  enter_masked_mode(model, layers, masks, o.bn_batch_stats);
  auto save_best = [&] {
    for (auto& s : slots) ops::gather(ctx, s.n, s.idx.i64(), s.w, s.best.f32());
  };
  save_best();  // the starting point counts as the first candidate
  double best = INFINITY;
  int since_best = 0;
  auto evaluate = [&]() -> bool {  // returns true when patience ran out
    double acc = data.accuracy();
    r.evaluations++;
    r.accuracy_curve.push_back(acc);
    r.curve_steps.push_back(r.steps);
    if (acc < best) {
      best = acc;
      since_best = 0;
      save_best();
    } else {
      ++since_best;
    }
    return since_best >= o.patience;
  };

  Tensor scratch(Shape{1}, DType::F32, dev);
  auto clamp_to_bounds = [&] {
    for (auto& s : slots) {
      scratch.resize({s.n});
      ops::gather(ctx, s.n, s.idx.i64(), s.w, scratch.f32());
      Tensor h = scratch.to(Device::CPU);
      float* v = h.f32();
      for (int64_t i = 0; i < s.n; ++i) v[i] = std::min(std::max(v[i], (*s.lo)[i]), (*s.hi)[i]);
      Tensor back = h.to(dev);
      ops::scatter(ctx, s.n, s.idx.i64(), back.f32(), s.w);
    }
  };

  Tensor x(Shape{1}, DType::F32, dev), y(Shape{1}, DType::I32, dev);
  Tensor probs(Shape{1}, DType::F32, dev), dlogits(Shape{1}, DType::F32, dev);
  bool stop = false;
  try {
    for (int epoch = 0; epoch < o.max_epochs && !stop; ++epoch) {
      while (!stop && data.next_batch(x, y)) {
        if (o.stop && o.stop->load()) {
          stop = true;
          break;
        }
        cross_entropy_backward(model, x, y, probs, dlogits);
        ++r.steps;
        // Minimise -CE + l1 * sum|w|: the gradient is -dCE/dw + l1 * sign(w).
        for (auto& s : slots)
          ops::masked_adam_clamp(ctx, s.n, s.idx.i64(), s.w, s.p->grad.f32(), s.m.f32(), s.v.f32(),
                                 o.lr, o.beta1, o.beta2, o.adam_eps, r.steps, -1.0f, o.l1,
                                 o.clamp_lo, o.clamp_hi);
        if (bounds) clamp_to_bounds();
        if (o.eval_every > 0 && r.steps % o.eval_every == 0) stop = evaluate();
        if (o.max_steps > 0 && r.steps >= o.max_steps) {
          if (o.eval_every <= 0 || r.steps % o.eval_every != 0) evaluate();
          stop = true;
        }
      }
      if (!stop && o.eval_every <= 0) stop = evaluate();
    }
    if (r.evaluations == 0 && !(o.stop && o.stop->load())) evaluate();
  } catch (...) {
    leave_masked_mode(model);
    throw;
  }
  // Keep the best (lowest-accuracy) weights, not the last.
  for (auto& s : slots) ops::scatter(ctx, s.n, s.idx.i64(), s.best.f32(), s.w);
  leave_masked_mode(model);
  r.best_accuracy = best;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace nns::splitter
