// The tiled SGEMM shared by every GEMM-shaped kernel of the CUDA backend (linear layers and the
// implicit-GEMM convolutions), written as phase functions of (block, thread) so that the same
// code runs in the CUDA kernel (kernels/cuda/gemm.cuh) and in a host emulation that the tests
// run without a GPU.
//
// A Problem describes C[M, N] = sum_k A(m, k) B(k, n) for each group g (grid z) through element
// accessors, so operands can be strided, transposed or gathered on the fly (im2col without a
// buffer):
//
//   struct Problem {
//     static constexpr bool kAContigK;  // A(m, k) and A(m, k+1) are adjacent in memory
//     static constexpr bool kBContigN;  // B(k, n) and B(k, n+1) are adjacent in memory
//     int M, N, K;
//     float a(int g, int m, int k) const;   // called with m < M, k < K only
//     float b(int g, int k, int n) const;   // called with k < K, n < N only
//     void store(int g, int m, int n, float acc) const;  // m < M, n < N; applies the epilogue
//   };
//
// Tiling (one thread block computes a BM x BN tile of C; the K loop steps by BK):
//   - each thread owns TM x TN accumulators in registers: rows ty*4 + {0..3} + q*(TY*4) and
//     columns tx*4 + {0..3} + q*(TX*4), so a warp reads 16-byte vectors of consecutive
//     shared-memory words (no bank conflicts) and writes consecutive columns of C;
//   - shared memory holds the A tile as As[BK][BM] and the B tile as Bs[BK][BN] (k-major), each
//     row padded by 4 floats: the padding keeps 16-byte alignment and makes the transposing
//     stores of a k-contiguous operand conflict-free;
//   - global loads follow the contiguous dimension of each operand (coalesced), go to registers
//     first (prefetch of tile k+1 while tile k is multiplied), then to shared memory;
//   - out-of-range rows, columns and k are loaded as 0, so partial tiles need no special case.
// Split-K: grid z = groups * splits; split s covers [s * k_per_split, (s+1) * k_per_split) and
// writes its partial tile to partial[s][g][M][N]; splitk_reduce_at sums the splits in order
// (deterministic) and calls store.
#pragma once

#include <stdint.h>

#include "kernels/common/hd.h"

// Loop unrolling in the device pass only (the host compiler does not know the pragma).
#if defined(__CUDA_ARCH__)
#define NNS_UNROLL _Pragma("unroll")
#else
#define NNS_UNROLL
#endif

