// Per-channel reductions over x [N, C, HW] (BatchNorm statistics and gradients, bias
// gradients), in two deterministic stages:
//   1. channel_partials_kernel: a grid of C * S blocks; block (c, s) reduces the s-th slice of
//      channel c's M = N*HW elements. Each thread accumulates its elements in float (a few dozen
//      at most), the block combines the threads in double with warp shuffles, and thread 0
//      writes K doubles to partial[(c * S + s) * K + k].
//   2. an op-specific finalise kernel, one thread per channel, adds the S partials of its
//      channel in slice order (channel_total).
// The split S depends only on N*HW, so a given shape always reduces in the same order on any
// GPU: results are bitwise reproducible (no atomics).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

struct ChannelSplit {
  int64_t m;      // elements per channel, N*HW
  int slices;     // S
  int64_t chunk;  // elements per slice (the last one may be shorter)
};

// About 32 elements per thread per slice; at most 1024 slices per channel.
constexpr int64_t kSliceElements = int64_t(kThreads) * 32;
constexpr int kMaxSlices = 1024;

inline ChannelSplit channel_split(int n, int hw) {
  ChannelSplit sp;
  sp.m = int64_t(n) * hw;
  sp.slices = static_cast<int>(
      std::clamp<int64_t>((sp.m + kSliceElements - 1) / kSliceElements, 1, kMaxSlices));
  sp.chunk = (sp.m + sp.slices - 1) / sp.slices;
  return sp;
}

// F is a functor with `static constexpr int K` and
//   __device__ void operator()(int ch, int64_t idx, float (&acc)[K]) const
// that adds element idx (flat index into [N, C, HW]) of channel ch into acc.
template <class F>
__global__ void channel_partials_kernel(int c, int hw, ChannelSplit sp, F f, double* partial) {
  constexpr int K = F::K;
  const int ch = static_cast<int>(blockIdx.x / sp.slices);
  const int s = static_cast<int>(blockIdx.x % sp.slices);
  const int64_t begin = int64_t(s) * sp.chunk;
  const int64_t end = begin + sp.chunk < sp.m ? begin + sp.chunk : sp.m;
  float acc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) acc[k] = 0.0f;
  for (int64_t e = begin + threadIdx.x; e < end; e += blockDim.x) {
    const int64_t i = e / hw;  // image
    const int64_t idx = (i * c + ch) * hw + (e - i * hw);
    f(ch, idx, acc);
  }
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const double total = block_sum(static_cast<double>(acc[k]));
    if (threadIdx.x == 0) partial[int64_t(blockIdx.x) * K + k] = total;
  }
}

// Launches stage 1 into partial [C * S * F::K].
template <class F>
void channel_partials(cudaStream_t stream, int c, int hw, const ChannelSplit& sp, F f,
                      double* partial) {
  const int64_t blocks = int64_t(c) * sp.slices;
  if (blocks > INT32_MAX)
    invalid("channel reduction", "too many channels x slices (" + std::to_string(blocks) + ")");
  NNS_LAUNCH(channel_partials_kernel<F>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0,
             stream, c, hw, sp, f, partial);
}

// Stage 2 helper: the total of component k of channel ch, slices added in order.
template <int K>
__device__ inline double channel_total(const double* partial, int ch, int slices, int k) {
  double t = 0.0;
  const double* p = partial + int64_t(ch) * slices * K + k;
  for (int s = 0; s < slices; ++s) t += p[int64_t(s) * K];
  return t;
}

// The functors.
struct SumOf {  // sum x
  static constexpr int K = 1;
  const float* x;
  __device__ void operator()(int, int64_t idx, float (&acc)[1]) const { acc[0] += x[idx]; }
};

struct SquaredDeviationOf {  // sum (x - mean[ch])^2
  static constexpr int K = 1;
  const float* x;
  const float* mean;
  __device__ void operator()(int ch, int64_t idx, float (&acc)[1]) const {
    const float d = x[idx] - mean[ch];
    acc[0] += d * d;
  }
};

struct GradSumsOf {  // sum dy, sum dy * (x - mean[ch])
  static constexpr int K = 2;
  const float* x;
  const float* dy;
  const float* mean;
  __device__ void operator()(int ch, int64_t idx, float (&acc)[2]) const {
    const float g = dy[idx];
    acc[0] += g;
    acc[1] += g * (x[idx] - mean[ch]);
  }
};

}  // namespace nns::ops::cuda
