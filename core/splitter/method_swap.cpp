// The swap method (hypothesis in method.h): a permutation at layer scope, so every layer keeps
// its multiset of values exactly, with the chosen filters as one side of every swap.
//
// Per layer the budget of displaced entries is the size of NNSplitter's mask for the chosen
// filters (|w - c| < eps), rounded up to even, counting both ends of each swap: as many secrets
// as permute and about as many as nnsplitter. Only entries whose pretrained value lies strictly
// inside the layer's (q, 1 - q) quantiles take part; a swap exchanges two such values, so the
// set of positions holding movable values never changes and no extreme of the layer is moved.
// The rounds are the swap search of method_common.h with the layer's full weight gradient; the
// candidates of a round: every pair of movable entries of the chosen filters, and each of those
// with a bounded pool of the layer's other movable entries (the `pool` highest and lowest by
// gradient and by current value: the ends that maximise (g_i - g_j)(v_j - v_i)), so a round
// costs |filters| x 4 pool gains per layer rather than |filters| x |layer|.
#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "core/splitter/method.h"
#include "core/splitter/method_common.h"

namespace nns::splitter {

namespace {

// The movable positions of one layer state: in the chosen filters (one side of every swap) and
// elsewhere in the layer (partner candidates).
struct Sides {
  std::vector<uint32_t> chosen, others;
};

// Up to `pool` of `others` at each end of `key`, added to `out` once each.
template <class Key>
void add_ends(std::vector<uint32_t> others, size_t pool, const Key& key, std::vector<char>& taken,
              std::vector<uint32_t>& out) {
  auto less = [&](uint32_t a, uint32_t b) { return key(a) < key(b) || (key(a) == key(b) && a < b); };
  auto more = [&](uint32_t a, uint32_t b) { return less(b, a); };
  const size_t n = std::min(pool, others.size());
  for (int end = 0; end < 2; ++end) {
    if (end == 0)
      std::nth_element(others.begin(), others.begin() + ptrdiff_t(n), others.end(), less);
    else
      std::nth_element(others.begin(), others.begin() + ptrdiff_t(n), others.end(), more);
    for (size_t k = 0; k < n; ++k)
      if (!taken[others[k]]) {
        taken[others[k]] = 1;
        out.push_back(others[k]);
      }
  }
}

std::vector<detail::SwapPair> candidate_pairs(const detail::SwapLayer& s, const Sides& sides,
                                              size_t pool) {
  std::vector<char> taken(s.index.size(), 0);
  std::vector<uint32_t> partners;
  add_ends(sides.others, pool, [&](uint32_t e) { return s.grad[e]; }, taken, partners);
  add_ends(sides.others, pool, [&](uint32_t e) { return s.value[e]; }, taken, partners);
  std::vector<detail::SwapPair> pairs;
  auto consider = [&](uint32_t i, uint32_t j) {
    const double gain = (s.grad[i] - s.grad[j]) * (double(s.value[j]) - double(s.value[i]));
    if (gain > 0) pairs.push_back({gain, std::min(i, j), std::max(i, j)});
  };
  for (size_t a = 0; a < sides.chosen.size(); ++a) {
    for (size_t b = a + 1; b < sides.chosen.size(); ++b) consider(sides.chosen[a], sides.chosen[b]);
    for (uint32_t p : partners) consider(sides.chosen[a], p);
  }
  return pairs;
}

}  // namespace

MethodInfo swap_method_info() {
  using T = MethodKey::Type;
  return {"swap",
          "the chosen filters' values swapped with other entries of their layer, chosen by the "
          "loss gradient; every layer keeps its values, no extreme value moves",
          "values inside one filter are too alike for permute to hurt; partners from the whole "
          "layer carry far more damage, the layer's multiset is still exact, and no per-layer "
          "extreme ever lands in a secret position",
          {{"rounds", T::Int, "12", "rounds of gradient-guided swaps at most", 1, {}, {}},
           {"batches", T::Int, "4",
            "training batches averaged for each round's gradient (the layer's full dW)", 1, {}, {}},
           {"step", T::Float, "0.25",
            "swaps per layer and round, as a fraction of the layer's budget (NNSplitter's mask "
            "size for the chosen filters, both ends of a swap counted)",
            0.001, 1, {}},
           {"quantile", T::Float, "0.01",
            "only values strictly between the layer's pretrained quantiles at q and 1 - q move, "
            "so no per-layer extreme is ever moved into a secret position",
            0, 0.499, {}},
           {"pool", T::Int, "128",
            "partners per round for the chosen filters' entries: the layer's this many highest "
            "and lowest movable entries by gradient and by value",
            1, {}, {}}},
          [](models::Model& m, std::vector<EligibleLayer> l, MethodOptions o) -> std::unique_ptr<Method> {
            return std::make_unique<SwapMethod>(m, std::move(l), std::move(o));
          }};
}

const std::vector<std::pair<float, float>>& SwapMethod::movable_range() {
  const double q = opt_.number("quantile");
  if (!(0 <= q && q < 0.5)) throw std::invalid_argument("swap method: need 0 <= quantile < 0.5");
  if (range_.empty())
    for (const auto& sorted : detail::sorted_layer_values(layers_))
      range_.emplace_back(detail::quantile(sorted, q), detail::quantile(sorted, 1.0 - q));
  return range_;
}

MaskSet SwapMethod::obfuscate_episode(const FilterChoice& filters, ObfuscationData& data,
                                      uint64_t, EpisodeOutcome& out) {
  if (opt_.integer("pool") < 1) throw std::invalid_argument("swap method: pool must be at least 1");
  const auto& range = movable_range();
  auto budget_masks = select_mask(layers_, filters, opt_.c, opt_.eps);
  std::vector<detail::SwapLayer> states;
  std::vector<Sides> sides;
  for (const auto& bm : budget_masks) {
    if (bm.index.size() == 0 || bm.filters.empty()) continue;
    const EligibleLayer& l = layers_[bm.layer];
    detail::SwapLayer s;
    s.layer = bm.layer;
    s.grad_filters.resize(size_t(l.filters));
    std::iota(s.grad_filters.begin(), s.grad_filters.end(), 0);  // the layer's full dW
    Tensor w = l.param->value.to(Device::CPU);
    s.index.resize(size_t(w.numel()));
    std::iota(s.index.begin(), s.index.end(), int64_t(0));
    s.original.assign(w.f32(), w.f32() + w.numel());
    s.value = s.original;
    s.budget = int64_t(bm.index.size() + 1) / 2 * 2;
    Sides side;
    const auto [lo, hi] = range[size_t(bm.layer)];
    std::vector<char> in_chosen(s.index.size(), 0);
    for (int32_t f : bm.filters)
      std::fill_n(in_chosen.begin() + f * l.filter_size, l.filter_size, 1);
    for (uint32_t e = 0; e < uint32_t(s.index.size()); ++e)
      if (s.original[e] > lo && s.original[e] < hi)
        (in_chosen[e] ? side.chosen : side.others).push_back(e);
    states.push_back(std::move(s));
    sides.push_back(std::move(side));
  }
  detail::SwapRounds rounds{int(opt_.integer("rounds")), int(opt_.integer("batches")),
                            opt_.number("step"),
                            opt_.obfuscator.patience, opt_.obfuscator.stop,
                            opt_.obfuscator.bn_batch_stats};
  const size_t pool = size_t(opt_.integer("pool"));
  return detail::swap_search(
      model_, layers_, std::move(states), budget_masks, data, rounds,
      [&](size_t k, const detail::SwapLayer& s) { return candidate_pairs(s, sides[k], pool); }, out);
}

}  // namespace nns::splitter
