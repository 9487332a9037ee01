// The blocked convolutions' micro-kernels for AVX2 + FMA (8 lanes, 16 vector registers).
#include "kernels/cpu/blocked/blocked_micro.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace nns::ops::cpu::blocked {
namespace {
struct Vec {
  using T = __m256;
  static constexpr int kLanes = 8, kRegs = 16, kMaxUr = 12;
  static T zero() { return _mm256_setzero_ps(); }
  static T load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static T broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static T set1(float v) { return _mm256_set1_ps(v); }
  static T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm256_add_ps(a, b); }
  static T max(T a, T b) { return _mm256_max_ps(a, b); }
  static T min(T a, T b) { return _mm256_min_ps(a, b); }
};
}  // namespace
}  // namespace nns::ops::cpu::blocked

#include "kernels/cpu/blocked/blocked_micro_impl.h"

namespace nns::ops::cpu::blocked {
const BlockedKernels* blocked_kernels_avx2() { return &kKernels; }
}  // namespace nns::ops::cpu::blocked

#else

namespace nns::ops::cpu::blocked {
const BlockedKernels* blocked_kernels_avx2() { return nullptr; }
}  // namespace nns::ops::cpu::blocked

#endif
