// The blocked convolutions' micro-kernels for AVX-512F (16 lanes, 32 vector registers). This
// unit is compiled for x86-64-v4 (CMakeLists.txt) and reached only through
// blocked_kernels_avx512(), which conv_blocked.cpp calls after cpu_avx512_usable().
#include "kernels/cpu/blocked/blocked_micro.h"

#if defined(__AVX512F__)
#include <immintrin.h>

namespace nns::ops::cpu::blocked {
namespace {
struct Vec {
  using T = __m512;
  static constexpr int kLanes = 16, kRegs = 32, kMaxUr = 28;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static T set1(float v) { return _mm512_set1_ps(v); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static T add(T a, T b) { return _mm512_add_ps(a, b); }
  // The zero-masked forms: GCC 12 warns (-Wmaybe-uninitialized) on the plain ones, whose
  // pass-through operand is _mm512_undefined_ps().
  static T max(T a, T b) { return _mm512_maskz_max_ps(__mmask16(0xFFFF), a, b); }
  static T min(T a, T b) { return _mm512_maskz_min_ps(__mmask16(0xFFFF), a, b); }
};
}  // namespace
}  // namespace nns::ops::cpu::blocked

#include "kernels/cpu/blocked/blocked_micro_impl.h"

namespace nns::ops::cpu::blocked {
const BlockedKernels* blocked_kernels_avx512() { return &kKernels; }
}  // namespace nns::ops::cpu::blocked

#else

namespace nns::ops::cpu::blocked {
const BlockedKernels* blocked_kernels_avx512() { return nullptr; }
}  // namespace nns::ops::cpu::blocked

#endif
