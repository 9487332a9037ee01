// Depthwise convolution (groups == C_in == C_out, MobileNetV2) with direct kernels: a GEMM per
// channel would have M = 1, and KH*KW multiply-adds per output do not need shared-memory tiles.
// The per-element bodies live in kernels/cuda/conv_problems.h (shared with the host tests).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/check.h"
#include "kernels/cuda/conv2d_internal.h"
#include "kernels/cuda/conv_problems.h"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/handles.h"
#include "kernels/cuda/reduce.cuh"

namespace nns::ops::cuda {

namespace {

constexpr int kThreads = 256;

// y [N, C, OH, OW]: one thread per output element (grid-stride), KH*KW taps each; neighbouring
// threads read neighbouring input columns.
__global__ void depthwise_forward_kernel(int count, ConvGeom geo, const float* __restrict__ x,
                                         const float* __restrict__ w, Epilogue epi,
                                         float* __restrict__ y) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step)
    y[i] = depthwise_forward_at(geo, x, w, epi, static_cast<int>(i));
}

// dx [N, C, H, W]: one thread per input element, gathering the taps that read it (no atomics).
__global__ void depthwise_backward_data_kernel(int count, ConvGeom geo,
                                               const float* __restrict__ dy,
                                               const float* __restrict__ w,
                                               float* __restrict__ dx) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step)
    dx[i] = depthwise_backward_data_at(geo, dy, w, static_cast<int>(i));
}

// Weight gradient of the selected channels. Grid (n_sel, splits, tap chunks): block (j, s, z)
// walks chunk s of the N*OH*OW output positions of channel c = filters[j] and accumulates the
// taps [z*16, z*16 + 16) in registers; each tap is then summed over the block and written to
// partial[(j * taps + tap) * splits + s].
__global__ void depthwise_filter_partial_kernel(ConvGeom geo, const float* __restrict__ x,
                                                const float* __restrict__ dy,
                                                const int32_t* __restrict__ filters, int splits,
                                                int chunk, float* __restrict__ partial) {
  __shared__ float red[32];
  const int j = static_cast<int>(blockIdx.x), s = static_cast<int>(blockIdx.y);
  const int taps = geo.khkw;
  const int t0 = static_cast<int>(blockIdx.z) * kDepthwiseTapChunk;
  const int nt = min(kDepthwiseTapChunk, taps - t0);
  const int c = filters ? filters[j] : j;
  float acc[kDepthwiseTapChunk];
#pragma unroll
  for (int q = 0; q < kDepthwiseTapChunk; ++q) acc[q] = 0.0f;
  if (c >= 0 && c < geo.c_in) {
    const int count = geo.n * geo.ohw;
    const int64_t begin = int64_t(s) * chunk;
    const int64_t end = begin + chunk < count ? begin + chunk : int64_t(count);
    for (int64_t e = begin + int64_t(threadIdx.x); e < end; e += blockDim.x)
      depthwise_filter_accumulate(geo, x, dy, c, static_cast<int>(e), t0, nt, acc);
  }
#pragma unroll
  for (int q = 0; q < kDepthwiseTapChunk; ++q) {
    if (q < nt) {  // uniform over the block
      const float v = block_reduce_sum(acc[q], red);
      if (threadIdx.x == 0) partial[(int64_t(j) * taps + t0 + q) * splits + s] = v;
    }
  }
}

// dw[c, tap] = sum over s of partial[(j * taps + tap) * splits + s], in order.
__global__ void depthwise_filter_finalize_kernel(int count, const float* __restrict__ partial,
                                                 const int32_t* __restrict__ filters, int c_total,
                                                 int taps, int splits, float* __restrict__ dw) {
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < count;
       i += static_cast<int>(gridDim.x * blockDim.x)) {
    const int j = i / taps, t = i - (i / taps) * taps;
    const int c = filters ? filters[j] : j;
    if (c < 0 || c >= c_total) continue;
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) acc += partial[int64_t(i) * splits + s];
    dw[int64_t(c) * taps + t] = acc;
  }
}

}  // namespace

void depthwise_forward(cudaStream_t stream, const Conv2dShape& s, const float* x, const float* w,
                       const Epilogue& epi, float* y) {
  const int count = static_cast<int>(s.y_size());
  depthwise_forward_kernel<<<grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(
      count, make_conv_geom(s), x, w, epi, y);
  NNS_CUDA_CHECK(cudaGetLastError());
}

void depthwise_backward_data(cudaStream_t stream, const Conv2dShape& s, const float* dy,
                             const float* w, float* dx) {
  const int count = static_cast<int>(s.x_size());
  depthwise_backward_data_kernel<<<grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(
      count, make_conv_geom(s), dy, w, dx);
  NNS_CUDA_CHECK(cudaGetLastError());
}

void depthwise_backward_filter(cudaStream_t stream, const Conv2dShape& s, const float* x,
                               const float* dy, float* dw, const int32_t* filters, int n_sel) {
  const ConvGeom geo = make_conv_geom(s);
  const int taps = geo.khkw;
  const int tap_chunks = (taps + kDepthwiseTapChunk - 1) / kDepthwiseTapChunk;
  const int positions = geo.n * geo.ohw;
  // Split the positions so that the grid fills the device about four times, each block
  // keeping >= 1024 positions.
  constexpr int kMinChunk = 1024;
  const int64_t base_blocks = int64_t(n_sel) * tap_chunks;
  const int64_t want = (4 * int64_t(sm_count()) + base_blocks - 1) / base_blocks;
  const int max_splits = std::max(1, std::min(65535, (positions + kMinChunk - 1) / kMinChunk));
  const int splits = static_cast<int>(std::clamp<int64_t>(want, 1, max_splits));
  const int chunk = (positions + splits - 1) / splits;
  float* partial = static_cast<float*>(
      workspace(stream, WorkspaceSlot::SplitK, sizeof(float) * size_t(n_sel) * taps * splits));
  const dim3 grid(static_cast<unsigned>(n_sel), static_cast<unsigned>(splits),
                  static_cast<unsigned>(tap_chunks));
  depthwise_filter_partial_kernel<<<grid, kThreads, 0, stream>>>(geo, x, dy, filters, splits, chunk,
                                                                 partial);
  NNS_CUDA_CHECK(cudaGetLastError());
  const int count = n_sel * taps;
  depthwise_filter_finalize_kernel<<<grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(
      count, partial, filters, s.c_out, taps, splits, dw);
  NNS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nns::ops::cuda
