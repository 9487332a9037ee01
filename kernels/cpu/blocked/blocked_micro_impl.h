// The bodies of the blocked micro-kernels (blocked_micro.h), included once per instruction set
// by a translation unit that first defines, in an anonymous namespace inside
// nns::ops::cpu::blocked, `struct Vec` with: type T, kLanes, kRegs (vector registers),
// zero(), load(p), store(p, v), broadcast(p), fma(a, b, c) = a * b + c, add, max, min, set1.
// Everything here has internal linkage. Accumulators are arrays indexed by compile-time
// constants after unrolling, so they live in registers; the template limits below keep each
// tile within the register file (accumulators + the vectors loaded per step + one spare).
// Every loop over a tile dimension carries `#pragma GCC unroll 32`: GCC peels loops of at most
// 16 iterations by itself, and a 28-pixel loop left rolled put the accumulators in memory
// (an FMA with a load and a store each; half the speed of the 16->16 convolutions).
#pragma once

#include <utility>

#include "kernels/cpu/blocked/blocked_micro.h"

namespace nns::ops::cpu::blocked {
namespace {

using V = typename Vec::T;
constexpr int L = Vec::kLanes;

inline V epilogue_vec(V r, const float* bias, const float* res, int act) {
  if (bias) r = Vec::add(r, Vec::load(bias));
  if (res) r = Vec::add(r, Vec::load(res));
  if (act != 0) r = Vec::max(r, Vec::zero());
  if (act == 2) r = Vec::min(r, Vec::set1(6.0f));
  return r;
}

// ---- forward / backward data: R rows x C pixels x NOC output blocks, broadcast input ----
// One input lane: NOC weight vectors, R*C broadcasts (pixels PIX floats apart), R*C*NOC FMAs. WREG: the NOC weight
// vectors are loaded into registers first and each broadcast is used at once (R*C*NOC + NOC + 1
// registers); otherwise the R*C broadcasts are held and each weight vector is used at once
// (R*C*NOC + R*C + 1), which is what fits 4 output blocks x 3 pixels in AVX2's 16 registers.
template <int C, int R, int NOC, int PIX, bool WREG>
inline __attribute__((always_inline)) void tile_step(V (&acc)[R][C][NOC], const float* in,
                                                     int64_t in_r, const float* w,
                                                     int64_t w_ocb) {
  if constexpr (WREG) {
    V wv[NOC];
#pragma GCC unroll 32
    for (int v = 0; v < NOC; ++v) wv[v] = Vec::load(w + v * w_ocb);
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
      const float* row = in + r * in_r;
#pragma GCC unroll 32
      for (int c = 0; c < C; ++c) {
        const V x = Vec::broadcast(row + c * PIX);
#pragma GCC unroll 32
        for (int v = 0; v < NOC; ++v) acc[r][c][v] = Vec::fma(wv[v], x, acc[r][c][v]);
      }
    }
  } else {
    V xv[R][C];
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 32
      for (int c = 0; c < C; ++c) xv[r][c] = Vec::broadcast(in + r * in_r + c * PIX);
#pragma GCC unroll 32
    for (int v = 0; v < NOC; ++v) {
      const V wv = Vec::load(w + v * w_ocb);
#pragma GCC unroll 32
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 32
        for (int c = 0; c < C; ++c) acc[r][c][v] = Vec::fma(wv, xv[r][c], acc[r][c][v]);
    }
  }
}

// PLAIN: the input is NCHW (a network input of a few channels): pixels STEP floats apart,
// lanes (channels) in_lane floats apart; else blocked: pixels STEP*L apart, lanes adjacent.
// Applies f(acc[r][c][v], o) to every accumulator, o its output offset.
template <int C, int R, int NOC, class F>
inline __attribute__((always_inline)) void for_tile(V (&acc)[R][C][NOC], const TileArgs& a,
                                                    F&& f) {
#pragma GCC unroll 32
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 32
    for (int c = 0; c < C; ++c)
#pragma GCC unroll 32
      for (int v = 0; v < NOC; ++v) f(acc[r][c][v], r * a.out_r + c * a.out_pix + v * a.out_ocb, v);
}

template <int C, int R, int NOC, int STEP, bool WREG, bool PLAIN>
void conv_tile(const TileArgs& a) {
  constexpr int PIX = PLAIN ? STEP : STEP * L;
  const int64_t lane = PLAIN ? a.in_lane : 1;
  V acc[R][C][NOC];
  // Each mode is a loop of its own, not a test per accumulator: a 1x1 convolution over 16
  // channels reduces over only 16 lanes per call, and the call's fixed cost counts.
  if (a.accumulate)
    for_tile(acc, a, [&](V& x, int64_t o, int) __attribute__((always_inline)) { x = Vec::load(a.out + o); });
  else
    for_tile(acc, a, [&](V& x, int64_t, int) __attribute__((always_inline)) { x = Vec::zero(); });
  const int64_t w_ocb = a.w_ocb, in_r = a.in_r;
  const float* in_b = a.in;
  const float* w_b = a.w;
  for (int b = 0; b < a.nblk; ++b, in_b += a.in_blk, w_b += a.w_blk) {
    const int nl = b + 1 == a.nblk ? a.last_lanes : L;
    const float* in_t = in_b;
    const float* w_t = w_b;
    for (int t = 0; t < a.nt; ++t, in_t += a.in_t, w_t += a.w_t) {
      const float* in_u = in_t;
      const float* w_u = w_t;
      for (int u = 0; u < a.nu; ++u, in_u += a.in_u, w_u += a.w_u) {
        if (nl == L) {
#pragma GCC unroll 4
          for (int l = 0; l < L; ++l)
            tile_step<C, R, NOC, PIX, WREG>(acc, in_u + l * lane, in_r, w_u + l * L, w_ocb);
        } else {
          for (int l = 0; l < nl; ++l)
            tile_step<C, R, NOC, PIX, WREG>(acc, in_u + l * lane, in_r, w_u + l * L, w_ocb);
        }
      }
    }
  }
  if (a.epilogue) {
    if (a.bias) {
      V bias[NOC];
#pragma GCC unroll 32
      for (int v = 0; v < NOC; ++v) bias[v] = Vec::load(a.bias + v * L);
      for_tile(acc, a, [&](V& x, int64_t, int v) __attribute__((always_inline)) { x = Vec::add(x, bias[v]); });
    }
    if (a.res)
      for_tile(acc, a, [&](V& x, int64_t o, int) __attribute__((always_inline)) { x = Vec::add(x, Vec::load(a.res + o)); });
    if (a.act != 0)
      for_tile(acc, a, [&](V& x, int64_t, int) __attribute__((always_inline)) { x = Vec::max(x, Vec::zero()); });
    if (a.act == 2)
      for_tile(acc, a, [&](V& x, int64_t, int) __attribute__((always_inline)) { x = Vec::min(x, Vec::set1(6.0f)); });
  }
  for_tile(acc, a, [&](V& x, int64_t o, int) __attribute__((always_inline)) { Vec::store(a.out + o, x); });
}

// ---- forward / backward data, one output block, stride 1: sliding over input columns ----
// A one-block tile (16 output channels) broadcasts each input value once per FMA. With the
// KWT kernel columns' weight vectors held, one broadcast of input column c serves the KWT
// pixels that read it (j = c - u forward, DIR +1; j = c + u backward data, whose tap u reads
// column j - u, DIR -1): UR + KWT - 1 broadcasts and KWT loads per UR*KWT FMAs instead of
// UR + 1 per UR. nu must be KWT; w_u, in_t, w_t as in conv_tile.
template <int UR, int KWT, int DIR>
void slide_tile(const TileArgs& a) {
  constexpr int CMIN = DIR > 0 ? 0 : -(KWT - 1), CMAX = DIR > 0 ? UR + KWT - 1 : UR;
  V acc[1][UR][1];
  if (a.accumulate)
    for_tile(acc, a, [&](V& x, int64_t o, int) __attribute__((always_inline)) { x = Vec::load(a.out + o); });
  else
    for_tile(acc, a, [&](V& x, int64_t, int) __attribute__((always_inline)) { x = Vec::zero(); });
  const int64_t w_u = a.w_u;
  auto lane = [&](const float* in, const float* w) __attribute__((always_inline)) {
    V wv[KWT];
#pragma GCC unroll 8
    for (int u = 0; u < KWT; ++u) wv[u] = Vec::load(w + u * w_u);
#pragma GCC unroll 40
    for (int c = CMIN; c < CMAX; ++c) {
      const V xb = Vec::broadcast(in + c * L);
#pragma GCC unroll 8
      for (int u = 0; u < KWT; ++u) {
        const int j = DIR > 0 ? c - u : c + u;
        if (j >= 0 && j < UR) acc[0][j][0] = Vec::fma(wv[u], xb, acc[0][j][0]);
      }
    }
  };
  const float* in_b = a.in;
  const float* w_b = a.w;
  for (int b = 0; b < a.nblk; ++b, in_b += a.in_blk, w_b += a.w_blk) {
    const int nl = b + 1 == a.nblk ? a.last_lanes : L;
    const float* in_t = in_b;
    const float* w_t = w_b;
    for (int t = 0; t < a.nt; ++t, in_t += a.in_t, w_t += a.w_t) {
      if (nl == L) {
#pragma GCC unroll 2
        for (int l = 0; l < L; ++l) lane(in_t + l, w_t + l * L);
      } else {
        for (int l = 0; l < nl; ++l) lane(in_t + l, w_t + l * L);
      }
    }
  }
  if (a.epilogue) {
    if (a.bias) {
      const V bias = Vec::load(a.bias);
      for_tile(acc, a, [&](V& x, int64_t, int) __attribute__((always_inline)) { x = Vec::add(x, bias); });
    }
    if (a.res)
      for_tile(acc, a, [&](V& x, int64_t o, int) __attribute__((always_inline)) { x = Vec::add(x, Vec::load(a.res + o)); });
    if (a.act != 0)
      for_tile(acc, a, [&](V& x, int64_t, int) __attribute__((always_inline)) { x = Vec::max(x, Vec::zero()); });
    if (a.act == 2)
      for_tile(acc, a, [&](V& x, int64_t, int) __attribute__((always_inline)) { x = Vec::min(x, Vec::set1(6.0f)); });
  }
  for_tile(acc, a, [&](V& x, int64_t o, int) __attribute__((always_inline)) { Vec::store(a.out + o, x); });
}

// ---- depthwise forward / backward data: UR pixels of one block, element-wise ----
template <int UR, int STEP>
void dw_tile(const TileArgs& a) {
  V acc[UR];
#pragma GCC unroll 32
  for (int j = 0; j < UR; ++j) acc[j] = a.accumulate ? Vec::load(a.out + j * a.out_pix) : Vec::zero();
  const float* in_t = a.in;
  const float* w_t = a.w;
  for (int t = 0; t < a.nt; ++t, in_t += a.in_t, w_t += a.w_t) {
    const float* in_u = in_t;
    const float* w_u = w_t;
    for (int u = 0; u < a.nu; ++u, in_u += a.in_u, w_u += a.w_u) {
      const V wv = Vec::load(w_u);
#pragma GCC unroll 32
      for (int j = 0; j < UR; ++j)
        acc[j] = Vec::fma(Vec::load(in_u + j * STEP * L), wv, acc[j]);
    }
  }
#pragma GCC unroll 32
  for (int j = 0; j < UR; ++j) {
    const int64_t o = j * a.out_pix;
    V r = acc[j];
    if (a.epilogue) r = epilogue_vec(r, a.bias, a.res ? a.res + o : nullptr, a.act);
    Vec::store(a.out + o, r);
  }
}

// ---- weight gradients: sums over pixels ----
// A weight-gradient tile sums over pixels, so a small tile (a 1-3 channel stem, one filter of a
// 16-channel layer) would leave a single FMA chain waiting on its own latency: tiles of fewer
// than 8 accumulators keep PU sets, one per pixel of a group of PU consecutive pixels, added
// together at the end.
constexpr int pixel_unroll(int accumulators) {
  return accumulators >= 8 ? 1 : accumulators >= 4 ? 2 : accumulators >= 2 ? 4 : 8;
}

// Calls body(p, x + p*x_col, dy_offset + p*L) for every pixel of the call's rows, p < PU
// naming the accumulator set (the row's last pixels use set 0).
template <int PU, class Args, class Body>
inline __attribute__((always_inline)) void for_pixels(const Args& a, const float* x0,
                                                      int64_t dy0, Body&& body) {
  for (int i = 0; i < a.nimg; ++i) {
    for (int row = 0; row < a.nrows; ++row) {
      const float* x = x0 + i * a.x_img + row * a.x_row;
      int64_t dyo = dy0 + i * a.dy_img + row * a.dy_row;
      int c = 0;
      for (; c + PU <= a.ncols; c += PU, x += PU * a.x_col, dyo += PU * L)
#pragma GCC unroll 8
        for (int p = 0; p < PU; ++p) body(p, x + p * a.x_col, dyo + p * L);
      for (; c < a.ncols; ++c, x += a.x_col, dyo += L) body(0, x, dyo);
    }
  }
}

// Many filters: KWT kernel columns x NCI input lanes x NOC output blocks. DREG: the NOC dy
// vectors of a pixel in registers, each x broadcast used at once; otherwise the KWT*NCI
// broadcasts held and each dy vector used at once (as tile_step's WREG). PLAIN: x is NCHW
// (columns 1 float apart, lanes x_lane apart); else blocked (columns L apart, lanes adjacent).
//
// KHT > 1 (square plain tiles, KHT == KWT): every kernel row too, x rows x_trow apart, for a
// stem's whole kernel in one pass over dy (acc rows acc_trow apart).
template <int NCI, int NOC, bool DREG, int KWT, bool PLAIN, int KHT = 1>
void wgrad_tile(const WgradArgs& a) {
  constexpr int TW = KWT * NCI, T = KHT * TW, PU = pixel_unroll(T * NOC), XT = PLAIN ? 1 : L;
  V acc[PU][T][NOC];
#pragma GCC unroll 8
  for (int p = 0; p < PU; ++p)
#pragma GCC unroll 32
    for (int t = 0; t < T; ++t)
#pragma GCC unroll 32
      for (int v = 0; v < NOC; ++v) acc[p][t][v] = Vec::zero();
  const int64_t dy_ocb = a.dy_ocb, xl = PLAIN ? a.x_lane : 1, xr = a.x_trow;
  const float* dyb = a.dy;
  // x offset of tap t = (kernel row, kernel column, lane).
  auto xoff = [&](int t) __attribute__((always_inline)) {
    return (t / TW) * xr + ((t % TW) / NCI) * XT + (t % NCI) * xl;
  };
  for_pixels<PU>(a, a.x, 0, [&](int p, const float* x, int64_t dyo) __attribute__((always_inline)) {
    const float* dy = dyb + dyo;
    if constexpr (DREG) {
      V d[NOC];
#pragma GCC unroll 32
      for (int v = 0; v < NOC; ++v) d[v] = Vec::load(dy + v * dy_ocb);
#pragma GCC unroll 32
      for (int t = 0; t < T; ++t) {
        const V xb = Vec::broadcast(x + xoff(t));
#pragma GCC unroll 32
        for (int v = 0; v < NOC; ++v) acc[p][t][v] = Vec::fma(xb, d[v], acc[p][t][v]);
      }
    } else {
      V xb[T];
#pragma GCC unroll 32
      for (int t = 0; t < T; ++t) xb[t] = Vec::broadcast(x + xoff(t));
#pragma GCC unroll 32
      for (int v = 0; v < NOC; ++v) {
        const V d = Vec::load(dy + v * dy_ocb);
#pragma GCC unroll 32
        for (int t = 0; t < T; ++t) acc[p][t][v] = Vec::fma(xb[t], d, acc[p][t][v]);
      }
    }
  });
#pragma GCC unroll 32
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 32
    for (int v = 0; v < NOC; ++v) {
      V sum = acc[0][t][v];
#pragma GCC unroll 8
      for (int p = 1; p < PU; ++p) sum = Vec::add(sum, acc[p][t][v]);
      float* o = a.acc + (t / TW) * a.acc_trow + ((t % TW) / NCI) * a.acc_tap + (t % NCI) * L +
                 v * a.acc_ocb;
      Vec::store(o, Vec::add(Vec::load(o), sum));
    }
}

// Sliding (stride 1, one output block): pixel p is an input column c; tap u pairs it with the
// dy column c - u. KWT dy vectors held, each x broadcast used KWT times.
template <int NCI, int KWT>
void wgrad_slide_tile(const WgradArgs& a) {
  constexpr int PU = pixel_unroll(NCI * KWT);
  V acc[PU][KWT][NCI];
#pragma GCC unroll 8
  for (int p = 0; p < PU; ++p)
#pragma GCC unroll 32
    for (int u = 0; u < KWT; ++u)
#pragma GCC unroll 32
      for (int r = 0; r < NCI; ++r) acc[p][u][r] = Vec::zero();
  const float* dyb = a.dy;
  for_pixels<PU>(a, a.x, 0, [&](int p, const float* x, int64_t dyo) __attribute__((always_inline)) {
    const float* dy = dyb + dyo;
    V d[KWT];
#pragma GCC unroll 32
    for (int u = 0; u < KWT; ++u) d[u] = Vec::load(dy - u * L);
#pragma GCC unroll 32
    for (int r = 0; r < NCI; ++r) {
      const V xb = Vec::broadcast(x + r);
#pragma GCC unroll 32
      for (int u = 0; u < KWT; ++u) acc[p][u][r] = Vec::fma(xb, d[u], acc[p][u][r]);
    }
  });
#pragma GCC unroll 32
  for (int u = 0; u < KWT; ++u)
#pragma GCC unroll 32
    for (int r = 0; r < NCI; ++r) {
      V sum = acc[0][u][r];
#pragma GCC unroll 8
      for (int p = 1; p < PU; ++p) sum = Vec::add(sum, acc[p][u][r]);
      float* o = a.acc + u * a.acc_tap + r * L;
      Vec::store(o, Vec::add(Vec::load(o), sum));
    }
}

// Few filters: KWT taps x NCB input blocks x NF filters.
template <int KWT, int NCB, int NF>
void wgrad_few_tile(const WgradFewArgs& a) {
  constexpr int PU = pixel_unroll(KWT * NCB * NF);
  V acc[PU][NF][NCB][KWT];
#pragma GCC unroll 8
  for (int p = 0; p < PU; ++p)
#pragma GCC unroll 32
    for (int f = 0; f < NF; ++f)
#pragma GCC unroll 32
      for (int b = 0; b < NCB; ++b)
#pragma GCC unroll 32
        for (int u = 0; u < KWT; ++u) acc[p][f][b][u] = Vec::zero();
  const int64_t x_blk = a.x_blk;
  const float* dyf[NF];
#pragma GCC unroll 32
  for (int f = 0; f < NF; ++f) dyf[f] = a.dy[f];
  for_pixels<PU>(a, a.x, 0, [&](int p, const float* x, int64_t dyo) __attribute__((always_inline)) {
    V d[NF];
#pragma GCC unroll 32
    for (int f = 0; f < NF; ++f) d[f] = Vec::broadcast(dyf[f] + dyo);
#pragma GCC unroll 32
    for (int b = 0; b < NCB; ++b)
#pragma GCC unroll 32
      for (int u = 0; u < KWT; ++u) {
        const V xv = Vec::load(x + b * x_blk + u * L);
#pragma GCC unroll 32
        for (int f = 0; f < NF; ++f) acc[p][f][b][u] = Vec::fma(xv, d[f], acc[p][f][b][u]);
      }
  });
#pragma GCC unroll 32
  for (int f = 0; f < NF; ++f)
#pragma GCC unroll 32
    for (int b = 0; b < NCB; ++b)
#pragma GCC unroll 32
      for (int u = 0; u < KWT; ++u) {
        V sum = acc[0][f][b][u];
#pragma GCC unroll 8
        for (int p = 1; p < PU; ++p) sum = Vec::add(sum, acc[p][f][b][u]);
        float* o = a.acc + f * a.acc_f + b * a.acc_b + u * L;
        Vec::store(o, Vec::add(Vec::load(o), sum));
      }
}

// Depthwise: KWT taps of one block, element-wise.
template <int KWT>
void dw_wgrad_tile(const WgradFewArgs& a) {
  constexpr int PU = pixel_unroll(KWT);
  V acc[PU][KWT];
#pragma GCC unroll 8
  for (int p = 0; p < PU; ++p)
#pragma GCC unroll 32
    for (int u = 0; u < KWT; ++u) acc[p][u] = Vec::zero();
  const float* dyb = a.dy[0];
  for_pixels<PU>(a, a.x, 0, [&](int p, const float* x, int64_t dyo) __attribute__((always_inline)) {
    const V d = Vec::load(dyb + dyo);
#pragma GCC unroll 32
    for (int u = 0; u < KWT; ++u) acc[p][u] = Vec::fma(Vec::load(x + u * L), d, acc[p][u]);
  });
#pragma GCC unroll 32
  for (int u = 0; u < KWT; ++u) {
    V sum = acc[0][u];
#pragma GCC unroll 8
    for (int p = 1; p < PU; ++p) sum = Vec::add(sum, acc[p][u]);
    float* o = a.acc + u * L;
    Vec::store(o, Vec::add(Vec::load(o), sum));
  }
}

// ---- the table ----
constexpr int kSpare = 1;  // registers left for the compiler besides accumulators and loads

// A tile of P pixels (or input lanes) x NOC blocks fits with the NOC vectors in registers
// (order 0), or else with the P broadcasts in registers (order 1); the held operands of the
// other kind take one register in turn.
template <int P, int NOC>
constexpr int tile_order() {
  if constexpr (P * NOC + NOC + 1 <= Vec::kRegs) return 0;
  if constexpr (P * NOC + P + 1 <= Vec::kRegs) return 1;
  return -1;
}

template <int STEP, int NOC, int C, int R>
constexpr TileKernel tile_entry() {
  if constexpr (C >= 1 && R >= 1 && (R == 1 || C <= kMaxRowCols) && R * C <= Vec::kMaxUr &&
                tile_order<R * C, NOC>() >= 0)
    return &conv_tile<C, R, NOC, STEP, tile_order<R * C, NOC>() == 0, false>;
  else
    return nullptr;
}
template <int STEP, int NOC, int C>
constexpr TileKernel tile_plain_entry() {
  if constexpr (C >= 1 && C <= Vec::kMaxUr && tile_order<C, NOC>() >= 0)
    return &conv_tile<C, 1, NOC, STEP, tile_order<C, NOC>() == 0, true>;
  else
    return nullptr;
}
template <int PLAIN, int NOC, int NCI, int KWT>
constexpr WgradKernel wgrad_entry() {
  if constexpr (NCI >= 1 && NCI <= L && KWT >= 1 && (KWT == 1 || NCI <= kMaxWgradTapLanes) &&
                (!PLAIN || NCI <= kMaxWgradTapLanes) && tile_order<KWT * NCI, NOC>() >= 0)
    return &wgrad_tile<NCI, NOC, tile_order<KWT * NCI, NOC>() == 0, KWT, PLAIN != 0>;
  else
    return nullptr;
}
template <int KWT, int NCBI, int NF>
constexpr WgradFewKernel few_entry() {
  constexpr int NCB = 1 << NCBI;
  if constexpr (KWT >= 1 && NF >= 1 && KWT * NCB * NF + NF + 1 + kSpare <= Vec::kRegs)
    return &wgrad_few_tile<KWT, NCB, NF>;
  else
    return nullptr;
}

template <int STEP, int NOC, int C, int... Rs>
constexpr void fill_tile_rows(BlockedKernels& k, std::integer_sequence<int, Rs...>) {
  ((k.tile[STEP - 1][NOC][C][Rs] = tile_entry<STEP, NOC, C, Rs>()), ...);
}
template <int STEP, int NOC, int... Cs>
constexpr void fill_tiles(BlockedKernels& k, std::integer_sequence<int, Cs...>) {
  (fill_tile_rows<STEP, NOC, Cs>(k, std::make_integer_sequence<int, kMaxRows + 1>{}), ...);
  ((k.tile_plain[STEP - 1][NOC][Cs] = tile_plain_entry<STEP, NOC, Cs>()), ...);
}
template <int STEP, int... URs>
constexpr void fill_dw_tiles(BlockedKernels& k, std::integer_sequence<int, URs...>) {
  ((k.dw_tile[STEP - 1][URs] = URs >= 1 ? &dw_tile<(URs >= 1 ? URs : 1), STEP> : nullptr), ...);
}
template <int D, int KWT, int UR>
constexpr TileKernel slide_entry() {
  if constexpr (UR >= 1 && UR <= Vec::kMaxUr && (KWT == 3 || KWT == 5) &&
                UR + KWT + 1 <= Vec::kRegs)
    return &slide_tile<UR, KWT, D == 0 ? 1 : -1>;
  else
    return nullptr;
}
template <int D, int KWT, int... URs>
constexpr void fill_slide(BlockedKernels& k, std::integer_sequence<int, URs...>) {
  ((k.slide[D][KWT][URs] = slide_entry<D, KWT, URs>()), ...);
}
template <int NCI, int KWT>
constexpr WgradKernel wgrad_slide_entry() {
  if constexpr (NCI >= 1 && NCI <= L && KWT >= 1 && KWT * NCI + KWT + 1 <= Vec::kRegs)
    return &wgrad_slide_tile<NCI, KWT>;
  else
    return nullptr;
}
template <int NCI, int... KWTs>
constexpr void fill_wgrad_slide(BlockedKernels& k, std::integer_sequence<int, KWTs...>) {
  ((k.wgrad_slide[NCI][KWTs] = wgrad_slide_entry<NCI, KWTs>()), ...);
}
template <int... NCIs>
constexpr void fill_wgrad_slides(BlockedKernels& k, std::integer_sequence<int, NCIs...>) {
  (fill_wgrad_slide<NCIs>(k, std::make_integer_sequence<int, kMaxKwt + 1>{}), ...);
}
template <int NOC, int NCI, int K>
constexpr WgradKernel wgrad_square_entry() {
  if constexpr (NCI >= 1 && NCI <= kMaxWgradTapLanes && K >= 2 && K <= kMaxKwt &&
                tile_order<K * K * NCI, NOC>() >= 0)
    return &wgrad_tile<NCI, NOC, tile_order<K * K * NCI, NOC>() == 0, K, true, K>;
  else
    return nullptr;
}
template <int NOC, int NCI, int... Ks>
constexpr void fill_wgrad_square(BlockedKernels& k, std::integer_sequence<int, Ks...>) {
  if constexpr (NCI <= kMaxWgradTapLanes)
    ((k.wgrad_square[NOC][NCI][Ks] = wgrad_square_entry<NOC, NCI, Ks>()), ...);
}
template <int PLAIN, int NOC, int NCI, int... KWTs>
constexpr void fill_wgrad_taps(BlockedKernels& k, std::integer_sequence<int, KWTs...>) {
  ((k.wgrad[PLAIN][NOC][NCI][KWTs] = wgrad_entry<PLAIN, NOC, NCI, KWTs>()), ...);
}
template <int NOC, int... NCIs>
constexpr void fill_wgrad(BlockedKernels& k, std::integer_sequence<int, NCIs...>) {
  (fill_wgrad_taps<0, NOC, NCIs>(k, std::make_integer_sequence<int, kMaxKwt + 1>{}), ...);
  (fill_wgrad_taps<1, NOC, NCIs>(k, std::make_integer_sequence<int, kMaxKwt + 1>{}), ...);
  if constexpr (NOC <= 2)
    (fill_wgrad_square<NOC, NCIs>(k, std::make_integer_sequence<int, kMaxKwt + 1>{}), ...);
}
template <int KWT, int NCBI, int... NFs>
constexpr void fill_few(BlockedKernels& k, std::integer_sequence<int, NFs...>) {
  ((k.few[KWT][NCBI][NFs] = few_entry<KWT, NCBI, NFs>()), ...);
}
template <int KWT, int... NCBIs>
constexpr void fill_few_kwt(BlockedKernels& k, std::integer_sequence<int, NCBIs...>) {
  (fill_few<KWT, NCBIs>(k, std::make_integer_sequence<int, kMaxNf + 1>{}), ...);
}
template <int... KWTs>
constexpr void fill_few_all(BlockedKernels& k, std::integer_sequence<int, KWTs...>) {
  (fill_few_kwt<KWTs>(k, std::make_integer_sequence<int, kNcbSizes>{}), ...);
  ((k.dw_wgrad[KWTs] = KWTs >= 1 ? &dw_wgrad_tile<(KWTs >= 1 ? KWTs : 1)> : nullptr), ...);
}
template <int... NOCs>
constexpr void fill_by_noc(BlockedKernels& k, std::integer_sequence<int, NOCs...>) {
  (fill_tiles<1, NOCs>(k, std::make_integer_sequence<int, kMaxUr + 1>{}), ...);
  (fill_tiles<2, NOCs>(k, std::make_integer_sequence<int, kMaxUr + 1>{}), ...);
  (fill_wgrad<NOCs>(k, std::make_integer_sequence<int, kMaxLanes + 1>{}), ...);
}

constexpr BlockedKernels make_kernels() {
  BlockedKernels k{};
  k.lanes = L;
  fill_by_noc(k, std::integer_sequence<int, 1, 2, 3, 4>{});
  fill_dw_tiles<1>(k, std::make_integer_sequence<int, Vec::kMaxUr + 1>{});
  fill_dw_tiles<2>(k, std::make_integer_sequence<int, Vec::kMaxUr + 1>{});
  fill_few_all(k, std::make_integer_sequence<int, kMaxKwt + 1>{});
  fill_wgrad_slides(k, std::make_integer_sequence<int, kMaxLanes + 1>{});
  fill_slide<0, 3>(k, std::make_integer_sequence<int, kMaxUr + 1>{});
  fill_slide<0, 5>(k, std::make_integer_sequence<int, kMaxUr + 1>{});
  fill_slide<1, 3>(k, std::make_integer_sequence<int, kMaxUr + 1>{});
  fill_slide<1, 5>(k, std::make_integer_sequence<int, kMaxUr + 1>{});
  return k;
}

constexpr BlockedKernels kKernels = make_kernels();

}  // namespace
}  // namespace nns::ops::cpu::blocked
