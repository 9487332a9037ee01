// The baseline filter policy (`controller.kind: random`): per layer, k distinct filters drawn
// uniformly (every filter of a layer that has k or fewer), with the same episode budget as the
// controller and nothing learnt.
#pragma once

#include <vector>

#include "core/random.h"
#include "rl/controller.h"

namespace nns::rl {

class RandomPolicy {
 public:
  // k >= 1 and every layer has a filter (else std::invalid_argument).
  RandomPolicy(std::vector<int> filters_per_layer, int k);
  // Per layer, min(k, filters) distinct filters, sorted; drawn layer by layer, each by rejection of repeats
  // from rng.below(filters). Only `filters` of the episode is filled.
  Controller::Episode sample(Rng& rng) const;

 private:
  std::vector<int> filters_;
  int k_;
};

}  // namespace nns::rl
