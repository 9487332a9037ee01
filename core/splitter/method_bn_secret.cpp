// The bn_secret method. Hypothesis (docs/methods.md): re-estimating BatchNorm statistics undoes
// weight obfuscation because the damage is mostly a per-channel shift against frozen running
// statistics; BN's own affine parameters (gamma, beta) are what re-estimation never touches. So
// the chosen filters' output channels also get their gamma and beta changed, and those entries go
// into the secrets like the weights (restored bit-exactly). Whether knockoff fine-tuning simply
// relearns two numbers per channel is the measurement.
//
// An episode: for each chosen filter f of an eligible layer whose output feeds a BatchNorm (the
// next BatchNorm2d with as many channels in the model's module order: bn1 after conv1,
// layerX.Y.bn2 after layerX.Y.conv2), (gamma_f, beta_f) is changed by `mode`:
//   negate  (gamma_f, beta_f) -> (-gamma_f, -beta_f): the channel is inverted before its ReLU;
//           to undo it, gradient descent has to carry gamma_f through 0, where the channel's
//           own weights get no gradient;
//   swap    exchanged with the channel g of the same BN farthest from it in (gamma, beta)
//           (standardised), so every BN keeps its multiset of values;
// then NNSplitter's Adam on the chosen filters' entries |w - c| < eps (seeing the changed BN).
// The BN entries are owned by the method like the weights (extra layers after the eligible
// ones, one per BN weight and bias, without filters), so undo, best-keeping, resume and the
// secrets need nothing new. A model without BatchNorm gets nnsplitter exactly.
#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

#include "core/nn/layers.h"
#include "core/splitter/method.h"

namespace nns::splitter {

namespace {

// For each eligible layer, the BatchNorm normalising its output (null when none).
std::vector<nn::BatchNorm2d*> following_batchnorms(models::Model& model,
                                                    const std::vector<EligibleLayer>& layers) {
  auto mods = model.modules();
  std::vector<nn::BatchNorm2d*> out;
  for (const auto& l : layers) {
    nn::BatchNorm2d* bn = nullptr;
    nn::Module* owner = model.module_for(l.key);
    auto it = std::find_if(mods.begin(), mods.end(), [&](auto& e) { return e.second == owner; });
    if (owner && dynamic_cast<nn::Conv2d*>(owner) && it != mods.end())
      for (auto j = it + 1; j != mods.end() && !bn; ++j) {
        if (dynamic_cast<nn::Conv2d*>(j->second) || dynamic_cast<nn::Linear*>(j->second)) break;
        if (auto* b = dynamic_cast<nn::BatchNorm2d*>(j->second); b && b->c == l.filters) bn = b;
      }
    out.push_back(bn);
  }
  return out;
}

class BnSecretMethod : public Method {
 public:
  BnSecretMethod(models::Model& model, std::vector<EligibleLayer> layers, MethodOptions opt)
      : Method(model, std::move(layers), std::move(opt)), eligible_(layers_.size()) {
    mode_ = opt_.text("mode");
    if (mode_ != "negate" && mode_ != "swap")
      throw std::invalid_argument("splitter.bn_secret.mode: '" + mode_ + "' (negate or swap)");
    bn_ = following_batchnorms(model_, layers_);
    // One extra layer per distinct BatchNorm weight and bias, after the eligible ones.
    auto params = model_.parameters();
    auto key_of = [&](nn::Parameter* p) {
      for (auto& [k, q] : params)
        if (q == p) return k;
      throw std::logic_error("bn_secret: a BatchNorm parameter without a key");
    };
    for (size_t l = 0; l < eligible_; ++l) {
      if (!bn_[l]) continue;
      for (nn::Parameter* p : {&bn_[l]->weight, &bn_[l]->bias}) {
        if (extra_.count(p)) continue;
        extra_[p] = layers_.size();
        layers_.push_back({key_of(p), p, int(p->value.numel()), 1});
      }
    }
  }

  std::vector<int> choices_per_layer() const override {
    std::vector<int> n;
    for (size_t l = 0; l < eligible_; ++l) n.push_back(layers_[l].filters);
    return n;
  }

