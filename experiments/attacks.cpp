#include "experiments/attacks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <numeric>
#include <stdexcept>

#include "core/nn/layers.h"

#include "experiments/trainer.h"

namespace nns::exp {

Tensor& f32_state_tensor(models::Model& m, const std::string& key, const char* who) {
  for (auto& e : m.state())
    if (e.key == key) {
      if (e.tensor->dtype() != DType::F32)
        throw std::invalid_argument(std::string(who) + ": '" + key + "' is not an F32 tensor");
      return *e.tensor;
    }
  throw std::invalid_argument(std::string(who) + ": model " + m.spec().arch +
                              " has no tensor '" + key + "'");
}

namespace {

void write_back(Tensor& t, const std::vector<float>& v) {
  t.copy_from(Tensor::from_vector(v, t.shape()));
}

// Mean and population standard deviation (double accumulation).
std::pair<double, double> mean_std(const std::vector<float>& v) {
  if (v.empty()) return {0.0, 0.0};
  double s = 0;
  for (float x : v) s += x;
  const double mean = s / double(v.size());
  double q = 0;
  for (float x : v) q += (double(x) - mean) * (double(x) - mean);
  return {mean, std::sqrt(q / double(v.size()))};
}

void clamp_layers(models::Model& m, const std::vector<std::string>& layers,
                  const std::vector<std::pair<double, double>>& ranges) {
  for (size_t l = 0; l < layers.size(); ++l) {
    Tensor& t = f32_state_tensor(m, layers[l], "norm_clip_attack");
    std::vector<float> v = t.to_vector();
    const float lo = float(ranges[l].first), hi = float(ranges[l].second);
    for (float& x : v) x = std::clamp(x, lo, hi);
    write_back(t, v);
  }
}

double measure(models::Model& m, const AccuracyFn& acc) {
  m.set_training(false);
  return acc(m);
}

bool is_divergence(const std::runtime_error& e) {
  return std::string(e.what()).rfind("training diverged", 0) == 0;
}

// Trains `model` on d for t.epochs epochs with one optimizer, appending the accuracy after every
// epoch to `row` (which already holds column 0). A diverged run fills the rest with NaN.
void train_measuring(models::Model& model, const data::Dataset& d, const data::Normalization& norm,
                     TrainOptions t, const AccuracyFn& acc, std::vector<double>& row,
                     const std::string& what) {
  if (t.epochs < 1) return;
  const size_t want = row.size() + size_t(t.epochs);
  t.on_epoch_end = [&](int) { row.push_back(measure(model, acc)); };
  try {
    train_model(model, d, nullptr, norm, t);
  } catch (const std::runtime_error& e) {
    if (!is_divergence(e)) throw;
    std::fprintf(stderr, "warning: %s: %s; the remaining epochs are recorded as NaN\n",
                 what.c_str(), e.what());
  }
  while (row.size() < want) row.push_back(std::numeric_limits<double>::quiet_NaN());
}

}  // namespace

// ---------------------------------------------------------------- weight sets, resets

int64_t weight_count(const WeightSet& w) {
  int64_t n = 0;
  for (const auto& [key, idx] : w) n += int64_t(idx.size());
  return n;
}

const std::vector<std::string>& reset_modes() {
  static const std::vector<std::string> modes = {"zero", "mean", "donor"};
  return modes;
}

void reset_weights(models::Model& model, const WeightSet& flagged, const std::string& mode,
                   models::Model* donor) {
  if (std::find(reset_modes().begin(), reset_modes().end(), mode) == reset_modes().end())
    throw std::invalid_argument("reset: unknown mode '" + mode + "' (zero, mean or donor)");
  if (mode == "donor" && !donor) throw std::invalid_argument("reset: mode donor needs a donor");
  for (const auto& [key, idx] : flagged) {
    if (idx.empty()) continue;
    Tensor& t = f32_state_tensor(model, key, "reset");
    std::vector<float> v = t.to_vector();
    for (int64_t i : idx)
      if (i < 0 || i >= int64_t(v.size()))
        throw std::invalid_argument("reset: index " + std::to_string(i) + " out of range for '" +
                                    key + "' (" + std::to_string(v.size()) + " entries)");
    if (mode == "zero") {
      for (int64_t i : idx) v[size_t(i)] = 0.0f;
    } else if (mode == "mean") {
      std::vector<bool> is_flagged(v.size(), false);
      for (int64_t i : idx) is_flagged[size_t(i)] = true;
      double s = 0;
      size_t n = 0;
      for (size_t i = 0; i < v.size(); ++i)
        if (!is_flagged[i]) {
          s += v[i];
          ++n;
        }
      const float mean = n ? float(s / double(n)) : 0.0f;
      for (int64_t i : idx) v[size_t(i)] = mean;
    } else {
      Tensor& dt = f32_state_tensor(*donor, key, "reset (donor)");
      if (dt.shape() != t.shape())
        throw std::invalid_argument("reset: donor's '" + key + "' has shape " +
                                    shape_str(dt.shape()) + ", expected " + shape_str(t.shape()));
      const std::vector<float> dv = dt.to_vector();
      for (int64_t i : idx) v[size_t(i)] = dv[size_t(i)];
    }
    t.copy_from(Tensor::from_vector(v, t.shape()));
  }
}

// ---------------------------------------------------------------- BatchNorm recalibration

data::Dataset first_samples(const data::Dataset& d, int64_t n) {
  std::vector<int64_t> first(static_cast<size_t>(n));
  std::iota(first.begin(), first.end(), int64_t(0));
  return data::subset(d, first);
}

int recalibrate_batchnorm(models::Model& model, const data::Dataset& images, int64_t n,
                          const data::Normalization& norm, int batch, int pad_to) {
  if (n < 1 || n > images.size() || batch < 1)
    throw std::invalid_argument("recalibrate_batchnorm: " + std::to_string(n) + " images of " +
                                std::to_string(images.size()) + ", batch " +
                                std::to_string(batch));
  std::vector<nn::BatchNorm2d*> bns;
  for (auto& [name, m] : model.modules())
    if (auto* b = dynamic_cast<nn::BatchNorm2d*>(m); b && !b->bypassed()) bns.push_back(b);
  if (bns.empty()) return 0;
  model.set_training(false);
  std::vector<float> momentum;
  for (auto* b : bns) {
    momentum.push_back(b->momentum);
    b->running_mean.fill(0.0f);
    b->running_var.fill(1.0f);
    b->num_batches_tracked.zero();
    b->set_training(true);
  }
  const data::Dataset part = first_samples(images, n);
  data::BatchOptions bo;
  bo.pad_to = pad_to;
  data::Loader loader(part, norm, batch, false, 0, bo);
  Tensor x, y;
  int seen = 0;
  models::NoGrad no_grad(model);  // statistics only: no activation kept for a backward
  while (loader.next(x, y)) {
    ++seen;
    for (auto* b : bns) b->momentum = 1.0f / float(seen);  // running = mean of the batch statistics
    model.forward(x.to(model.device()));
  }
  for (size_t i = 0; i < bns.size(); ++i) bns[i]->momentum = momentum[i];
  model.set_training(false);
  return int(bns.size());
}

// ---------------------------------------------------------------- honest training

HonestFit fit_with_holdout(models::Model& start, const data::Dataset& queries,
                           const data::Normalization& norm, const HonestTraining& h,
                           const AccuracyFn& acc,
                           const std::function<void(models::Model&, const data::Dataset&)>& prepare) {
  if (!acc) throw std::invalid_argument("fit_with_holdout: no accuracy oracle");
  if (h.lrs.empty() || h.batch < 1 || h.min_epochs < 0 || h.min_steps < 0 ||
      !(h.holdout > 0 && h.holdout < 1))
    throw std::invalid_argument("fit_with_holdout: lrs, batch >= 1, holdout in (0, 1) required");
  const int64_t n = queries.size();
  if (n < 1) throw std::invalid_argument("fit_with_holdout: no queries");
  auto epochs_for = [&](int64_t m) {
    const int64_t per_epoch = (m + h.batch - 1) / h.batch;
    return int(std::max<int64_t>(std::max(h.min_epochs, 1), (h.min_steps + per_epoch - 1) / per_epoch));
  };
  // Trains a prepared copy on d with lr; null when training diverged.
  auto train = [&](const data::Dataset& d, double lr) -> std::unique_ptr<models::Model> {
    auto copy = models::clone_model(start);
    if (prepare) prepare(*copy, d);
    TrainOptions t;
    t.epochs = epochs_for(d.size());
    t.batch = h.batch;
    t.lr = float(lr);
    t.optimizer = "sgd";
    t.schedule = "cosine";
    t.momentum = h.momentum;
    t.weight_decay = h.weight_decay;
    t.nesterov = false;
    t.seed = h.seed;
    t.pad_to = h.pad_to;
    t.progress = false;
    t.trainable = h.trainable;
    try {
      train_model(*copy, d, nullptr, norm, t);
    } catch (const std::runtime_error& e) {
      if (!is_divergence(e)) throw;
      return nullptr;
    }
    copy->set_training(false);
    return copy;
  };
  HonestFit fit;
  const int64_t held = std::min<int64_t>(n - 1, std::max<int64_t>(1, int64_t(std::llround(h.holdout * double(n)))));
  size_t best = 0;
  if (n >= 2 && h.lrs.size() > 1) {
    const data::Dataset fit_part = first_samples(queries, n - held);
    std::vector<int64_t> rest(static_cast<size_t>(held));
    std::iota(rest.begin(), rest.end(), n - held);
    const data::Dataset held_part = data::subset(queries, rest);
    double best_acc = -1;
    for (size_t i = 0; i < h.lrs.size(); ++i) {
      auto m = train(fit_part, h.lrs[i]);
      const double a = m ? evaluate(*m, held_part, norm, 256, h.pad_to).accuracy()
                         : std::numeric_limits<double>::quiet_NaN();
      fit.holdout_accuracy.push_back(a);
      if (a > best_acc) best_acc = a, best = i;
    }
  }
  fit.lr = h.lrs[best];
  fit.epochs = epochs_for(n);
  if (auto m = train(queries, fit.lr)) fit.accuracy = acc(*m);
  else std::fprintf(stderr, "warning: training on %lld queries at lr %g diverged; recorded as NaN\n",
                    (long long)n, fit.lr);
  return fit;
}

// ---------------------------------------------------------------- norm clipping

NormClipResult norm_clip_attack(models::Model& obfuscated, const std::vector<std::string>& layers,
                                const std::vector<double>& ks, double global_lo,
                                double global_hi, const AccuracyFn& acc) {
  if (!acc) throw std::invalid_argument("norm_clip_attack: no accuracy oracle");
  for (double k : ks)
    if (!(k >= 0) || !std::isfinite(k))
      throw std::invalid_argument("norm_clip_attack: k must be a finite number >= 0, got " +
                                  std::to_string(k));
  std::vector<std::pair<double, double>> stats;
  for (const auto& key : layers)
    stats.push_back(mean_std(f32_state_tensor(obfuscated, key, "norm_clip_attack").to_vector()));

  NormClipResult r;
  r.k = ks;
  for (double k : ks) {
    auto copy = models::clone_model(obfuscated);
    std::vector<std::pair<double, double>> ranges;
    for (auto [mean, sd] : stats) ranges.emplace_back(mean - k * sd, mean + k * sd);
    clamp_layers(*copy, layers, ranges);
    r.accuracy.push_back(measure(*copy, acc));
  }
  r.global_lo = global_lo;
  r.global_hi = global_hi;
  if (global_lo < global_hi) {
    auto copy = models::clone_model(obfuscated);
    clamp_layers(*copy, layers,
                 std::vector<std::pair<double, double>>(layers.size(), {global_lo, global_hi}));
    r.global_accuracy = measure(*copy, acc);
  } else {
    r.global_lo = r.global_hi = 0;
  }
  return r;
}

std::pair<double, double> auto_global_range(models::Model& model,
                                            const std::vector<std::string>& layers, double k) {
  std::vector<float> all;
  for (const auto& key : layers) {
    auto v = f32_state_tensor(model, key, "auto_global_range").to_vector();
    all.insert(all.end(), v.begin(), v.end());
  }
  auto [mean, sd] = mean_std(all);
  return {mean - k * sd, mean + k * sd};
}

// ---------------------------------------------------------------- fine-tuning

FinetuneResult finetune_attack(models::Model& obfuscated, const data::Dataset& train,
                               const data::Normalization& norm, const FinetuneOptions& o,
                               const AccuracyFn& acc) {
  if (!acc) throw std::invalid_argument("finetune_attack: no accuracy oracle");
  if (o.epochs < 0) throw std::invalid_argument("finetune_attack: epochs must be >= 0");
  if (o.batch < 1) throw std::invalid_argument("finetune_attack: batch must be >= 1");
  if (!(o.lr > 0)) throw std::invalid_argument("finetune_attack: lr must be positive");
  for (double p : o.fractions)
    if (!(p > 0.0 && p <= 1.0))
      throw std::invalid_argument("finetune_attack: fraction " + std::to_string(p) +
                                  " not in (0, 1]");
  TrainOptions t;
  t.epochs = o.epochs;
  t.batch = o.batch;
  t.lr = o.lr;
  t.optimizer = o.optimizer;
  t.schedule = "constant";
  t.momentum = o.momentum;
  t.weight_decay = o.weight_decay;
  t.nesterov = false;
  t.seed = o.seed;
  t.augment = o.augment;
  t.pad_to = o.pad_to;
  t.progress = o.progress;

  FinetuneResult r;
  r.fractions = o.fractions;
  for (double p : o.fractions) {
    const data::Dataset part = data::fraction(train, p, o.seed);
    char what[96];
    {
      auto copy = models::clone_model(obfuscated);
      std::vector<double> row{measure(*copy, acc)};
      std::snprintf(what, sizeof what, "fine-tuning on %.4g of the training data", p);
      train_measuring(*copy, part, norm, t, acc, row, what);
      r.accuracy.push_back(std::move(row));
    }
    if (o.scratch) {
      auto fresh = models::build_model(obfuscated.spec(), o.seed);
      fresh->to(obfuscated.device());
      std::vector<double> row{measure(*fresh, acc)};
      std::snprintf(what, sizeof what, "training from scratch on %.4g of the training data", p);
      train_measuring(*fresh, part, norm, t, acc, row, what);
      r.scratch_accuracy.push_back(std::move(row));
    }
  }
  return r;
}

// ---------------------------------------------------------------- boundary reset

std::vector<std::vector<int64_t>> apply_boundary_reset(models::Model& model,
                                                       const std::vector<std::string>& layers,
                                                       double lo, double hi, double delta,
                                                       const std::string& mode,
                                                       models::Model* donor) {
  if (mode != "zero" && mode != "mean" && mode != "donor")
    throw std::invalid_argument("boundary reset: unknown mode '" + mode +
                                "' (zero, mean or donor)");
  if (mode == "donor" && !donor)
    throw std::invalid_argument("boundary reset: mode donor needs a donor model");
  if (!(delta >= 0)) throw std::invalid_argument("boundary reset: delta must be >= 0");
  const double lo_cut = lo + delta, hi_cut = hi - delta;
  std::vector<std::vector<int64_t>> flagged(layers.size());
  WeightSet set;
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::vector<float> v = f32_state_tensor(model, layers[l], "boundary reset").to_vector();
    auto& idx = flagged[l];
    for (size_t i = 0; i < v.size(); ++i)
      if (double(v[i]) <= lo_cut || double(v[i]) >= hi_cut) idx.push_back(int64_t(i));
    if (!idx.empty()) set[layers[l]] = idx;
  }
  reset_weights(model, set, mode, donor);
  return flagged;
}

