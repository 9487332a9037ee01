// Pooling window arithmetic shared by the CPU and CUDA backends (PyTorch's rules).
#pragma once

#include "kernels/common/hd.h"

namespace nns::ops::common {

// The window of output o along one axis: [*lo, *hi) clipped to the input [0, size), and its
// extent clipped to the padded input [-pad, size + pad) in *span (average pooling's
// count_include_pad divisor: the kernel size, except for a last ceil-mode window that hangs
// over the end).
NNS_HD inline void pool_window(int o, int stride, int pad, int k, int size, int* lo, int* hi,
                               int* span) {
  const int start = o * stride - pad;
  int end = start + k;
  *span = (end < size + pad ? end : size + pad) - start;
  *lo = start > 0 ? start : 0;
  *hi = end < size ? end : size;
}

// The divisor of an average-pooling window.
NNS_HD inline int avg_divisor(bool count_include_pad, int hs, int he, int ws, int we, int span_h,
                              int span_w) {
  return count_include_pad ? span_h * span_w : (he - hs) * (we - ws);
}

}  // namespace nns::ops::common
