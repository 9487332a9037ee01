// The direct convolution's micro-kernels for AVX-512F (16 floats per vector). This unit is
// compiled for x86-64-v4 (CMakeLists.txt) and reached only through direct_kernels_avx512(),
// which cpu_isa.cpp calls after checking that the CPU runs AVX-512.
#include "kernels/cpu/direct_micro.h"

#if defined(__AVX512F__)
#include <immintrin.h>

namespace nns::ops::cpu {
namespace {
struct Vec {
  using T = __m512;
  static constexpr int kLanes = 16;
  // 12 accumulator vectors, as with AVX2: 12 pixels x 2 vectors in the wide kernel (24 of the
  // 32 registers, fewer weight loads per FMA) measured 5-20% slower on Zen 5 (resnet20 shapes,
  // one thread, CPU time; the backward filter lost most).
  static constexpr int kWidePixels = 6, kNarrowPixels = 12;
  static T zero() { return _mm512_setzero_ps(); }
  static T load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static T broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
};
}  // namespace
}  // namespace nns::ops::cpu

#include "kernels/cpu/direct_micro_impl.h"

namespace nns::ops::cpu {
const DirectKernels* direct_kernels_avx512() { return &kKernels; }
}  // namespace nns::ops::cpu

#else

namespace nns::ops::cpu {
const DirectKernels* direct_kernels_avx512() { return nullptr; }
}  // namespace nns::ops::cpu

#endif