BoundaryResetResult boundary_reset_attack(models::Model& obfuscated,
                                          const std::vector<std::string>& layers,
                                          const splitter::Secrets* secrets,
                                          const data::Dataset& train,
                                          const data::Normalization& norm,
                                          const BoundaryResetOptions& o, const AccuracyFn& acc) {
  if (!acc) throw std::invalid_argument("boundary_reset_attack: no accuracy oracle");
  if (layers.empty()) throw std::invalid_argument("boundary_reset_attack: no layers");
  if (o.finetune_samples < 0 || o.finetune_epochs < 0)
    throw std::invalid_argument("boundary_reset_attack: samples and epochs must be >= 0");
  BoundaryResetResult r;
  r.lo = std::numeric_limits<double>::infinity();
  r.hi = -r.lo;
  for (const auto& key : layers)
    for (float x : f32_state_tensor(obfuscated, key, "boundary_reset_attack").to_vector())
      if (std::isfinite(x)) {
        r.lo = std::min(r.lo, double(x));
        r.hi = std::max(r.hi, double(x));
      }
  if (!(r.lo <= r.hi)) throw std::runtime_error("boundary_reset_attack: no finite weights");

  auto copy = models::clone_model(obfuscated);
  auto flagged = apply_boundary_reset(*copy, layers, r.lo, r.hi, o.delta, o.mode, o.donor);
  for (size_t l = 0; l < layers.size(); ++l) {
    r.detected_per_layer.push_back(int64_t(flagged[l].size()));
    r.detected += int64_t(flagged[l].size());
  }
  if (secrets) {
    r.obfuscated = secrets->total();
    for (size_t l = 0; l < layers.size(); ++l)
      for (const auto& st : secrets->tensors) {
        if (st.key != layers[l]) continue;
        std::vector<int64_t> sec = st.index;
        std::sort(sec.begin(), sec.end());
        auto a = flagged[l].begin(), b = sec.begin();
        while (a != flagged[l].end() && b != sec.end()) {
          if (*a < *b) {
            ++a;
          } else if (*b < *a) {
            ++b;
          } else {
            ++r.true_positives;
            ++a;
            ++b;
          }
        }
      }
  }
  r.accuracy_reset = measure(*copy, acc);

  if (o.finetune_samples > 0 && train.size() > 0) {
    const int64_t n = std::min<int64_t>(o.finetune_samples, train.size());
    auto perm = data::seeded_permutation(train.size(), o.seed);
    std::vector<int64_t> chosen(perm.begin(), perm.begin() + n);
    std::sort(chosen.begin(), chosen.end());
    const data::Dataset few = data::subset(train, chosen);
    TrainOptions t;
    t.epochs = o.finetune_epochs;
    t.batch = o.batch;
    t.lr = o.lr;
    t.optimizer = "sgd";
    t.schedule = "constant";
    t.momentum = 0.9f;
    t.weight_decay = 5e-4f;
    t.nesterov = false;
    t.seed = o.seed;
    t.pad_to = o.pad_to;
    t.progress = false;
    r.accuracy_finetuned.push_back(r.accuracy_reset);
    train_measuring(*copy, few, norm, t, acc, r.accuracy_finetuned,
                    "fine-tuning after the boundary reset");
  }
  return r;
}

}  // namespace nns::exp
