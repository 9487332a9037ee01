// The permute method (hypothesis in method.h): values swapped among the entries of the chosen
// filters, so every layer keeps its multiset of values exactly.
//
// Per layer the budget of displaced entries is the size of NNSplitter's mask for the same
// filters (|w - c| < eps), rounded up to even: the same number of secrets, spent on swaps. The
// rounds are the swap search of method_common.h; the candidates of a round: every pair of the
// filters' entries with a positive first-order loss gain.
#include <algorithm>

#include "core/splitter/method.h"
#include "core/splitter/method_common.h"

namespace nns::splitter {

namespace {

std::vector<detail::SwapPair> all_pairs(const detail::SwapLayer& s) {
  std::vector<detail::SwapPair> pairs;
  const size_t n = s.index.size();
  for (size_t i = 0; i < n; ++i)
    for (size_t j = i + 1; j < n; ++j) {
      double gain = (s.grad[i] - s.grad[j]) * (double(s.value[j]) - double(s.value[i]));
      if (gain > 0) pairs.push_back({gain, uint32_t(i), uint32_t(j)});
    }
  return pairs;
}

}  // namespace

MethodInfo permute_method_info() {
  using T = MethodKey::Type;
  return {"permute",
          "values swapped inside the chosen filters; every layer keeps its values",
          "a permutation is invisible to value detectors: every layer's multiset of values is "
          "preserved exactly",
          {{"rounds", T::Int, "12", "rounds of gradient-guided swaps at most", 1, {}, {}},
           {"batches", T::Int, "4", "training batches averaged for each round's gradient", 1, {}, {}},
           {"step", T::Float, "0.25",
            "swaps per layer and round, as a fraction of the layer's budget", 0.001, 1, {}}},
          [](models::Model& m, std::vector<EligibleLayer> l, MethodOptions o) -> std::unique_ptr<Method> {
            return std::make_unique<PermuteMethod>(m, std::move(l), std::move(o));
          }};
}

MaskSet PermuteMethod::obfuscate_episode(const FilterChoice& filters, ObfuscationData& data,
                                         uint64_t, EpisodeOutcome& out) {
  // Budgets from NNSplitter's mask; candidates: every entry of the chosen filters.
  auto budget_masks = select_mask(layers_, filters, opt_.c, opt_.eps);
  std::vector<detail::SwapLayer> states;
  for (const auto& bm : budget_masks) {
    if (bm.index.size() == 0 || bm.filters.empty()) continue;
    const EligibleLayer& l = layers_[bm.layer];
    detail::SwapLayer s;
    s.layer = bm.layer;
    s.grad_filters = bm.filters;
    for (int32_t f : bm.filters)
      for (int64_t j = 0; j < l.filter_size; ++j) s.index.push_back(int64_t(f) * l.filter_size + j);
    s.budget = std::min<int64_t>(int64_t(s.index.size()), int64_t(bm.index.size() + 1) / 2 * 2);
    Tensor w = l.param->value.to(Device::CPU);
    for (int64_t i : s.index) s.original.push_back(w.f32()[i]);
    s.value = s.original;
    states.push_back(std::move(s));
  }
  detail::SwapRounds rounds{int(opt_.integer("rounds")), int(opt_.integer("batches")),
                            opt_.number("step"),
                            opt_.obfuscator.patience, opt_.obfuscator.stop,
                            opt_.obfuscator.bn_batch_stats};
  return detail::swap_search(model_, layers_, std::move(states), budget_masks, data, rounds,
                             [](size_t, const detail::SwapLayer& s) { return all_pairs(s); }, out);
}

}  // namespace nns::splitter
