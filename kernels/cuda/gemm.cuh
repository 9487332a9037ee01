// The tiled SGEMM kernel of the CUDA backend and its launcher. The tile phases (fetch, stash,
// multiply, store) are in kernels/cuda/gemm_tile.h, shared with the host emulation of the tests;
// the operand accessors (plain matrices with transposes, implicit im2col) are Problems, see
// kernels/cuda/gemm_problems.h and kernels/cuda/conv_problems.h.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/gemm_tile.h"
#include "kernels/cuda/handles.h"

namespace nns::ops::cuda {

// C tile (blockIdx.y, blockIdx.x) of group g = blockIdx.z / splits, over the k range of split
// blockIdx.z % splits. Grid (ceil(N/BN), ceil(M/BM), groups*splits), Cfg::kThreads threads.
// Register prefetch: tile k+1 is read from global memory while tile k is multiplied; with
// Cfg::kMinBlocks resident blocks per multiprocessor, one block's loads overlap another's
// multiply-adds.
template <class Cfg, class P>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks)
    gemm_tiled_kernel(const P p, int splits, int k_per_split, float* partial) {
  __shared__ TileSmem<Cfg> smem;
  const int tid = static_cast<int>(threadIdx.x);
  const int n0 = static_cast<int>(blockIdx.x) * Cfg::BN;
  const int m0 = static_cast<int>(blockIdx.y) * Cfg::BM;
  const int g = static_cast<int>(blockIdx.z) / splits;
  const int split = static_cast<int>(blockIdx.z) % splits;
  const int k_begin = split * k_per_split;
  const int k_end = static_cast<int>(min(int64_t(p.K), int64_t(k_begin) + k_per_split));

  TileThread<Cfg> t;
  tile_zero(t);
  tile_fetch<Cfg>(p, g, m0, n0, k_begin, k_end, tid, t);
  for (int k0 = k_begin; k0 < k_end; k0 += Cfg::BK) {
    tile_stash<Cfg, P>(tid, t, smem);
    __syncthreads();
    if (k0 + Cfg::BK < k_end) tile_fetch<Cfg>(p, g, m0, n0, k0 + Cfg::BK, k_end, tid, t);
    tile_mma<Cfg>(tid, smem, t);
    __syncthreads();
  }
  tile_store<Cfg>(p, g, m0, n0, split, static_cast<int>(gridDim.z) / splits, partial, tid, t);
}

// Sums the split-K partials of every (g, m, n) and stores them; grid-stride over `total`.
template <class P>
__global__ void gemm_splitk_reduce_kernel(const P p, int groups, int splits, const float* partial,
                                          int64_t total) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step)
    splitk_reduce_at(p, groups, splits, partial, i);
}

// Blocks for a grid-stride loop over `count` elements with `threads` per block.
inline unsigned grid_stride_blocks(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  constexpr int64_t kMaxBlocks = int64_t(1) << 20;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

template <class Cfg, class P>
void gemm_launch(const P& p, int groups, cudaStream_t stream, int sms) {
  const int64_t m_tiles = (p.M + Cfg::BM - 1) / Cfg::BM;
  const int64_t n_tiles = (p.N + Cfg::BN - 1) / Cfg::BN;
  if (m_tiles > 65535)
    throw std::invalid_argument("gemm: M = " + std::to_string(p.M) +
                                " needs more than 65535 row tiles");
  const int want =
      choose_splits(m_tiles * n_tiles * groups, p.K, Cfg::BK, groups, int64_t(p.M) * p.N, sms);
  const SplitPlan sp = make_split_plan(p.K, Cfg::BK, want);
  float* partial = nullptr;
  if (sp.splits > 1) {
    const size_t bytes = sizeof(float) * size_t(sp.splits) * groups * size_t(p.M) * p.N;
    partial = static_cast<float*>(workspace(stream, WorkspaceSlot::SplitK, bytes));
  }
  const dim3 grid(static_cast<unsigned>(n_tiles), static_cast<unsigned>(m_tiles),
                  static_cast<unsigned>(groups * sp.splits));
  gemm_tiled_kernel<Cfg, P>
      <<<grid, Cfg::kThreads, 0, stream>>>(p, sp.splits, sp.k_per_split, partial);
  NNS_CUDA_CHECK(cudaGetLastError());
  if (sp.splits > 1) {
    const int64_t total = int64_t(groups) * p.M * p.N;
    gemm_splitk_reduce_kernel<P>
        <<<grid_stride_blocks(total, 256), 256, 0, stream>>>(p, groups, sp.splits, partial, total);
    NNS_CUDA_CHECK(cudaGetLastError());
  }
}

// C = A B for each of `groups` groups, stored through p.store. Overwrites every (g, m, n) with
// m < M, n < N exactly once.
template <class P>
void gemm_run(const P& p, int groups, cudaStream_t stream) {
  if (p.M < 1 || p.N < 1 || p.K < 1 || groups < 1 || groups > 65535)
    throw std::invalid_argument("gemm: bad sizes M=" + std::to_string(p.M) +
                                " N=" + std::to_string(p.N) + " K=" + std::to_string(p.K) +
                                " groups=" + std::to_string(groups));
  const int sms = sm_count();
  switch (choose_tile(p.M, p.N, groups, sms)) {
    case TileKind::Large:
      return gemm_launch<TileLarge>(p, groups, stream, sms);
    case TileKind::Medium:
      return gemm_launch<TileMedium>(p, groups, stream, sms);
    case TileKind::ThinM:
      return gemm_launch<TileThinM>(p, groups, stream, sms);
  }
}

}  // namespace nns::ops::cuda
