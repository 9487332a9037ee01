// Deterministic warp and block sums (fixed shuffle tree, no atomics), so that repeated runs
// give bit-identical gradients.
#pragma once

#include <cuda_runtime.h>

namespace nns::ops::cuda {

__device__ inline float warp_reduce_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum of v over the block (blockDim.x a multiple of 32); the result is valid in thread 0.
// smem holds 32 floats. Every thread of the block must call it; it ends with a barrier, so it
// may be called again right away.
__device__ inline float block_reduce_sum(float v, float* smem) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int warp = static_cast<int>(threadIdx.x) >> 5;
  v = warp_reduce_sum(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  const int nwarps = static_cast<int>(blockDim.x) >> 5;
  v = static_cast<int>(threadIdx.x) < nwarps ? smem[threadIdx.x] : 0.0f;
  if (warp == 0) v = warp_reduce_sum(v);
  __syncthreads();
  return v;
}

}  // namespace nns::ops::cuda
