// Helpers shared by the convolution files of the CPU backend.
#pragma once

#include <omp.h>

#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace nns::ops::cpu {

// Throws std::invalid_argument naming `op` when the shape is not a valid convolution.
void conv_check_shape(const Conv2dShape& s, const char* op);

// The filters to compute in conv2d_backward_filter: the listed ones sorted (checked to be in
// [0, c_out)), or all of them.
std::vector<int32_t> conv_filter_list(const Conv2dShape& s, const int32_t* filters,
                                      int n_filters, const char* op);

// Threads worth using for a conv of this size: all of them, or 1 for tiny convs where the
// fork/join of a parallel region costs more than the work (and, on a loaded machine, waiting
// for a descheduled thread costs milliseconds).
inline int conv_threads(const Conv2dShape& s) {
  constexpr int64_t kMinParallelMacs = int64_t(1) << 18;
  const int64_t macs = int64_t(s.n) * s.c_out * s.out_h() * s.out_w() * (s.c_in / s.groups) *
                       s.kh * s.kw;
  return macs >= kMinParallelMacs ? omp_get_max_threads() : 1;
}

// Which algorithm runs the non-depthwise convolutions. Auto: the direct kernel
// (conv_direct.cpp, compiled with AVX2 + FMA) where it measured faster (see conv.cpp), else
// im2col + SGEMM. The others force one (Direct falls back to im2col where it does not apply:
// backward data of strided convs, or builds without AVX2); tests and benchmarks use them to
// cover and compare both.
enum class ConvAlgo { Auto, Im2colGemm, Direct };
void set_conv_algo(ConvAlgo algo);
ConvAlgo conv_algo();
bool conv_direct_available();

// How conv_direct reads its weight argument: Forward, w [C_out, C_in/g, KH, KW] of shape s; or
// BackwardData, where s is the transposed convolution (dy -> dx) of a stride-1 conv and w is
// the ORIGINAL conv's weight, read transposed per group and flipped.
enum class DirectWeights { Forward, BackwardData };
// y = epi(conv(x, w)) with the direct kernel; overwrites y. Only when conv_direct_available().
void conv_direct(const Conv2dShape& s, const float* x, const float* w, DirectWeights layout,
                 const Epilogue& epi, float* y);

// dw rows (and db entries) of the filters in sel (sorted, distinct) with the direct kernel.
void conv_direct_backward_filter(const Conv2dShape& s, const float* x, const float* dy,
                                 const std::vector<int32_t>& sel, float* dw, float* db);

// The padding mask of im2col for this shape (see im2col.h), built in the calling thread's
// scratch; null when the shape needs none. Shared read-only by the threads of the op.
const float* im2col_mask(const Conv2dShape& s);

// Depthwise convolution (groups == c_in == c_out) with direct loops: im2col would copy
// KH*KW planes per channel for a handful of multiply-adds each.
inline bool conv_is_depthwise(const Conv2dShape& s) {
  return s.groups > 1 && s.groups == s.c_in && s.c_out == s.c_in;
}
void depthwise_forward(const Conv2dShape& s, const float* x, const float* w, const Epilogue& epi,
                       float* y);
void depthwise_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx);
void depthwise_backward_filter(const Conv2dShape& s, const float* x, const float* dy, float* dw,
                               float* db, const std::vector<int32_t>& filters);

}  // namespace nns::ops::cpu
