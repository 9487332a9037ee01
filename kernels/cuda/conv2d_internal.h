// Pieces of the CUDA convolution shared between conv2d.cu (the entry points and the native
// implicit-GEMM path), conv2d_depthwise.cu and conv2d_cudnn.cu. Shapes are checked by the entry
// points; bias gradients (db) are computed by the entry points for every path.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/ops.h"

namespace nns::ops::cuda {

// Depthwise convolution (groups == C_in == C_out) with direct kernels.
void depthwise_forward(cudaStream_t stream, const Conv2dShape& s, const float* x, const float* w,
                       const Epilogue& epi, float* y);
void depthwise_backward_data(cudaStream_t stream, const Conv2dShape& s, const float* dy,
                             const float* w, float* dx);
// dw rows of the n_sel channels listed in filters (all when filters == nullptr, n_sel = C).
void depthwise_backward_filter(cudaStream_t stream, const Conv2dShape& s, const float* x,
                               const float* dy, float* dw, const int32_t* filters, int n_sel);

// The cuDNN engine. Without cuDNN in the build these throw std::runtime_error.
void conv2d_forward_cudnn(cudaStream_t stream, const Conv2dShape& s, const float* x, const float* w,
                          const Epilogue& epi, float* y);
void conv2d_backward_data_cudnn(cudaStream_t stream, const Conv2dShape& s, const float* dy,
                                const float* w, float* dx);
void conv2d_backward_filter_cudnn(cudaStream_t stream, const Conv2dShape& s, const float* x,
                                  const float* dy, float* dw, const int32_t* filters, int n_sel);

}  // namespace nns::ops::cuda