namespace nns::ops::cuda {

template <int BM_, int BN_, int BK_, int TM_, int TN_, int MinBlocks_>
struct TileConfig {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  // Blocks per multiprocessor the register allocation must allow (__launch_bounds__).
  static constexpr int kMinBlocks = MinBlocks_;
  static constexpr int TX = BN / TN;  // threads along n
  static constexpr int TY = BM / TM;  // threads along m
  static constexpr int kThreads = TX * TY;
  static constexpr int kAPerThread = BM * BK / kThreads;
  static constexpr int kBPerThread = BK * BN / kThreads;
  static constexpr int kPad = 4;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are made of 4-wide vectors");
  static_assert(BM % TM == 0 && BN % TN == 0, "tile must split evenly over threads");
  static_assert((BM * BK) % kThreads == 0 && (BN * BK) % kThreads == 0,
                "every thread loads the same number of elements");
  static_assert(BM % 32 == 0 && BN % 32 == 0, "padding analysis assumes multiples of 32");
};

// 256 threads each. Large: big GEMMs, 64 accumulators per thread, two blocks per SM (<= 128
// registers); Medium: small grids; ThinM: M <= 32 (a few selected filters or rows, a small
// batch); these two fit in 64 registers, four blocks per SM.
using TileLarge = TileConfig<128, 128, 8, 8, 8, 2>;
using TileMedium = TileConfig<64, 64, 8, 4, 4, 4>;
using TileThinM = TileConfig<32, 128, 8, 4, 4, 4>;

template <class Cfg>
struct alignas(16) TileSmem {
  float a[Cfg::BK][Cfg::BM + Cfg::kPad];
  float b[Cfg::BK][Cfg::BN + Cfg::kPad];
};

template <class Cfg>
struct TileThread {
  float acc[Cfg::TM][Cfg::TN];
  float a_next[Cfg::kAPerThread];  // prefetched A elements of the next k tile
  float b_next[Cfg::kBPerThread];
};

// Tile coordinates (m, k) of the i-th A element loaded by thread tid: consecutive threads walk
// the operand's contiguous dimension.
template <class Cfg, bool ContigK>
NNS_HD inline void tile_a_slot(int tid, int i, int& m, int& k) {
  const int e = tid + i * Cfg::kThreads;
  if (ContigK) {
    k = e % Cfg::BK;
    m = e / Cfg::BK;
  } else {
    m = e % Cfg::BM;
    k = e / Cfg::BM;
  }
}

template <class Cfg, bool ContigN>
NNS_HD inline void tile_b_slot(int tid, int i, int& k, int& n) {
  const int e = tid + i * Cfg::kThreads;
  if (ContigN) {
    n = e % Cfg::BN;
    k = e / Cfg::BN;
  } else {
    k = e % Cfg::BK;
    n = e / Cfg::BK;
  }
}

// Row (within the tile) of accumulator row i of thread tid, and column of accumulator column j.
template <class Cfg>
NNS_HD inline int tile_row(int tid, int i) {
  return (i / 4) * (Cfg::TY * 4) + (tid / Cfg::TX) * 4 + (i % 4);
}
template <class Cfg>
NNS_HD inline int tile_col(int tid, int j) {
  return (j / 4) * (Cfg::TX * 4) + (tid % Cfg::TX) * 4 + (j % 4);
}

template <class Cfg>
NNS_HD inline void tile_zero(TileThread<Cfg>& t) {
  NNS_UNROLL
  for (int i = 0; i < Cfg::TM; ++i) {
    NNS_UNROLL
    for (int j = 0; j < Cfg::TN; ++j) t.acc[i][j] = 0.0f;
  }
}

// Global -> registers: the A and B elements of the k tile starting at k0 (k < k_end).
template <class Cfg, class P>
NNS_HD inline void tile_fetch(const P& p, int g, int m0, int n0, int k0, int k_end, int tid,
                              TileThread<Cfg>& t) {
  NNS_UNROLL
  for (int i = 0; i < Cfg::kAPerThread; ++i) {
    int m, k;
    tile_a_slot<Cfg, P::kAContigK>(tid, i, m, k);
    const int gm = m0 + m, gk = k0 + k;
    t.a_next[i] = (gm < p.M && gk < k_end) ? p.a(g, gm, gk) : 0.0f;
  }
  NNS_UNROLL
  for (int i = 0; i < Cfg::kBPerThread; ++i) {
    int k, n;
    tile_b_slot<Cfg, P::kBContigN>(tid, i, k, n);
    const int gk = k0 + k, gn = n0 + n;
    t.b_next[i] = (gk < k_end && gn < p.N) ? p.b(g, gk, gn) : 0.0f;
  }
}

// Registers -> shared memory (k-major tiles).
template <class Cfg, class P>
NNS_HD inline void tile_stash(int tid, const TileThread<Cfg>& t, TileSmem<Cfg>& s) {
  NNS_UNROLL
  for (int i = 0; i < Cfg::kAPerThread; ++i) {
    int m, k;
    tile_a_slot<Cfg, P::kAContigK>(tid, i, m, k);
    s.a[k][m] = t.a_next[i];
  }
  NNS_UNROLL
  for (int i = 0; i < Cfg::kBPerThread; ++i) {
    int k, n;
    tile_b_slot<Cfg, P::kBContigN>(tid, i, k, n);
    s.b[k][n] = t.b_next[i];
  }
}

// Four consecutive floats of shared memory (16-byte aligned by construction).
NNS_HD inline void tile_load4(const float* src, float* dst) {
#if defined(__CUDA_ARCH__)
  const float4 v = *reinterpret_cast<const float4*>(src);
  dst[0] = v.x;
  dst[1] = v.y;
  dst[2] = v.z;
  dst[3] = v.w;
#else
  for (int q = 0; q < 4; ++q) dst[q] = src[q];
#endif
}

// acc += As^T Bs over the BK rows of the shared tiles (outer products of register fragments).
template <class Cfg>
NNS_HD inline void tile_mma(int tid, const TileSmem<Cfg>& s, TileThread<Cfg>& t) {
  const int ty = tid / Cfg::TX, tx = tid % Cfg::TX;
  NNS_UNROLL
  for (int kk = 0; kk < Cfg::BK; ++kk) {
    float af[Cfg::TM], bf[Cfg::TN];
    NNS_UNROLL
    for (int q = 0; q < Cfg::TM / 4; ++q)
      tile_load4(&s.a[kk][q * Cfg::TY * 4 + ty * 4], af + 4 * q);
    NNS_UNROLL
    for (int q = 0; q < Cfg::TN / 4; ++q)
      tile_load4(&s.b[kk][q * Cfg::TX * 4 + tx * 4], bf + 4 * q);
    NNS_UNROLL
    for (int i = 0; i < Cfg::TM; ++i) {
      NNS_UNROLL
      for (int j = 0; j < Cfg::TN; ++j) t.acc[i][j] += af[i] * bf[j];
    }
  }
}

// Accumulators -> C through p.store, or -> partial[split][g][M][N] when partial != nullptr.
template <class Cfg, class P>
NNS_HD inline void tile_store(const P& p, int g, int m0, int n0, int split, int groups,
                              float* partial, int tid, const TileThread<Cfg>& t) {
  NNS_UNROLL
  for (int i = 0; i < Cfg::TM; ++i) {
    const int m = m0 + tile_row<Cfg>(tid, i);
    if (m >= p.M) continue;
    NNS_UNROLL
    for (int j = 0; j < Cfg::TN; ++j) {
      const int n = n0 + tile_col<Cfg>(tid, j);
      if (n >= p.N) continue;
      if (partial)
        partial[((int64_t(split) * groups + g) * p.M + m) * p.N + n] = t.acc[i][j];
      else
        p.store(g, m, n, t.acc[i][j]);
    }
  }
}

// How K is cut into splits: every split but the last covers k_per_split (a multiple of bk)
// values of k, and none is empty.
struct SplitPlan {
  int splits = 1;
  int k_per_split = 0;
};

inline SplitPlan make_split_plan(int K, int bk, int want) {
  const int k_tiles = (K + bk - 1) / bk;
  if (want < 1) want = 1;
  if (want > k_tiles) want = k_tiles;
  const int tiles_per_split = (k_tiles + want - 1) / want;
  SplitPlan sp;
  sp.k_per_split = tiles_per_split * bk;
  sp.splits = (k_tiles + tiles_per_split - 1) / tiles_per_split;
  return sp;
}

// Element i of the (groups x M x N) output of a split-K GEMM: the sum of its partials, in split
// order, stored through p.store.
template <class P>
NNS_HD inline void splitk_reduce_at(const P& p, int groups, int splits, const float* partial,
                                    int64_t i) {
  const int64_t mn = int64_t(p.M) * p.N;
  const int g = static_cast<int>(i / mn);
  const int64_t r = i - g * mn;
  const int m = static_cast<int>(r / p.N), n = static_cast<int>(r - int64_t(m) * p.N);
  const int64_t stride = int64_t(groups) * mn;
  float acc = 0.0f;
  for (int s = 0; s < splits; ++s) acc += partial[s * stride + i];
  p.store(g, m, n, acc);
}

// ---- launch planning (host) ----

enum class TileKind : uint8_t { Large, Medium, ThinM };

// The tile shape for an (M x N) x groups GEMM on a device with `sms` multiprocessors: ThinM when
// M <= 32, Medium when M <= 64 (a 128-row tile would be half empty) or when the large tile would
// not give every multiprocessor a block, Large otherwise.
inline TileKind choose_tile(int M, int N, int groups, int sms) {
  if (M <= TileThinM::BM) return TileKind::ThinM;
  if (M <= TileMedium::BM) return TileKind::Medium;
  const int64_t large_blocks = int64_t((M + TileLarge::BM - 1) / TileLarge::BM) *
                               ((N + TileLarge::BN - 1) / TileLarge::BN) * groups;
  return large_blocks >= sms ? TileKind::Large : TileKind::Medium;
}

// Splits of K wanted when `blocks` output tiles would leave the device under-filled: enough to
// give ~2 blocks per multiprocessor, each split keeping >= 16 k tiles, grid z within CUDA's
// limit, and the partial buffer (splits * groups * M * N floats) under 256 MiB.
inline int choose_splits(int64_t blocks, int K, int bk, int groups, int64_t mn, int sms) {
  constexpr int kMinTilesPerSplit = 16;
  constexpr int kMaxSplits = 64;
  constexpr int64_t kMaxPartialFloats = (int64_t(256) << 20) / 4;
  const int64_t target = 2 * int64_t(sms);
  if (blocks >= target) return 1;
  const int k_tiles = (K + bk - 1) / bk;
  int64_t s = (target + blocks - 1) / blocks;
  s = s < k_tiles / kMinTilesPerSplit ? s : k_tiles / kMinTilesPerSplit;
  s = s < kMaxSplits ? s : kMaxSplits;
  s = s < 65535 / groups ? s : 65535 / groups;
  const int64_t per_split = int64_t(groups) * mn;
  if (per_split > 0 && s * per_split > kMaxPartialFloats) s = kMaxPartialFloats / per_split;
  return s < 1 ? 1 : static_cast<int>(s);
}

}  // namespace nns::ops::cuda
