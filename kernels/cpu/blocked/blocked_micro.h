// The micro-kernels of the blocked convolutions (conv_blocked.h), one table per instruction set:
// blocked_micro_avx2.cpp (x86-64-v3, 8 lanes) and blocked_micro_avx512.cpp (x86-64-v4, 16
// lanes). Those units include nothing but intrinsics and blocked_micro_impl.h, so no inline
// function compiled for AVX-512 can be merged into code that runs on AVX2-only CPUs. All
// strides are in floats; L = lanes.
#pragma once

#include <cstdint>

namespace nns::ops::cpu::blocked {

constexpr int kMaxNoc = 4;    // output blocks of a forward tile
constexpr int kMaxUr = 28;    // output pixels of a forward tile (one row)
constexpr int kMaxRows = 8;   // rows (images) of a multi-row tile
constexpr int kMaxRowCols = 4;  // pixels per row of a multi-row tile
constexpr int kMaxLanes = 16;
constexpr int kMaxKwt = 5;    // kw taps of a few-filter weight-gradient tile
constexpr int kNcbSizes = 4;  // input blocks of a few-filter tile: 1, 2, 4, 8 (index 0..3)
constexpr int kMaxNf = 4;     // filters of a few-filter tile
constexpr int kMaxWgradTapLanes = 4;  // most input lanes of a multi-column wgrad tile

// Forward and backward-data tile: out[r][c][v] (R rows of C pixels x NOC output blocks of L
// channels; a row is an image row, or the same row of another image) =
//   sum over input blocks b < nblk, taps t < nt, u < nu, lanes l of
//     in[r*in_r + b*in_blk + t*in_t + u*in_u + c*STEP*L + l]
//     (plain-input tiles, NCHW: in[... + c*STEP + l*in_lane], one block)
//       * w[v*w_ocb + b*w_blk + t*w_t + u*w_u + l*L + 0..L)
// (STEP, the input pixel step in vectors, is a template argument; the last block has
// last_lanes lanes), plus out itself when `accumulate`; then, when `epilogue`,
// + bias[v*L + 0..L) (null: none) + res[o] (null: none), the activation (0 none, 1 ReLU,
// 2 ReLU6), stored at out[o], o = r*out_r + c*out_pix + v*out_ocb.
// Depthwise tiles (NOC 1, nblk 1) multiply element-wise: in vectors (not broadcasts) times w
// vectors, w[t*w_t + u*w_u + 0..L).
struct TileArgs {
  const float* in;
  int64_t in_r, in_lane;
  const float* w;
  int64_t w_ocb;
  int nblk, last_lanes;
  int64_t in_blk, w_blk;
  int nt;
  int64_t in_t, w_t;
  int nu;
  int64_t in_u, w_u;
  float* out;
  int64_t out_r, out_pix, out_ocb;
  const float* res;
  const float* bias;
  int act;
  bool accumulate, epilogue;
};
using TileKernel = void (*)(const TileArgs&);

// Weight gradient, many filters: acc[u*acc_tap + r*L + v*acc_ocb + 0..L) += sum over pixels p
// of x[p][u][r] * dy[p][v*dy_ocb + 0..L), u < KWT kernel columns, r < NCI input lanes, v < NOC
// output blocks; pixels p = (image i < nimg, row < nrows, column c < ncols) at x + i*x_img +
// row*x_row + c*x_col and dy + i*dy_img + row*dy_row + c*L; x[p][u][r] = x[p + u*L + r]
// (blocked) or x[p + u + r*x_lane] (plain NCHW input). Tiles of KWT > 1, and plain ones, exist
// for NCI <= kMaxWgradTapLanes (stems: a few input channels give few accumulators per column);
// square plain tiles also sum over K kernel rows (x rows x_trow apart, acc_trow in acc).
struct WgradArgs {
  const float* x;
  int64_t x_lane, x_trow;
  const float* dy;
  int64_t dy_ocb;
  int nimg;
  int64_t x_img, dy_img;
  int nrows;
  int64_t x_row, dy_row;
  int ncols;
  int64_t x_col;
  float* acc;
  int64_t acc_ocb, acc_tap, acc_trow;
};
using WgradKernel = void (*)(const WgradArgs&);

// Weight gradient, few filters: acc[f*acc_f + b*acc_b + u*L + 0..L) += sum over pixels p of
//   x[p + b*x_blk + u*L + 0..L) * dy_f[p],  f < NF filters, b < NCB input blocks, u < KWT taps,
// pixels as in WgradArgs (dy_f: the filter's scalar, dy[f] + i*dy_img + row*dy_row + c*L).
// Depthwise (NCB = NF = 1, dy[0] a vector): acc[u*L + 0..L) += x[p + u*L + 0..L) * dy[p + 0..L).
struct WgradFewArgs {
  const float* x;
  int64_t x_blk;
  const float* dy[kMaxNf];
  int nimg;
  int64_t x_img, dy_img;
  int nrows;
  int64_t x_row, dy_row;
  int ncols;
  int64_t x_col;
  float* acc;
  int64_t acc_f, acc_b;
};
using WgradFewKernel = void (*)(const WgradFewArgs&);

// Null entries: tiles that would not fit the vector registers.
struct BlockedKernels {
  int lanes;
  // [STEP - 1][NOC][C][R]: every C for R = 1, C <= kMaxRowCols for R > 1.
  TileKernel tile[2][kMaxNoc + 1][kMaxUr + 1][kMaxRows + 1];
  TileKernel tile_plain[2][kMaxNoc + 1][kMaxUr + 1];  // [STEP - 1][NOC][C], NCHW input
  // Stride-1 one-block tiles sliding over input columns (impl's slide_tile): [0 forward,
  // 1 backward data][KWT: 3 or 5, = nu][UR].
  TileKernel slide[2][kMaxKwt + 1][kMaxUr + 1];
  WgradKernel wgrad[2][kMaxNoc + 1][kMaxLanes + 1][kMaxKwt + 1];  // [plain][NOC][NCI][KWT]
  // Stride-1 "sliding" tiles, one output block: per input column, NCI broadcasts of x and KWT
  // dy vectors (columns c, c-1, .., c-KWT+1), acc[u*acc_tap + r*L] += x[c][r] * dy[c - u]:
  // [NCI][KWT]. With 16 output channels an x broadcast then serves KWT FMAs, not one.
  WgradKernel wgrad_slide[kMaxLanes + 1][kMaxKwt + 1];
  // Plain-input tiles over a whole K x K kernel (x rows x_trow apart, acc rows acc_trow
  // apart): [NOC <= 2][NCI <= kMaxWgradTapLanes][K].
  WgradKernel wgrad_square[3][kMaxWgradTapLanes + 1][kMaxKwt + 1];
  WgradFewKernel few[kMaxKwt + 1][kNcbSizes][kMaxNf + 1];  // [KWT][log2 NCB][NF]
  TileKernel dw_tile[2][kMaxUr + 1];                   // depthwise [STEP - 1][UR]
  WgradFewKernel dw_wgrad[kMaxKwt + 1];                // depthwise [KWT]
};

// Null when the compiler could not build the AVX-512 unit.
const BlockedKernels* blocked_kernels_avx2();
const BlockedKernels* blocked_kernels_avx512();

}  // namespace nns::ops::cpu::blocked