 protected:
  MaskSet obfuscate_episode(const FilterChoice& filters, ObfuscationData& data, uint64_t,
                            EpisodeOutcome& out) override {
    const std::vector<EligibleLayer> eligible(layers_.begin(), layers_.begin() + ptrdiff_t(eligible_));
    auto masks = select_mask(eligible, filters, opt_.c, opt_.eps);
    // The BN entries to change, per extra layer, with their new values.
    std::map<size_t, std::map<int64_t, float>> bn_values;
    for (size_t l = 0; l < eligible_; ++l) {
      if (!bn_[l] || masks[l].filters.empty()) continue;
      const Tensor g = bn_[l]->weight.value.to(Device::CPU), b = bn_[l]->bias.value.to(Device::CPU);
      auto& gv = bn_values[extra_.at(&bn_[l]->weight)];
      auto& bv = bn_values[extra_.at(&bn_[l]->bias)];
      // swap: a channel takes part in one exchange at most (chosen channels are never partners).
      std::vector<char> used(size_t(g.numel()), 0);
      for (int32_t f : masks[l].filters) used[size_t(f)] = 1;
      for (int32_t f : masks[l].filters) {
        if (mode_ == "negate") {
          gv[f] = -g.f32()[f];
          bv[f] = -b.f32()[f];
          continue;
        }
        const int32_t p = farthest_channel(g, b, f, used);
        if (p < 0) continue;
        used[size_t(p)] = 1;
        gv[f] = g.f32()[p], bv[f] = b.f32()[p];
        gv[p] = g.f32()[f], bv[p] = b.f32()[f];
      }
    }
    for (size_t l = eligible_; l < layers_.size(); ++l) {
      LayerMask m;
      m.layer = int(l);
      for (auto& [i, v] : bn_values[l]) m.index.push_back(i);
      masks.push_back(std::move(m));
    }
    MaskSet set(layers_, masks);  // reads the pretrained values of every entry
    for (auto& [l, entries] : bn_values) {
      Tensor h = layers_[l].param->value.to(Device::CPU);
      for (auto& [i, v] : entries) h.f32()[i] = v;
      layers_[l].param->value.copy_from(h);
    }
    masks.resize(eligible_);
    auto r = obfuscate(model_, eligible, masks, data, opt_.obfuscator);
    out.accuracy = r.best_accuracy;
    out.steps = r.steps;
    out.evaluations = r.evaluations;
    return set;
  }

 private:
  // The unused channel of the same BN whose (gamma, beta), standardised over the layer, lies
  // farthest from channel f's (ties: the lower index); -1 when every channel is used.
  static int32_t farthest_channel(const Tensor& g, const Tensor& b, int32_t f,
                                  const std::vector<char>& used) {
    const int64_t n = g.numel();
    auto sd = [&](const float* v) {
      double m = 0, q = 0;
      for (int64_t i = 0; i < n; ++i) m += v[i];
      m /= double(n);
      for (int64_t i = 0; i < n; ++i) q += (v[i] - m) * (v[i] - m);
      return std::max(std::sqrt(q / double(n)), 1e-12);
    };
    const double sg = sd(g.f32()), sb = sd(b.f32());
    int32_t best = -1;
    double far = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (used[size_t(i)]) continue;
      const double dg = (g.f32()[i] - g.f32()[f]) / sg, db = (b.f32()[i] - b.f32()[f]) / sb;
      if (dg * dg + db * db > far) far = dg * dg + db * db, best = int32_t(i);
    }
    return best;
  }

  size_t eligible_;
  std::string mode_;
  std::vector<nn::BatchNorm2d*> bn_;
  std::map<nn::Parameter*, size_t> extra_;  // BN parameter -> its layer index in layers_
};

}  // namespace

MethodInfo bn_secret_method_info() {
  using T = MethodKey::Type;
  return {"bn_secret",
          "nnsplitter plus the BatchNorm scale and shift of each chosen filter's output channel "
          "(negated, or swapped with another channel's), restored from the secrets like the "
          "weights",
          "BN statistics re-estimation undoes weight obfuscation because the damage is a "
          "per-channel shift; BN's own affine parameters are what re-estimation never touches",
          {{"mode", T::String, "negate",
            "how the chosen channels' (gamma, beta) change: negate (-gamma, -beta) or swap "
            "(exchanged with the channel of the same BatchNorm farthest from it; every BN keeps "
            "its values)",
            {}, {}, {"negate", "swap"}}},
          [](models::Model& m, std::vector<EligibleLayer> l, MethodOptions o) -> std::unique_ptr<Method> {
            return std::make_unique<BnSecretMethod>(m, std::move(l), std::move(o));
          }};
}

}  // namespace nns::splitter
