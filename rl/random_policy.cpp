#include "rl/random_policy.h"

#include <algorithm>
#include <set>
#include <stdexcept>
#include <string>

namespace nns::rl {

RandomPolicy::RandomPolicy(std::vector<int> filters_per_layer, int k)
    : filters_(std::move(filters_per_layer)), k_(k) {
  if (k_ < 1) throw std::invalid_argument("random policy: k must be at least 1");
  for (int f : filters_)
    if (f < 1) throw std::invalid_argument("random policy: a layer without filters");
}

Controller::Episode RandomPolicy::sample(Rng& rng) const {
  Controller::Episode ep;
  ep.filters.resize(filters_.size());
  for (size_t l = 0; l < filters_.size(); ++l) {
    std::set<int32_t> chosen;
    while (int(chosen.size()) < std::min(k_, filters_[l])) chosen.insert(int32_t(rng.below(uint64_t(filters_[l]))));
    ep.filters[l].assign(chosen.begin(), chosen.end());
  }
  return ep;
}

}  // namespace nns::rl
