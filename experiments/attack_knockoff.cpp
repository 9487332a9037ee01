// Knockoff at its best (docs/attacks.md "The strongest honest attacker"): for every query budget,
// fine-tuning that starts from what the obfuscated model gives an attacker, each variant with its
// learning rate chosen by hold-out on the attacker's own queries (attacks.train):
//   finetune        every weight, from the obfuscated model;
//   bn+finetune     BatchNorm statistics re-estimated on the queries first, then every weight;
//   bn_affine       statistics re-estimated, then only BatchNorm's scale and shift trained;
//   reset+finetune  the detector's flags reset (GroupCover's first step), then every weight;
//   oracle          not an attack but a bound: the secret entries themselves reset (zero), then
//                   every weight, i.e. what a perfect detector allows; whatever values a method
//                   puts in those positions, an attacker who finds them does at least this well.
//                   Needs the secrets; role "bound", never in the headline.
// The BatchNorm variants are skipped on a model without BatchNorm, oracle without secrets.
#include <algorithm>
#include <cstdio>
#include <set>

#include "core/nn/layers.h"
#include "experiments/attack_unit.h"
#include "experiments/groupcover.h"
#include "experiments/progress.h"

namespace nns::exp {

namespace {

const std::vector<std::string>& variant_names() {
  static const std::vector<std::string> v = {"finetune", "bn+finetune", "bn_affine",
                                             "reset+finetune", "oracle"};
  return v;
}

std::set<std::string> batchnorm_parameters(models::Model& m) {
  std::set<std::string> keys;
  for (auto& [name, mod] : m.modules())
    if (dynamic_cast<nn::BatchNorm2d*>(mod)) keys.insert({name + ".weight", name + ".bias"});
  return keys;
}

class KnockoffAttack : public AttackUnit {
 public:
  std::string name() const override { return "knockoff"; }
  std::string summary() const override {
    return "fine-tuning on the labelled queries from the obfuscated model (as is, BN re-estimated, "
           "BN affine only, detector reset), learning rate chosen by hold-out";
  }
  std::vector<KeySpec> keys() const override {
    using V = ValueType;
    return {unit_key("variants", V::StringList, "[finetune, bn+finetune, bn_affine, reset+finetune]",
                     "where the fine-tuning starts and what it trains (docs/attacks.md)", {}, {},
                     variant_names()),
            unit_key("detector", V::String, "extreme_percentile_layer",
                     "reset+finetune: the detector whose flags are reset", {}, {}, detector_names()),
            unit_key("scope", V::String, "weights", "reset+finetune: what the detector scans", {},
                     {}, detector_scopes()),
            unit_key("reset", V::String, "zero",
                     "reset+finetune: the flagged weights' new values (donor: attacks.donor)", {}, {},
                     reset_modes()),
            unit_key("lrs", V::FloatList, "[]",
                     "learning rates the knockoff variants try ([] = attacks.train.lrs); one value "
                     "skips the hold-out runs: a cheaper, weaker attacker (a screen: what it "
                     "recovers is a lower bound on the best attack), the floor keeps attacks.train",
                     1e-9, {})};
  }
  void parse(const Config& cfg) override {
    const std::string p = "attacks.knockoff.";
    variants_ = cfg.get_strings(p + "variants");
    detector_ = cfg.get_string(p + "detector");
    scope_ = cfg.get_string(p + "scope");
    reset_ = cfg.get_string(p + "reset");
    lrs_ = cfg.get_floats(p + "lrs");
    if (variants_.empty()) throw ConfigError(p + "variants: needs at least one variant");
  }
  bool uses_queries() const override { return true; }

