// Fine-tuning (SPEC §2): every weight of the obfuscated model fine-tuned on a share of the
// training data (true labels), beside the architecture trained from scratch on the same data. It
// uses the victim's training data rather than queries, so it stays out of the query headline.
#include <cstdio>

#include "experiments/attack_unit.h"

namespace nns::exp {

namespace {

class FinetuneAttack : public AttackUnit {
 public:
  std::string name() const override { return "finetune"; }
  std::string summary() const override {
    return "every weight fine-tuned on a share of the training data, beside training from scratch";
  }
  std::vector<KeySpec> keys() const override {
    using V = ValueType;
    return {unit_key("fractions", V::FloatList, "[0.01, 0.05, 0.1]",
                     "shares of the training set the attacker holds", 1e-6, 1),
            unit_key("epochs", V::Int, "5", "fine-tuning epochs", 0, {}),
            unit_key("optimizer", V::String, "sgd", "sgd or adam", {}, {}, {"sgd", "adam"}),
            unit_key("lr", V::Float, "0.01", "fine-tuning learning rate (constant)", 1e-9, {}),
            unit_key("momentum", V::Float, "0.9", "SGD momentum (plain)", 0, 1),
            unit_key("weight_decay", V::Float, "5e-4", "L2 weight decay", 0, {}),
            unit_key("batch", V::Int, "128", "fine-tuning batch size", 1, 65536),
            unit_key("scratch", V::Bool, "true",
                     "also train the architecture from scratch on the same data")};
  }
  void parse(const Config& cfg) override {
    const std::string p = "attacks.finetune.";
    o_.fractions = cfg.get_floats(p + "fractions");
    o_.epochs = int(cfg.get_int(p + "epochs"));
    o_.optimizer = cfg.get_string(p + "optimizer");
    o_.lr = float(cfg.get_float(p + "lr"));
    o_.momentum = float(cfg.get_float(p + "momentum"));
    o_.weight_decay = float(cfg.get_float(p + "weight_decay"));
    o_.batch = int(cfg.get_int(p + "batch"));
    o_.scratch = cfg.get_bool(p + "scratch");
    if (o_.fractions.empty()) throw ConfigError(p + "fractions: needs at least one value");
  }
  void run(AttackContext& ctx) override {
    o_.seed = ctx.seed;
    o_.pad_to = ctx.pad_to;
    o_.progress = ctx.progress;
    r_ = finetune_attack(*ctx.obfuscated, ctx.splits->train, ctx.norm, o_, ctx.accuracy);
  }
  void write(h5::File& f, const std::string& g) const override {
    const int64_t n = int64_t(r_.fractions.size());
    const int64_t cols = n ? int64_t(r_.accuracy[0].size()) : 0;
    std::vector<double> a, sc;
    for (auto& row : r_.accuracy) a.insert(a.end(), row.begin(), row.end());
    for (auto& row : r_.scratch_accuracy) sc.insert(sc.end(), row.begin(), row.end());
    f.write(g + "/fractions", r_.fractions, "fraction");
    f.write(g + "/accuracy", a, "fraction", {n, cols});
    if (!sc.empty()) f.write(g + "/scratch_accuracy", sc, "fraction", {n, cols});
    f.attr(g, "epochs", int64_t(o_.epochs));
    f.attr(g, "lr", double(o_.lr));
    f.attr(g, "optimizer", o_.optimizer);
  }
  std::vector<AttackLine> lines() const override {
    std::vector<AttackLine> out;
    for (size_t i = 0; i < r_.fractions.size(); ++i) {
      char p[32];
      std::snprintf(p, sizeof p, "%g%%", 100 * r_.fractions[i]);
      out.push_back({std::string("finetune@") + p,
                     std::string("fine-tuned on ") + p + " of the training data",
                     r_.accuracy[i].back(), -1});
      if (!r_.scratch_accuracy.empty())
        out.push_back({std::string("finetune.scratch@") + p,
                       std::string("scratch on ") + p + " of the training data",
                       r_.scratch_accuracy[i].back(), -1, AttackLine::Role::Floor});
    }
    return out;
  }

 private:
  FinetuneOptions o_;
  FinetuneResult r_;
};

}  // namespace

std::unique_ptr<AttackUnit> make_finetune_attack() { return std::make_unique<FinetuneAttack>(); }

}  // namespace nns::exp
