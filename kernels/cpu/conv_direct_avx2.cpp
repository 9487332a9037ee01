// The direct convolution's micro-kernels for AVX2 + FMA (8 floats per vector).
#include "kernels/cpu/direct_micro.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace nns::ops::cpu {
namespace {
struct Vec {
  using T = __m256;
  static constexpr int kLanes = 8;
  // 12 accumulator vectors of the 16 registers either way.
  static constexpr int kWidePixels = 6, kNarrowPixels = 12;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
};
}  // namespace
}  // namespace nns::ops::cpu

#include "kernels/cpu/direct_micro_impl.h"

namespace nns::ops::cpu {
const DirectKernels* direct_kernels_avx2() { return &kKernels; }
}  // namespace nns::ops::cpu

#else

namespace nns::ops::cpu {
const DirectKernels* direct_kernels_avx2() { return nullptr; }
}  // namespace nns::ops::cpu

#endif
