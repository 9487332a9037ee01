// BatchNorm re-estimation (AdaBN, label-free; docs/attacks.md): the obfuscated model's BatchNorm
// statistics re-estimated on the first Q query images, no weight changed, no label used. On a
// BatchNorm network it undoes NNSplitter at ~0.1% of the weights (10% -> 92% on ResNet-20).
#include "experiments/attack_unit.h"

namespace nns::exp {

namespace {

class BnRecalibrateAttack : public AttackUnit {
 public:
  std::string name() const override { return "bn_recalibrate"; }
  std::string summary() const override {
    return "BatchNorm statistics re-estimated on the unlabelled queries, nothing else changed";
  }
  std::vector<KeySpec> keys() const override {
    return {unit_key("batch", ValueType::Int, "64", "images per forward pass", 1, 65536)};
  }
  void parse(const Config& cfg) override { batch_ = int(cfg.get_int("attacks.bn_recalibrate.batch")); }
  bool uses_queries() const override { return true; }
  void run(AttackContext& ctx) override {
    budgets_ = ctx.queries.budgets;
    accuracy_.clear();
    layers_ = 0;
    for (int64_t b : budgets_) {
      auto copy = models::clone_model(*ctx.obfuscated);
      layers_ = recalibrate_batchnorm(*copy, ctx.queries.pool, b, ctx.norm, batch_, ctx.pad_to);
      if (layers_ == 0) break;  // no BatchNorm: nothing to re-estimate
      accuracy_.push_back(ctx.accuracy(*copy));
    }
  }
  void write(h5::File& f, const std::string& g) const override {
    f.write(g + "/budgets", budgets_, "count");
    f.write(g + "/accuracy", accuracy_, "fraction");
    f.write(g + "/batchnorm_layers", int64_t(layers_), "count");
  }
  std::vector<AttackLine> lines() const override {
    std::vector<AttackLine> out;
    for (size_t b = 0; b < accuracy_.size(); ++b)
      out.push_back({"bn_recal" + at_budget(budgets_[b]),
                     "BN statistics re-estimated on " + std::to_string(budgets_[b]) +
                         " unlabelled queries",
                     accuracy_[b], budgets_[b]});
    return out;
  }

 private:
  int batch_ = 64, layers_ = 0;
  std::vector<int64_t> budgets_;
  std::vector<double> accuracy_;
};

}  // namespace

std::unique_ptr<AttackUnit> make_bn_recalibrate_attack() {
  return std::make_unique<BnRecalibrateAttack>();
}

}  // namespace nns::exp
