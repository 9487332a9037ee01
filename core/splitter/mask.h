// The mask generator of NNSplitter (SPEC §1): in each eligible layer, the entries of the
// selected filters whose value lies strictly within eps of a global constant c.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/models/zoo.h"

namespace nns::splitter {

// One eligible layer of a model: its parameter key, the parameter, and its filter geometry
// (a filter is one output slice W[f]: filters = dim 0, filter_size = numel / dim 0).
struct EligibleLayer {
  std::string key;
  nn::Parameter* param = nullptr;
  int filters = 0;
  int64_t filter_size = 0;
};

std::vector<EligibleLayer> eligible(models::Model& model, const std::string& rule);

// The masked entries of one layer: flat indexes into the weight tensor, ascending.
struct LayerMask {
  int layer = 0;  // index into the eligible-layer list
  std::vector<int32_t> filters;
  std::vector<int64_t> index;
};

// Selects, per layer, the entries of the given filters (sorted, distinct per layer) with
// |w - c| < eps. Runs on the model's device (ops::mask_select).
std::vector<LayerMask> select_mask(const std::vector<EligibleLayer>& layers,
                                   const std::vector<std::vector<int32_t>>& filters, float c,
                                   float eps);

// Statistics of the eligible weights of the pretrained model.
struct WeightStats {
  double mean = 0;
  float min = 0, max = 0;
  int64_t count = 0;
};
WeightStats eligible_stats(const std::vector<EligibleLayer>& layers);

// "auto" eps: the smallest eps such that, averaged over the layers, the expected number of
// selected entries when k filters of the layer are picked at random, k/F_l * #{|w - c| < eps},
// is at least target_per_layer. Throws when even the whole weight range cannot reach it.
float auto_eps(const std::vector<EligibleLayer>& layers, float c, int k, double target_per_layer);

}  // namespace nns::splitter
