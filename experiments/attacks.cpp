#include "experiments/attacks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

#include "experiments/groupcover.h"
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
