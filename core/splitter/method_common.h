// Pieces shared by the method implementations (internal to core/splitter, not part of the
// interface in method.h): number formatting for metadata, layer quantiles, and the greedy swap
// search of the permutation methods (permute, swap).
//
// The swap search: a round takes the loss gradient g over a few training batches at the current
// weights; per layer, the candidate pairs (i, j) with a first-order loss gain
// (g_i - g_j)(v_j - v_i) > 0 that a PairSource proposes are taken greedily, best first, disjoint,
// keeping the layer's displaced entries within its budget; then the validation accuracy. The
// lowest accuracy's values are kept; `patience` rounds without a new minimum (or `rounds`) end
// the episode. Values only ever move between entries, so every layer keeps its multiset.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/splitter/method.h"

namespace nns::splitter::detail {

// "%.9g": a double as metadata text.
std::string num(double v);

// Bitwise equality: a swap of +0.0 and -0.0 is a change the secrets must hold.
bool same_bits(float a, float b);

// Per layer, its current values sorted ascending (read once, before any episode changes them).
std::vector<std::vector<float>> sorted_layer_values(const std::vector<EligibleLayer>& layers);

// The value at quantile level q in [0, 1] of sorted (non-empty) values, interpolated between
// neighbours.
float quantile(const std::vector<float>& sorted, double q);

// One layer's entries that a swap search may move.
struct SwapLayer {
  int layer = 0;                       // index into the eligible layers
  std::vector<int32_t> grad_filters;   // filters whose weight gradient the rounds need
  std::vector<int64_t> index;          // flat indexes of the entries, ascending
  std::vector<float> original, value;  // pretrained and current values at `index`
  std::vector<double> grad;            // dLoss/dw at `index`, summed over the round's batches
  int64_t budget = 0;                  // displaced entries (value != original) at most
  int64_t displaced() const;
};

// A candidate swap of positions i and j (into SwapLayer::index) and its first-order loss gain.
struct SwapPair {
  double gain;
  uint32_t i, j;
};

// Takes pairs in order of decreasing gain (ties: smaller i, then smaller j), skipping those that
// touch an entry already swapped this round or would put the layer over its budget, until
// max_pairs are swapped in s.value; returns how many were.
int take_pairs(SwapLayer& s, std::vector<SwapPair> pairs, int max_pairs);

// The pairs with a positive gain worth considering in layer state `k` this round.
using PairSource = std::function<std::vector<SwapPair>(size_t k, const SwapLayer& s)>;

struct SwapRounds {
  int rounds = 12;    // rounds of swaps at most
  int batches = 4;    // training batches per gradient
  double step = 0.25; // swaps per layer and round, as a fraction of the layer's budget / 2
  int patience = 2;
  const std::atomic<bool>* stop = nullptr;
  bool bn_batch_stats = false;  // ObfuscatorOptions::bn_batch_stats
};

// Runs the swap search (above) on `states` and leaves the model holding the lowest-accuracy
// values; returns the entries whose values changed, with the filters of `chosen` (one mask per
// eligible layer, as select_mask returns). The model must hold the pretrained values at the
// states' entries. Fills out.accuracy, steps and evaluations.
MaskSet swap_search(models::Model& model, const std::vector<EligibleLayer>& layers,
                    std::vector<SwapLayer> states, const std::vector<LayerMask>& chosen,
                    ObfuscationData& data, const SwapRounds& opt, const PairSource& source,
                    EpisodeOutcome& out);

}  // namespace nns::splitter::detail
