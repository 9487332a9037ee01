// The quantile method (hypothesis in method.h): NNSplitter's mask and objective, each entry
// clamped to its own bounds inside the high-density part of its layer.
#include <algorithm>

#include "core/random.h"
#include "core/splitter/method.h"
#include "core/splitter/method_common.h"

namespace nns::splitter {

MethodInfo quantile_method_info() {
  using T = MethodKey::Type;
  return {"quantile",
          "nnsplitter's mask and objective, each weight bounded inside its own layer's "
          "high-density range",
          "detectors that look for values piled at the extremes find nothing when the values stay "
          "in the high-density part of their own layer",
          {{"inner", T::Float, "0.02",
            "each weight's upper bound is its layer's quantile at a level drawn in [1 - outer, "
            "1 - inner], the lower bound at a level in [inner, outer]",
            0, 0.5, {}},
           {"outer", T::Float, "0.15", "see splitter.quantile.inner", 0, 0.5, {}}},
          [](models::Model& m, std::vector<EligibleLayer> l, MethodOptions o) -> std::unique_ptr<Method> {
            if (o.number("inner") > o.number("outer"))
              throw std::invalid_argument("splitter.quantile.inner (" + o.text("inner") +
                                          ") must not exceed splitter.quantile.outer (" +
                                          o.text("outer") + ")");
            return std::make_unique<QuantileMethod>(m, std::move(l), std::move(o));
          }};
}

std::pair<std::vector<std::vector<float>>, std::vector<std::vector<float>>> QuantileMethod::bounds(
    const std::vector<LayerMask>& masks, uint64_t seed) {
  const double inner = opt_.number("inner"), outer = opt_.number("outer");
  if (!(0 <= inner && inner <= outer && outer < 0.5))
    throw std::invalid_argument("quantile method: need 0 <= inner <= outer < 0.5");
  if (sorted_.empty()) sorted_ = detail::sorted_layer_values(layers_);
  Rng rng(seed);
  // Interpolated quantiles: a bound is (almost never) a copy of an existing weight, and copies
  // would be a signature of their own.
  std::vector<std::vector<float>> lo(masks.size()), hi(masks.size());
  for (size_t m = 0; m < masks.size(); ++m) {
    const auto& s = sorted_.at(masks[m].layer);
    for (size_t i = 0; i < masks[m].index.size(); ++i) {
      lo[m].push_back(detail::quantile(s, rng.uniform(inner, outer)));
      hi[m].push_back(detail::quantile(s, 1.0 - rng.uniform(inner, outer)));
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

}  // namespace nns::splitter
