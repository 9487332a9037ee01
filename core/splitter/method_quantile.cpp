// The quantile method (hypothesis in method.h): NNSplitter's mask and objective, each entry
// clamped to its own bounds inside the high-density part of its layer.
#include <algorithm>

#include "core/random.h"
#include "core/splitter/method.h"
#include "core/splitter/method_common.h"

namespace nns::splitter {

std::pair<std::vector<std::vector<float>>, std::vector<std::vector<float>>> QuantileMethod::bounds(
    const std::vector<LayerMask>& masks, uint64_t seed) {
  if (!(0 <= opt_.quantile_inner && opt_.quantile_inner <= opt_.quantile_outer &&
        opt_.quantile_outer < 0.5))
    throw std::invalid_argument("quantile method: need 0 <= inner <= outer < 0.5");
  if (sorted_.empty()) sorted_ = detail::sorted_layer_values(layers_);
  Rng rng(seed);
  // Interpolated quantiles: a bound is (almost never) a copy of an existing weight, and copies
  // would be a signature of their own.
  std::vector<std::vector<float>> lo(masks.size()), hi(masks.size());
  for (size_t m = 0; m < masks.size(); ++m) {
    const auto& s = sorted_.at(masks[m].layer);
    for (size_t i = 0; i < masks[m].index.size(); ++i) {
      lo[m].push_back(detail::quantile(s, rng.uniform(opt_.quantile_inner, opt_.quantile_outer)));
      hi[m].push_back(detail::quantile(s, 1.0 - rng.uniform(opt_.quantile_inner, opt_.quantile_outer)));
    }
  }
  return {lo, hi};
}

MaskSet QuantileMethod::obfuscate_episode(const FilterChoice& filters, ObfuscationData& data,
                                          uint64_t seed, EpisodeOutcome& out) {
  MaskSet set(layers_, select_mask(layers_, filters, opt_.c, opt_.eps));
  EntryBounds b;
  std::tie(b.lo, b.hi) = bounds(set.masks(), seed);
  auto r = obfuscate(model_, layers_, set.masks(), data, opt_.obfuscator, &b);
  out.accuracy = r.best_accuracy;
  out.steps = r.steps;
  out.evaluations = r.evaluations;
  return set;
}

std::map<std::string, std::string> QuantileMethod::metadata() const {
  auto m = Method::metadata();
  m["quantile_inner"] = detail::num(opt_.quantile_inner);
  m["quantile_outer"] = detail::num(opt_.quantile_outer);
  return m;
}

}  // namespace nns::splitter