  void run(AttackContext& ctx) override {
    models::Model& obf = *ctx.obfuscated;
    budgets_ = ctx.queries.budgets;
    lrs_tried_ = lrs_.empty() ? ctx.training.lrs : lrs_;
    fits_.clear();
    run_variants_.clear();
    const auto bn_keys = batchnorm_parameters(obf);
    const int pad_to = ctx.pad_to;
    const data::Normalization norm = ctx.norm;
    const std::function<void(models::Model&, const data::Dataset&)> recalibrate =
        [&](models::Model& m, const data::Dataset& d) {
          recalibrate_batchnorm(m, d, d.size(), norm, 64, pad_to);
        };
    std::vector<std::string> todo;
    for (const auto& v : variants_)
      if ((bn_keys.empty() && v.rfind("bn", 0) == 0) || (v == "oracle" && !ctx.secrets)) continue;
      else todo.push_back(v);
    Progress bar("knockoff", int64_t(todo.size() * budgets_.size()), ctx.progress);
    int64_t done = 0;
    for (const auto& v : todo) {
      std::unique_ptr<models::Model> start = models::clone_model(obf);
      if (v == "reset+finetune") {
        models::Model* donor = reset_ == "donor" && ctx.donor ? ctx.donor() : nullptr;
        if (reset_ == "donor" && !donor)
          throw ConfigError("attacks.knockoff.reset: donor needs a donor (attacks.donor)");
        const WeightSet flagged =
            make_detector(detector_, DetectorParams{})->detect(obf, scanned_keys(obf, scope_));
        flagged_ = weight_count(flagged);
        reset_weights(*start, flagged, reset_, donor);
      } else if (v == "oracle") {
        WeightSet secret;
        for (const auto& t : ctx.secrets->tensors) {
          auto& idx = secret[t.key];
          idx.assign(t.index.begin(), t.index.end());
          std::sort(idx.begin(), idx.end());
        }
        reset_weights(*start, secret, "zero");
      }
      HonestTraining h = ctx.training;
      h.lrs = lrs_tried_;
      if (v == "bn_affine") h.trainable = [&](const std::string& k) { return bn_keys.count(k) > 0; };
      std::vector<HonestFit> row;
      for (int64_t b : budgets_) {
        const data::Dataset q = first_samples(ctx.queries.pool, b);
        const bool bn_first = v == "bn+finetune" || v == "bn_affine";
        row.push_back(fit_with_holdout(*start, q, ctx.norm, h, ctx.accuracy,
                                       bn_first ? recalibrate : nullptr));
        char stats[96];
        std::snprintf(stats, sizeof stats, "%s@%lld %.2f%% (lr %g)", v.c_str(), (long long)b,
                      100 * row.back().accuracy, row.back().lr);
        ++done;
        bar.update(done, double(done), stats);
      }
      fits_.push_back(std::move(row));
      run_variants_.push_back(v);
    }
    bar.finish("done");
  }

  void write(h5::File& f, const std::string& g) const override {
    f.write(g + "/budgets", budgets_, "count");
    f.write(g + "/variants", run_variants_);
    std::vector<double> acc, lr, held;
    std::vector<int64_t> epochs;
    for (const auto& row : fits_)
      for (const auto& fit : row) {
        acc.push_back(fit.accuracy);
        lr.push_back(fit.lr);
        epochs.push_back(fit.epochs);
        held.insert(held.end(), fit.holdout_accuracy.begin(), fit.holdout_accuracy.end());
      }
    const int64_t V = int64_t(fits_.size()), B = int64_t(budgets_.size());
    f.write(g + "/accuracy", acc, "fraction", {V, B});
    f.write(g + "/lr", lr, "1", {V, B});
    f.write(g + "/epochs", epochs, "count", {V, B});
    if (V && B && !held.empty())
      f.write(g + "/holdout_accuracy", held, "fraction",
              {V, B, int64_t(held.size()) / (V * B)});
    f.attr(g, "detector", detector_);
    f.attr(g, "scope", scope_);
    f.attr(g, "reset", reset_);
    f.write(g + "/lrs_tried", lrs_tried_, "1");
    f.write(g + "/flagged", flagged_, "count");
  }

  std::vector<AttackLine> lines() const override {
    std::vector<AttackLine> out;
    for (size_t v = 0; v < fits_.size(); ++v)
      for (size_t b = 0; b < budgets_.size(); ++b) {
        char lab[160];
        std::snprintf(lab, sizeof lab, "knockoff %s, %lld queries (lr %g %s)",
                      run_variants_[v].c_str(), (long long)budgets_[b], fits_[v][b].lr,
                      fits_[v][b].holdout_accuracy.empty() ? "fixed" : "by hold-out");
        out.push_back({"knockoff." + run_variants_[v] + at_budget(budgets_[b]), lab,
                       fits_[v][b].accuracy, budgets_[b],
                       run_variants_[v] == "oracle" ? AttackLine::Role::Bound
                                                    : AttackLine::Role::Attack});
      }
    return out;
  }

 private:
  std::vector<std::string> variants_, run_variants_;
  std::string detector_, scope_, reset_;
  std::vector<double> lrs_;        // attacks.knockoff.lrs ([] = attacks.train.lrs)
  std::vector<double> lrs_tried_;  // what run() used: lrs_ or attacks.train.lrs
  std::vector<int64_t> budgets_;
  std::vector<std::vector<HonestFit>> fits_;  // [variant][budget]
  int64_t flagged_ = 0;
};

}  // namespace

std::unique_ptr<AttackUnit> make_knockoff_attack() { return std::make_unique<KnockoffAttack>(); }

}  // namespace nns::exp
