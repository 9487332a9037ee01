// The body of the direct-convolution micro-kernels (see direct_micro.h), included once per
// instruction set by a translation unit that first defines, in an anonymous namespace inside
// nns::ops::cpu, `struct Vec` with: type T, kLanes, kWidePixels, kNarrowPixels (NP of the wide
// and narrow kernels), zero(), load(p), store(p, v), broadcast(p) and fma(a, b, c) = a * b + c.
// Everything here has internal linkage.
#pragma once

#include "kernels/cpu/direct_micro.h"

namespace nns::ops::cpu {
namespace {

template <int CV, bool Accumulate, int NP>
void micro_kernel(int k_count, const int* koff, const float* w, const float* const* px, float* c) {
  constexpr int L = Vec::kLanes, W = L * CV;
  typename Vec::T acc[NP][CV];
  const float* p[NP];
  for (int j = 0; j < NP; ++j) {
    p[j] = px[j];
    for (int v = 0; v < CV; ++v)
      acc[j][v] = Accumulate ? Vec::load(c + j * W + L * v) : Vec::zero();
  }
  for (int k = 0; k < k_count; ++k, w += W) {
    typename Vec::T wv[CV];
    for (int v = 0; v < CV; ++v) wv[v] = Vec::load(w + L * v);
    const int o = koff[k];
    for (int j = 0; j < NP; ++j) {
      const typename Vec::T xv = Vec::broadcast(p[j] + o);
      for (int v = 0; v < CV; ++v) acc[j][v] = Vec::fma(wv[v], xv, acc[j][v]);
    }
  }
  for (int j = 0; j < NP; ++j)
    for (int v = 0; v < CV; ++v) Vec::store(c + j * W + L * v, acc[j][v]);
}

static_assert(kDirectMaxPixels % Vec::kWidePixels == 0 &&
              kDirectMaxPixels % Vec::kNarrowPixels == 0);
constexpr DirectKernels kKernels{
    Vec::kLanes,
    Vec::kWidePixels,
    Vec::kNarrowPixels,
    &micro_kernel<2, false, Vec::kWidePixels>,
    &micro_kernel<1, false, Vec::kNarrowPixels>,
    &micro_kernel<2, true, Vec::kWidePixels>,
    &micro_kernel<1, true, Vec::kNarrowPixels>,
};

}  // namespace
}  // namespace nns::ops::cpu
