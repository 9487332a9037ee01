// The published protocol (GroupCover, ICML 2024; docs/attacks.md): detect the obfuscated weights
// from the weight statistics, reset them, knockoff fine-tuning at GroupCover's own settings on
// the shared queries. Every detector is scored against the secrets when they are known.
#include <algorithm>

#include "experiments/attack_unit.h"
#include "experiments/groupcover.h"

namespace nns::exp {

namespace {

class GroupCoverAttack : public AttackUnit {
 public:
  std::string name() const override { return "groupcover"; }
  std::string summary() const override {
    return "GroupCover's protocol: detect, reset, knockoff fine-tuning at its published settings";
  }
  std::vector<KeySpec> keys() const override {
    using V = ValueType;
    return {unit_key("detector", V::String, "extreme_percentile",
                     "detector whose flags are reset (every detector is scored against the secrets)",
                     {}, {}, detector_names()),
            unit_key("percentile", V::Float, "0.001",
                     "extreme_percentile*: percent of the sorted weights at each end (GroupCover: "
                     "0.001)", 1e-9, 49),
            unit_key("eps", V::Float, "2e-3",
                     "extreme_percentile*: flag weights within 2*eps of either end value "
                     "(GroupCover: 2e-3)", 0, {}),
            unit_key("bin_fraction", V::Float, "1e-3",
                     "cv_bins: bin width as a fraction of the weight range", 1e-9, 0.5),
            unit_key("scope", V::String, "trainable",
                     "what the detectors scan: trainable = every trainable parameter (GroupCover; "
                     "BatchNorm scales included), weights = convolution and linear weights only",
                     {}, {}, detector_scopes()),
            unit_key("resets", V::StringList, "[donor]",
                     "reset modes, each followed by knockoff fine-tuning (donor: attacks.donor)",
                     {}, {}, reset_modes()),
            unit_key("epochs", V::Int, "10", "knockoff epochs (GroupCover: 10)", 0, {}),
            unit_key("lr", V::Float, "0.1", "knockoff SGD learning rate, constant (GroupCover: 0.1)",
                     1e-9, {}),
            unit_key("momentum", V::Float, "0.5", "knockoff SGD momentum (GroupCover: 0.5)", 0, 1),
            unit_key("weight_decay", V::Float, "0", "knockoff L2 weight decay (GroupCover: 0)", 0,
                     {}),
            unit_key("batch", V::Int, "64", "knockoff batch size (GroupCover: 64)", 1, 65536)};
  }
  void parse(const Config& cfg) override {
    const std::string p = "attacks.groupcover.";
    o_.detector = cfg.get_string(p + "detector");
    o_.params.percentile = cfg.get_float(p + "percentile");
    o_.params.eps = cfg.get_float(p + "eps");
    o_.params.bin_fraction = cfg.get_float(p + "bin_fraction");
    o_.scope = cfg.get_string(p + "scope");
    o_.resets = cfg.get_strings(p + "resets");
    o_.knockoff.epochs = int(cfg.get_int(p + "epochs"));
    o_.knockoff.lr = float(cfg.get_float(p + "lr"));
    o_.knockoff.momentum = float(cfg.get_float(p + "momentum"));
    o_.knockoff.weight_decay = float(cfg.get_float(p + "weight_decay"));
    o_.knockoff.batch = int(cfg.get_int(p + "batch"));
    if (o_.resets.empty()) throw ConfigError(p + "resets: needs at least one mode");
  }
  bool uses_queries() const override { return true; }
  void run(AttackContext& ctx) override {
    o_.knockoff.budgets = ctx.queries.budgets;
    o_.knockoff.seed = ctx.seed;
    o_.knockoff.pad_to = ctx.pad_to;
    models::Model* donor = nullptr;
    if (std::find(o_.resets.begin(), o_.resets.end(), "donor") != o_.resets.end()) {
      donor = ctx.donor ? ctx.donor() : nullptr;
      if (!donor) throw ConfigError("attacks.groupcover.resets: donor needs a donor (attacks.donor)");
    }
    r_ = groupcover_attack(*ctx.obfuscated, ctx.secrets, donor, ctx.queries.pool, ctx.norm, o_,
                           ctx.accuracy);
  }
  void write(h5::File& f, const std::string& g) const override {
    f.write(g + "/budgets", r_.budgets, "count");
    f.write(g + "/resets", r_.resets);
    f.write(g + "/accuracy_reset", r_.accuracy_reset, "fraction");
    std::vector<double> rec;
    for (const auto& row : r_.recovered) rec.insert(rec.end(), row.begin(), row.end());
    f.write(g + "/recovered", rec, "fraction",
            {int64_t(r_.recovered.size()), int64_t(r_.budgets.size())});
    f.write(g + "/flagged", weight_count(r_.flagged), "count");
    for (const auto& s : r_.scores) {
      const std::string d = g + "/detectors/" + s.detector;
      f.write(d + "/flagged", s.flagged, "count");
      f.write(d + "/true_positives", s.true_positives, "count");
      f.write(d + "/secrets", s.secrets, "count");
      f.write(d + "/precision", s.precision, "fraction");
      f.write(d + "/recall", s.recall, "fraction");
    }
    f.attr(g, "detector", o_.detector);
    f.attr(g, "percentile", o_.params.percentile);
    f.attr(g, "eps", o_.params.eps);
    f.attr(g, "scope", o_.scope);
    f.attr(g, "epochs", int64_t(o_.knockoff.epochs));
    f.attr(g, "lr", double(o_.knockoff.lr));
    f.attr(g, "momentum", double(o_.knockoff.momentum));
    f.attr(g, "batch", int64_t(o_.knockoff.batch));
  }
  std::vector<AttackLine> lines() const override {
    using R = AttackLine::Role;
    std::vector<AttackLine> out;
    for (const auto& s : r_.scores) {
      out.push_back({"precision." + s.detector, "precision of " + s.detector, s.precision, -1, R::Score});
      out.push_back({"recall." + s.detector, "recall of " + s.detector, s.recall, -1, R::Score});
    }
    for (size_t i = 0; i < r_.resets.size(); ++i) {
      const std::string what = o_.detector + " -> " + r_.resets[i];
      out.push_back({"groupcover." + r_.resets[i] + ".reset", what + ", no training",
                     r_.accuracy_reset[i], 0});
      for (size_t b = 0; b < r_.budgets.size(); ++b)
        out.push_back({"groupcover." + r_.resets[i] + at_budget(r_.budgets[b]),
                       what + " -> knockoff, " + std::to_string(r_.budgets[b]) + " queries",
                       r_.recovered[i][b], r_.budgets[b]});
    }
    return out;
  }

 private:
  GroupCoverOptions o_;
  GroupCoverResult r_;
};

}  // namespace

std::unique_ptr<AttackUnit> make_groupcover_attack() { return std::make_unique<GroupCoverAttack>(); }

}  // namespace nns::exp
