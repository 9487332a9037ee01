// The critical method. Hypothesis (docs/methods.md), from the curve: NNSplitter's secrets are
// the weights nearest c (about 0), so an attacker who resets the weights it flags to zero puts
// them back almost exactly (ResNet-20 at 3% of the weights: detect -> zero -> fine-tune 91% at
// 300 queries, fine-tuning alone 88%). The largest-magnitude weights of the chosen filters
// cannot be guessed: zeroing them prunes the filter's most important weights, so a reset no
// longer helps, and fine-tuning has to relearn them. Same budget as nnsplitter (per layer, as
// many entries as the |w - c| < eps mask of the chosen filters holds), the same Adam and clamp.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/splitter/method.h"

namespace nns::splitter {

namespace {

class CriticalMethod : public Method {
 public:
  using Method::Method;

  // Per layer: the |w - c| < eps mask's size n, spent on the n largest |w| of the chosen filters
  // (ties: the lower index), ascending.
  std::vector<LayerMask> critical_mask(const FilterChoice& filters) const {
    auto masks = select_mask(layers_, filters, opt_.c, opt_.eps);
    for (auto& m : masks) {
      const size_t n = m.index.size();
      if (n == 0) continue;
      const EligibleLayer& l = layers_[size_t(m.layer)];
      const Tensor w = l.param->value.to(Device::CPU);
      std::vector<int64_t> cand;
      for (int32_t f : m.filters)
        for (int64_t j = 0; j < l.filter_size; ++j) cand.push_back(int64_t(f) * l.filter_size + j);
      std::partial_sort(cand.begin(), cand.begin() + ptrdiff_t(n), cand.end(),
                        [&](int64_t a, int64_t b) {
                          const float x = std::fabs(w.f32()[a]), y = std::fabs(w.f32()[b]);
                          return x > y || (x == y && a < b);
                        });
      m.index.assign(cand.begin(), cand.begin() + ptrdiff_t(n));
      std::sort(m.index.begin(), m.index.end());
    }
    return masks;
  }

 protected:
  MaskSet obfuscate_episode(const FilterChoice& filters, ObfuscationData& data, uint64_t,
                            EpisodeOutcome& out) override {
    return adam_episode(MaskSet(layers_, critical_mask(filters)), data, out);
  }
};

}  // namespace

MethodInfo critical_method_info() {
  return {"critical",
          "nnsplitter's budget, objective and clamp on the largest-magnitude weights of the "
          "chosen filters instead of those nearest c",
          "NNSplitter's secrets are the weights nearest c (~0), so resetting flagged weights to "
          "zero restores them; the largest weights of a filter cannot be guessed, and zeroing "
          "them prunes what the filter most relies on",
          {},
          [](models::Model& m, std::vector<EligibleLayer> l, MethodOptions o) -> std::unique_ptr<Method> {
            return std::make_unique<CriticalMethod>(m, std::move(l), std::move(o));
          }};
}

}  // namespace nns::splitter
