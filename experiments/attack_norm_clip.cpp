// Norm clipping (SPEC §2): every eligible layer clamped to mean ± k·std of its own (obfuscated)
// weights, for each k, and to one global range. Needs no query.
#include <cstdio>

#include "experiments/attack_unit.h"

namespace nns::exp {

namespace {

class NormClipAttack : public AttackUnit {
 public:
  std::string name() const override { return "norm_clip"; }
  std::string summary() const override {
    return "every eligible layer clamped to mean +- k*std of its weights, and to a global range";
  }
  std::vector<KeySpec> keys() const override {
    return {unit_key("k", ValueType::FloatList, "[1, 2, 3]",
                     "clip each eligible layer to mean +- k*std, for each k", 0, {}),
            unit_key("global_range", ValueType::FloatPairOrAuto, "auto",
                     "also clip every eligible layer to [lo, hi]; auto = mean +- 3*std of all "
                     "the obfuscated eligible weights (what the attacker can compute); none = skip",
                     {}, {}, {"auto", "none"})};
  }
  void parse(const Config& cfg) override {
    ks_ = cfg.get_floats("attacks.norm_clip.k");
    global_ = !cfg.is_word("attacks.norm_clip.global_range", "none");
    auto_range_ = cfg.is_word("attacks.norm_clip.global_range", "auto");
    if (global_ && !auto_range_) range_ = cfg.get_pair("attacks.norm_clip.global_range");
  }
  void run(AttackContext& ctx) override {
    if (auto_range_) range_ = auto_global_range(*ctx.obfuscated, ctx.layers, 3.0);
    r_ = norm_clip_attack(*ctx.obfuscated, ctx.layers, ks_, global_ ? range_.first : 0,
                          global_ ? range_.second : 0, ctx.accuracy);
  }
  void write(h5::File& f, const std::string& g) const override {
    f.write(g + "/k", r_.k, "1");
    f.write(g + "/accuracy", r_.accuracy, "fraction");
    if (r_.global_accuracy >= 0) {
      f.write(g + "/global_accuracy", r_.global_accuracy, "fraction");
      f.write(g + "/global_lo", r_.global_lo, "weight");
      f.write(g + "/global_hi", r_.global_hi, "weight");
    }
  }
  std::vector<AttackLine> lines() const override {
    std::vector<AttackLine> out;
    for (size_t i = 0; i < r_.k.size(); ++i) {
      char k[32];
      std::snprintf(k, sizeof k, "%g", r_.k[i]);
      out.push_back({std::string("norm_clip.k=") + k,
                     std::string("norm clipping to mean +- ") + k + " std", r_.accuracy[i], 0});
    }
    if (r_.global_accuracy >= 0) {
      char lab[96];
      std::snprintf(lab, sizeof lab, "norm clipping to [%.4g, %.4g]", r_.global_lo, r_.global_hi);
      out.push_back({"norm_clip.global", lab, r_.global_accuracy, 0});
    }
    return out;
  }

 private:
  std::vector<double> ks_;
  bool global_ = true, auto_range_ = true;
  std::pair<double, double> range_{0, 0};
  NormClipResult r_;
};

}  // namespace

std::unique_ptr<AttackUnit> make_norm_clip_attack() { return std::make_unique<NormClipAttack>(); }

}  // namespace nns::exp
