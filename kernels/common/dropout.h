// Counter-based dropout mask: element i of a call with a given seed is kept when
// uniform(seed, i) >= p. Both backends draw the same mask for the same (seed, i), with no
// generator state to carry between calls or threads.
#pragma once

#include <stdint.h>

#include "kernels/common/hd.h"

namespace nns::ops::common {

// The splitmix64 finaliser (Steele, Lea, Flood 2014): a bijective 64-bit mix.
NNS_HD inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Hash of (seed, index): the seed is mixed first so that nearby seeds give unrelated streams,
// then the index walks the splitmix64 sequence (golden-ratio increment) from there.
NNS_HD inline uint64_t hash_seed_index(uint64_t seed, uint64_t i) {
  return splitmix64_mix(splitmix64_mix(seed) + (i + 1) * 0x9E3779B97F4A7C15ull);
}

// Uniform in [0, 1) from the top 24 bits (exactly representable in float).
NNS_HD inline float uniform_seed_index(uint64_t seed, uint64_t i) {
  return static_cast<float>(hash_seed_index(seed, i) >> 40) * (1.0f / 16777216.0f);
}

NNS_HD inline bool dropout_keep(uint64_t seed, uint64_t i, float p) {
  return uniform_seed_index(seed, i) >= p;
}

// Scale applied to kept elements, 1/(1-p); 0 when everything is dropped (p >= 1).
NNS_HD inline float dropout_scale(float p) { return p < 1.0f ? 1.0f / (1.0f - p) : 0.0f; }

}  // namespace nns::ops::common
