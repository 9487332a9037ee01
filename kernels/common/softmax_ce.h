// Softmax cross-entropy element math shared by both backends.
#pragma once

#include "kernels/common/hd.h"

namespace nns::ops::common {

// d loss / d logit for one element: scale * (prob - [j == label]) / N, with inv_n = 1/N.
NNS_HD inline float softmax_ce_grad(float prob, bool is_label, float scale, float inv_n) {
  return scale * (prob - (is_label ? 1.0f : 0.0f)) * inv_n;
}

// True when a label is a valid class index in [0, k).
NNS_HD inline bool label_valid(int label, int k) { return label >= 0 && label < k; }

}  // namespace nns::ops::common
