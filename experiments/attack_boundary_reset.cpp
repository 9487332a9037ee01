// Boundary reset (GroupCover's first step, SPEC §2): the weights within delta of the eligible
// layers' minimum or maximum reset to zero, the layer mean or a donor's values; optionally
// fine-tuned on a few labelled training samples (other data: out of the query headline).
#include "experiments/attack_unit.h"

namespace nns::exp {

namespace {

class BoundaryResetAttack : public AttackUnit {
 public:
  std::string name() const override { return "boundary_reset"; }
  std::string summary() const override {
    return "weights within delta of the eligible range's ends reset (zero, layer mean or donor)";
  }
  std::vector<KeySpec> keys() const override {
    using V = ValueType;
    return {unit_key("delta", V::Float, "1e-3", "flag weights within delta of the model's min or max",
                     0, {}),
            unit_key("mode", V::String, "zero",
                     "reset flagged weights to zero, to the layer mean, or to the donor's values "
                     "(attacks.donor)",
                     {}, {}, {"zero", "mean", "donor"}),
            unit_key("samples", V::Int, "0",
                     "labelled training samples for few-shot fine-tuning after the reset (0 = none)",
                     0, {}),
            unit_key("epochs", V::Int, "5", "few-shot fine-tuning epochs", 0, {}),
            unit_key("lr", V::Float, "0.01", "few-shot fine-tuning learning rate", 1e-9, {}),
            unit_key("batch", V::Int, "64", "few-shot fine-tuning batch size", 1, 65536)};
  }
  void parse(const Config& cfg) override {
    const std::string p = "attacks.boundary_reset.";
    o_.delta = cfg.get_float(p + "delta");
    o_.mode = cfg.get_string(p + "mode");
    o_.finetune_samples = cfg.get_int(p + "samples");
    o_.finetune_epochs = int(cfg.get_int(p + "epochs"));
    o_.lr = float(cfg.get_float(p + "lr"));
    o_.batch = int(cfg.get_int(p + "batch"));
  }
  void run(AttackContext& ctx) override {
    if (o_.mode == "donor") {
      o_.donor = ctx.donor ? ctx.donor() : nullptr;
      if (!o_.donor)
        throw ConfigError("attacks.boundary_reset.mode: donor needs a donor (attacks.donor)");
    }
    o_.seed = ctx.seed;
    o_.pad_to = ctx.pad_to;
    r_ = boundary_reset_attack(*ctx.obfuscated, ctx.layers, ctx.secrets, ctx.splits->train,
                               ctx.norm, o_, ctx.accuracy);
  }
  void write(h5::File& f, const std::string& g) const override {
    f.write(g + "/detected", r_.detected, "count");
    f.write(g + "/detected_per_layer", r_.detected_per_layer, "count");
    f.write(g + "/true_positives", r_.true_positives, "count");
    f.write(g + "/obfuscated", r_.obfuscated, "count");
    f.write(g + "/accuracy_reset", r_.accuracy_reset, "fraction");
    f.write(g + "/accuracy_finetuned", r_.accuracy_finetuned, "fraction");
    f.attr(g, "delta", o_.delta);
    f.attr(g, "mode", o_.mode);
    f.attr(g, "lo", r_.lo);
    f.attr(g, "hi", r_.hi);
  }
  std::vector<AttackLine> lines() const override {
    std::vector<AttackLine> out = {
        {"boundary_reset", "boundary reset (" + o_.mode + "), no training", r_.accuracy_reset, 0}};
    if (r_.accuracy_finetuned.size() > 1)
      out.push_back({"boundary_reset+ft",
                     "boundary reset + fine-tuning on " + std::to_string(o_.finetune_samples) +
                         " training samples",
                     r_.accuracy_finetuned.back(), -1});
    return out;
  }

 private:
  BoundaryResetOptions o_;
  BoundaryResetResult r_;
};

}  // namespace

std::unique_ptr<AttackUnit> make_boundary_reset_attack() {
  return std::make_unique<BoundaryResetAttack>();
}

}  // namespace nns::exp
