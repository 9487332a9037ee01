// The micro-kernels of the direct convolution (conv_direct.cpp), one set per instruction set:
// conv_direct_avx2.cpp (x86-64-v3) and conv_direct_avx512.cpp (x86-64-v4). Those translation
// units include nothing but intrinsics and this header, so no inline function compiled for
// AVX-512 can be merged by the linker into code that runs on AVX2-only CPUs.
#pragma once

namespace nns::ops::cpu {

// c [NP][width] (=, or += for the *_acc kernels) sum over k < k_count of
//   px[j][koff[k]] * w[k][0 .. width),
// for j < NP pixels; width = 2 * lanes (wide) or lanes (narrow) channels.
// Forward: j = output pixel, k = tap (ci, kh, kw), w = weight panel, c[pixel][channel].
// Backward filter: j = tap, k = output pixel, w = the transposed dy panel, c[tap][filter].
using DirectMicroKernel = void (*)(int k_count, const int* koff, const float* w,
                                   const float* const* px, float* c);

constexpr int kDirectMaxPixels = 12;  // most NP of any kernel; every NP divides it
constexpr int kDirectMaxLanes = 16;

struct DirectKernels {
  int lanes;                       // floats per vector register: 8 (AVX2) or 16 (AVX-512)
  int wide_pixels, narrow_pixels;  // NP of the wide and narrow kernels
  DirectMicroKernel wide, narrow, wide_acc, narrow_acc;
};

// Null when the compiler could not build the AVX-512 unit (then only AVX2 runs).
const DirectKernels* direct_kernels_avx2();
const DirectKernels* direct_kernels_avx512();

}  // namespace nns::ops::cpu
