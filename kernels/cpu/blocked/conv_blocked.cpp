// Drivers of the blocked convolutions (conv_blocked.h): weight packing, scratch layout, the
// loops that cut each pass into micro-kernel calls (blocked_micro.h), threads, reorders.
//
// Forward. Per image, output-block group g (NOC blocks) and output row oh, the row is cut into
// tiles of UR pixels; each tile is one call that reduces over every input block, the kernel
// rows that fall inside the image (so top/bottom padding costs nothing) and every kernel
// column. Left/right padding: the columns whose kernel columns all read inside the image are
// the row tiles, read in place; each edge column runs only its own kernel columns, in tiles of
// up to 8 rows (fwd_split); narrow rows with wide kernels and NCHW inputs use a zero-margined
// copy instead. NOC and UR come from a small cost model (tile_cycles). One output block at
// stride 1 slides over input columns (slide_tile). Rows of <= 4 pixels (small maps) take tiles
// of the same row in up to 8 images and split the kernel columns exactly (split_row).
//
// Backward data. dx pixels of one stride phase (ih % sh, iw % sw) see the same kernel taps, so
// each phase row is a stride-1 correlation of dy with a sub-kernel: the forward tiles with
// input step 1, output step sw, and negative tap strides (dy index falls as the tap rises).
// Every dx pixel belongs to one phase and is written once; pixels no tap reaches get zeros.
// Edges, small maps and one-block sliding as in the forward.
//
// Backward weights. Many filters: tiles (output-block group, input block) accumulate
// [kh][kw][v][L ci][L co] over pixels (x broadcast, dy loaded); per kernel tap, the rows and
// columns that read inside the image are exact ranges, so no padded copy. Small weight
// gradients (<= kImagesOuterFloats) pass each image chunk through every tile while it sits in
// L2, every thread summing into its own copy; large ones make each tile a work item over all
// images. One output block at stride 1 slides over input columns; 1-4 input lanes take several
// kernel columns per call (an NCHW stem: the whole kernel). Few filters (<= kFewMax, the
// obfuscation step's 1-5): the few-filter kernel loads x vectors (L input channels) and
// broadcasts each filter's dy, so one filter costs 1/L of a block; items are (image, kernel
// row) with per-thread partials. Depthwise convolutions have their own element-wise tiles in
// all three passes.
#include "kernels/cpu/blocked/conv_blocked.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cpu/blocked/blocked_micro.h"
#include "kernels/cpu/cpu_isa.h"

namespace nns::ops::cpu::blocked {

namespace {

constexpr int kFewMax = 16;  // most filters the few-filter weight gradient takes
// Largest many-filter weight gradient (floats, blocked) summed image-chunk by image-chunk
// into per-thread copies; larger ones are cut into tiles that each pass over all images.
constexpr int64_t kImagesOuterFloats = int64_t(1) << 17;

int ceil_div(int a, int b) { return (a + b - 1) / b; }
size_t round16(size_t n) { return (n + 15) / 16 * 16; }

std::string describe(const ConvDesc& d) {
  return "n=" + std::to_string(d.n) + " c_in=" + std::to_string(d.c_in) + " h=" +
         std::to_string(d.h) + " w=" + std::to_string(d.w) + " c_out=" + std::to_string(d.c_out) +
         " k=" + std::to_string(d.kh) + "x" + std::to_string(d.kw) + " stride=" +
         std::to_string(d.stride_h) + "," + std::to_string(d.stride_w) + " pad(t,l,b,r)=" +
         std::to_string(d.pad_t) + "," + std::to_string(d.pad_l) + "," + std::to_string(d.pad_b) +
         "," + std::to_string(d.pad_r) + " groups=" + std::to_string(d.groups) +
         " lanes=" + std::to_string(d.lanes);
}

void check_desc(const ConvDesc& d, const char* op) {
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(std::string("blocked::") + op + ": " + what + " (" + describe(d) +
                                ")");
  };
  if (d.n < 1 || d.c_in < 1 || d.h < 1 || d.w < 1 || d.c_out < 1 || d.kh < 1 || d.kw < 1)
    fail("sizes must be positive");
  if (d.stride_h < 1 || d.stride_w < 1 || d.pad_t < 0 || d.pad_l < 0 || d.pad_b < 0 ||
      d.pad_r < 0)
    fail("strides must be >= 1 and padding >= 0");
  if (d.lanes != 8 && d.lanes != 16) fail("lanes must be 8 or 16");
  if (d.groups != 1 && !conv_is_depthwise(d))
    fail("only groups == 1 and depthwise (groups == c_in == c_out) are supported");
  if (d.h + d.pad_t + d.pad_b < d.kh || d.w + d.pad_l + d.pad_r < d.kw)
    fail("kernel larger than the padded input");
}

const BlockedKernels& kernels_for(const ConvDesc& d) {
  const BlockedKernels* k = nullptr;
  if (d.lanes == 16) {
    if (!cpu_avx512_usable())
      throw std::invalid_argument("blocked: lanes 16 needs AVX-512, which this CPU/build lacks");
    k = blocked_kernels_avx512();
  } else {
    k = blocked_kernels_avx2();
    if (!k) throw std::invalid_argument("blocked: this build has no AVX2 kernels");
  }
  return *k;
}

// Derived sizes of a convolution.
struct Geo {
  int L, cbi, cbo, oh, ow;
  int64_t x_img, y_img;  // floats of one image of x and of y
  int64_t x_plane, y_plane;  // floats of one channel block of one image
};
Geo geo(const ConvDesc& d) {
  Geo g;
  g.L = d.lanes;
  g.cbi = ceil_div(d.c_in, g.L);
  g.cbo = ceil_div(d.c_out, g.L);
  g.oh = conv_out_h(d);
  g.ow = conv_out_w(d);
  g.x_plane = int64_t(d.h) * d.w * g.L;
  g.y_plane = int64_t(g.oh) * g.ow * g.L;
  g.x_img = g.cbi * g.x_plane;
  g.y_img = g.cbo * g.y_plane;
  return g;
}

// The output rows [lo, hi) whose kernel row kh reads inside the input (likewise columns).
struct Range {
  int lo, hi;
};
Range valid_outputs(int k, int stride, int pad, int in, int out) {
  // out index o reads o*stride - pad + k in [0, in).
  int lo = pad - k > 0 ? ceil_div(pad - k, stride) : 0;
  int hi = (in - 1 + pad - k) >= 0 ? (in - 1 + pad - k) / stride + 1 : 0;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
  return {lo, hi};
}

// ---- tile choice ----

// Cycles per input lane of a tile of ur pixels x nv output blocks: FMAs at 2 per cycle, loads
// (nv weight vectors, ur broadcasts) at 2 per cycle, and each accumulator's chain of FMAs
// (latency 4; counted as 6, so that tiles of 8 accumulators, which only just cover it, lose
// to tiles of 10-12: on AVX2, 32->32 channels at 14x14 took 4 blocks x 2 pixels otherwise).
double tile_cycles(int ur, int nv) {
  return std::max({ur * nv / 2.0, (ur + nv) / 2.0, 6.0});
}

int max_ur(const BlockedKernels& k, int step, int nv, bool depthwise) {
  if (step > 2) return 1;
  int ur = kMaxUr;
  if (depthwise) {
    while (ur > 1 && !k.dw_tile[step - 1][ur]) --ur;
  } else {
    while (ur > 1 && !k.tile[step - 1][nv][ur][1]) --ur;
  }
  return ur;
}

// A row of `pixels` cut into chunks of at most `urmax`, as even as possible.
struct Chunks {
  int n, ur, last;  // n chunks: n-1 of ur pixels, the last of `last`
};
Chunks chunks(int pixels, int urmax) {
  Chunks c;
  c.n = ceil_div(pixels, urmax);
  c.ur = ceil_div(pixels, c.n);
  c.last = pixels - (c.n - 1) * c.ur;
  return c;
}

// NOC (output blocks per tile) for rows of `pixels` pixels over `nb` output blocks.
int choose_noc(const BlockedKernels& k, int step, int pixels, int nb) {
  int best = 1;
  double best_cost = 0.0;
  for (int noc = 1; noc <= std::min(kMaxNoc, nb); ++noc) {
    if (!k.tile[0][noc][1][1]) continue;
    double cost = 0.0;
    for (int g0 = 0; g0 < nb; g0 += noc) {
      const int nv = std::min(noc, nb - g0);
      const Chunks c = chunks(pixels, max_ur(k, step, nv, false));
      cost += (c.n - 1) * tile_cycles(c.ur, nv) + tile_cycles(c.last, nv);
    }
    if (noc == 1 || cost <= best_cost) {
      best = noc;
      best_cost = cost;
    }
  }
  return best;
}

TileKernel tile_kernel(const BlockedKernels& k, int step, int nv, int ur) {
  return k.tile[step <= 2 ? step - 1 : 0][nv][ur][1];
}

// ---- small maps: tiles of R images x C pixels of one row ----
//
// A row of 1-4 output pixels gives a one-row tile too few accumulators (and each weight vector
// too little reuse), and with a 3x3 kernel a third of its taps would multiply padding. Small
// maps take tiles of the same row in R images, and split the kernel columns: one call over the
// columns every pixel reads (it starts the sums), then each other column over exactly the
// pixels it reads, accumulating; a last call applies the epilogue. Inputs are read in place.

bool small_rows(int pixels) { return pixels <= kMaxRowCols; }

int max_rows(const BlockedKernels& k, int step_idx, int nv, int c) {
  int r = kMaxRows;
  while (r > 1 && !k.tile[step_idx][nv][c][r]) --r;
  return r;
}

// NOC for rows of `pixels` pixels over `nb` output blocks, tiles of R images.
int choose_small_noc(const BlockedKernels& k, int step_idx, int pixels, int nb, int images) {
  int best = 1;
  double best_cost = 0.0;
  for (int noc = 1; noc <= std::min(kMaxNoc, nb); ++noc) {
    if (!k.tile[step_idx][noc][pixels][1]) continue;
    double cost = 0.0;
    for (int g0 = 0; g0 < nb; g0 += noc) {
      const int nv = std::min(noc, nb - g0);
      const int r = std::min(images, max_rows(k, step_idx, nv, pixels));
      const Chunks c = chunks(images, r);
      cost += (c.n - 1) * tile_cycles(c.ur * pixels, nv) + tile_cycles(c.last * pixels, nv);
    }
    if (noc == 1 || cost <= best_cost) {
      best = noc;
      best_cost = cost;
    }
  }
  return best;
}

// One row segment of `pixels` pixels in `rows` images (a.in_r, a.out_r apart): a holds in and w
// at kernel column u = 0 and pixel 0, out/res at pixel 0, the steps in_u, w_u, and nt.
// valid(u) gives the pixels [lo, hi) that column u reads inside the input; the columns that
// every pixel reads form one interval.
template <class Valid>
void split_row(const BlockedKernels& k, int L, int step, int nv, const TileArgs& a, int pixels,
               int rows, int ncols, Valid&& valid, bool epilogue) {
  const int step_idx = step <= 2 ? step - 1 : 0;
  int ua = 0, ub = 0;
  for (int u = 0; u < ncols; ++u) {
    const Range r = valid(u);
    if (r.lo == 0 && r.hi == pixels) {
      if (ub == ua) ua = u;
      ub = u + 1;
    }
  }
  bool res_from_out = false;
  auto call = [&](int u0, int nu, int c_lo, int c_hi, bool accumulate, bool epi) {
    const int c = c_hi - c_lo;
    const int rmax = step > 2 && c > 1 ? 1 : max_rows(k, step_idx, nv, c);
    TileArgs b = a;
    b.nu = nu;
    b.accumulate = accumulate;
    b.epilogue = epi;
    if (nu == 0) b.nt = 0;
    for (int r0 = 0; r0 < rows; r0 += rmax) {
      const int r = std::min(rmax, rows - r0);
      b.in = a.in + r0 * a.in_r + u0 * a.in_u + int64_t(c_lo) * step * L;
      b.w = a.w + u0 * a.w_u;
      b.out = a.out + r0 * a.out_r + c_lo * a.out_pix;
      b.res = a.res && !res_from_out ? a.res + r0 * a.out_r + c_lo * a.out_pix : nullptr;
      if (step > 2 && c > 1) {
        // Strides past 2 have single-pixel tiles.
        for (int j = 0; j < c; ++j) {
          TileArgs e = b;
          e.in = b.in + int64_t(j) * step * L;
          e.out = b.out + j * a.out_pix;
          e.res = b.res ? b.res + j * a.out_pix : nullptr;
          k.tile[0][nv][1][1](e);
        }
      } else {
        k.tile[step_idx][nv][c][r](b);
      }
    }
  };
  bool partial = false;
  for (int u = 0; u < ncols; ++u)
    if (u < ua || u >= ub) {
      const Range r = valid(u);
      partial = partial || r.hi > r.lo;
    }
  // A residual that is the output itself (an inference plan's in-place shortcut) is gone once a
  // partial sum is written: the passes accumulate onto it instead, and the epilogue adds none.
  res_from_out = epilogue && partial && a.res != nullptr && a.res == a.out;
  call(ua, ub - ua, 0, pixels, res_from_out, epilogue && !partial);
  for (int u = 0; u < ncols; ++u) {
    if (u >= ua && u < ub) continue;
    const Range r = valid(u);
    if (r.hi > r.lo) call(u, 1, r.lo, r.hi, true, false);
  }
  if (epilogue && partial) call(0, 0, 0, pixels, true, true);
}

// dst [nblk][rows][left + w + right][L] <- src [nblk][rows][w][L], zero margins.
void copy_padded(const float* src, int nblk, int rows, int w, int left, int right, int L,
                 float* dst) {
  const int wp = left + w + right;
  for (int r = 0; r < nblk * rows; ++r) {
    float* o = dst + int64_t(r) * wp * L;
    std::memset(o, 0, sizeof(float) * left * L);
    std::memcpy(o + left * L, src + int64_t(r) * w * L, sizeof(float) * w * L);
    std::memset(o + (left + w) * L, 0, sizeof(float) * right * L);
  }
}

// Hands out [0, items) dynamically over the threads; body(item, tid).
template <class F>
void parallel_items(int items, int threads, F&& body) {
  if (threads <= 1 || items <= 1) {
    for (int i = 0; i < items; ++i) body(i, 0);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int i = 0; i < items; ++i) body(i, tid);
  }
}

int op_threads() { return std::max(1, omp_get_max_threads()); }

// Carves 16-float aligned pieces off the scratch (or only counts them when base is null).
struct Carve {
  float* base;
  size_t used = 0;
  float* take(size_t n) {
    float* p = base ? base + used : nullptr;
    used += round16(n);
    return p;
  }
};

// ---- forward ----

// The horizontal margins of the padded input copy: left = pad_l, right = what the last
// output column's taps read past the image (0, 0: read x in place).
struct Margins {
  int left, right;
  bool copy() const { return left > 0 || right > 0; }
};
Margins fwd_margins(const ConvDesc& d, const Geo& g) {
  const int last = (g.ow - 1) * d.stride_w - d.pad_l + d.kw - 1;
  return {d.pad_l, std::max(0, last - (d.w - 1))};
}

// Output columns [lo, hi) whose kernel columns all read inside the input.
Range interior_columns(const ConvDesc& d, const Geo& g) {
  int jl = 0, jr = g.ow;
  for (int kw = 0; kw < d.kw; ++kw) {
    const Range r = valid_outputs(kw, d.stride_w, d.pad_l, d.w, g.ow);
    jl = std::max(jl, r.lo);
    jr = std::min(jr, r.hi);
  }
  return {jl, std::max(jl, jr)};
}

// Whether a blocked forward input's side padding is handled by edge tiles (no copy): when the
// edge columns are at most a quarter of a row. Otherwise (narrow rows, wide kernels: lenet5's
// 5x5 on 14 columns) they would mostly run in the edge tiles' 8 accumulators, and a padded
// copy of the image is cheaper.
bool fwd_split(const ConvDesc& d, const Geo& g) {
  if (!fwd_margins(d, g).copy()) return false;
  const Range in = interior_columns(d, g);
  return (g.ow - (in.hi - in.lo)) * 4 <= g.ow;
}

// Rows of zeros above and below an input so that every kernel row of every output row reads
// inside it (the weight gradient of an NCHW stem).
struct SquareMargins {
  int top, bottom;
};
SquareMargins square_margins(const ConvDesc& d, const Geo& g) {
  const int last = (g.oh - 1) * d.stride_h - d.pad_t + d.kh - 1;
  return {d.pad_t, std::max(0, last - (d.h - 1))};
}

struct FwdScratch {
  float* bias;      // [cbo * L]
  float* pad;       // per thread [pad_floats]
  size_t pad_floats;
  size_t total;
};
FwdScratch fwd_scratch(const ConvDesc& d, int threads, float* base) {
  const Geo g = geo(d);
  const Margins m = fwd_margins(d, g);
  // Padded input copies: a depthwise block, a blocked image whose edges are not split, an
  // NCHW input of <= 4 channels.
  size_t per_row = 0;
  if (conv_is_depthwise(d))
    per_row = g.L;
  else if (!fwd_split(d, g))
    per_row = size_t(g.cbi) * g.L;
  else if (d.c_in <= kMaxWgradTapLanes)
    per_row = d.c_in;
  FwdScratch s;
  Carve c{base};
  s.bias = c.take(size_t(g.cbo) * g.L);
  s.pad_floats = m.copy() ? round16(per_row * d.h * (m.left + d.w + m.right)) : 0;
  s.pad = c.take(s.pad_floats * threads);
  s.total = c.used;
  return s;
}

// Work items of a pass over n images of rows `rows` and `groups` block groups: whole images
// when there are enough, else (image, group, row chunk).
struct Items {
  int per_img, row_chunks, row_len;
  int count;
};
Items split_items(int n, int groups, int rows, int threads) {
  Items it;
  if (threads <= 1 || n >= 2 * threads) {
    it.per_img = 1;
    it.row_chunks = 1;
    it.row_len = rows;
  } else {
    it.row_chunks = std::min(rows, std::max(1, ceil_div(4 * threads, n * groups)));
    it.row_len = ceil_div(rows, it.row_chunks);
    it.row_chunks = ceil_div(rows, it.row_len);
    it.per_img = groups * it.row_chunks;
  }
  it.count = n * it.per_img;
  return it;
}

// plain: x is NCHW (c_in <= kMaxWgradTapLanes), read by the plain-input tiles.
//
// Left/right padding of a blocked input costs no copy (fwd_split): the columns whose taps all
// read inside the image are the row tiles; each edge column (one or two per side for 3x3 and
// 5x5 kernels) runs its own taps only, in tiles of up to 8 consecutive rows with the same
// kernel rows (the multi-row tiles of the small maps). Narrow rows, and an NCHW input (1-4
// channels), are copied with zero margins instead.
void forward_dense(const ConvDesc& d, const Geo& g, const BlockedKernels& k, const float* x,
                   const float* packed, const float* bias, const float* residual, int act,
                   float* y, const FwdScratch& s, bool plain) {
  const int L = g.L, sw = d.stride_w;
  const int px = plain ? 1 : L;  // floats per input pixel (of one channel block)
  const Margins m = fwd_margins(d, g);
  const bool split = !plain && fwd_split(d, g);
  const bool copy = m.copy() && !split;
  const int wp = m.left + d.w + m.right;
  const int step = sw <= 2 ? sw : 1, step_idx = step - 1;
  // Output columns [jl, jr) run as row tiles: every column, or (split) those whose kernel
  // columns all read inside the image.
  const Range interior = split ? interior_columns(d, g) : Range{0, g.ow};
  const int jl = interior.lo, jr = interior.hi;
  const int noc = choose_noc(k, sw, std::max(1, jr - jl), g.cbo);
  const int groups = ceil_div(g.cbo, noc);
  const int64_t w_t = int64_t(d.kw) * L * L, w_blk = d.kh * w_t, w_ocb = g.cbi * w_blk;
  const int64_t w_u = int64_t(L) * L;
  const int threads = op_threads();
  const Items it = split_items(d.n, groups, g.oh, threads);

  TileArgs base{};
  base.w_ocb = w_ocb;
  base.nblk = g.cbi;
  base.last_lanes = d.c_in - (g.cbi - 1) * L;
  base.w_blk = w_blk;
  base.w_t = w_t;
  base.nu = d.kw;
  base.w_u = w_u;
  base.in_u = px;
  base.out_pix = L;
  base.out_ocb = g.y_plane;
  base.act = act;
  base.epilogue = true;
  const int64_t row = int64_t(copy ? wp : d.w) * px;
  base.in_blk = row * d.h;
  base.in_lane = row * d.h;  // plain: channel planes
  base.in_t = row;
  base.in_r = int64_t(d.stride_h) * row;  // edge tiles: consecutive output rows
  base.out_r = int64_t(g.ow) * L;
  const int64_t x_img = plain ? int64_t(d.c_in) * d.h * d.w : g.x_img;
  auto kh_range = [&](int oh) {
    const int ih0 = oh * d.stride_h - d.pad_t;
    return Range{std::max(0, -ih0), std::min(d.kh, d.h - ih0)};
  };

  int last_img[256];
  for (int t = 0; t < std::min(threads, 256); ++t) last_img[t] = -1;
  parallel_items(it.count, threads, [&](int item, int tid) {
    const int n = item / it.per_img, rest = item % it.per_img;
    const int g_lo = it.per_img == 1 ? 0 : rest / it.row_chunks;
    const int g_hi = it.per_img == 1 ? groups : g_lo + 1;
    const int r_lo = it.per_img == 1 ? 0 : (rest % it.row_chunks) * it.row_len;
    const int r_hi = std::min(g.oh, r_lo + it.row_len);
    const float* src = x + n * x_img;
    if (copy) {
      float* buf = s.pad + tid * s.pad_floats;
      if (tid >= 256 || last_img[tid] != n) {
        if (plain)
          copy_padded(src, d.c_in, d.h, d.w, m.left, m.right, 1, buf);
        else
          copy_padded(src, g.cbi, d.h, d.w, m.left, m.right, L, buf);
        if (tid < 256) last_img[tid] = n;
      }
      src = buf;
    }
    const int left = copy ? m.left : 0;  // column of input column 0 in src
    TileArgs a = base;
    for (int gi = g_lo; gi < g_hi; ++gi) {
      const int ocb0 = gi * noc, nv = std::min(noc, g.cbo - ocb0);
      a.bias = bias ? s.bias + ocb0 * L : nullptr;
      const int64_t out_img = (int64_t(n) * g.cbo + ocb0) * g.y_plane;
      if (jr > jl) {
        // One output block, stride 1, 3 or 5 kernel columns: the sliding tiles.
        const bool slide = !plain && nv == 1 && sw == 1 && d.kw <= kMaxKwt &&
                           k.slide[0][d.kw][1] != nullptr;
        int urmax = max_ur(k, sw, nv, false);
        if (slide)
          while (urmax > 1 && !k.slide[0][d.kw][urmax]) --urmax;
        const Chunks c = chunks(jr - jl, urmax);
        for (int oh = r_lo; oh < r_hi; ++oh) {
          const Range kh = kh_range(oh);
          a.nt = std::max(0, kh.hi - kh.lo);
          a.nu = d.kw;
          a.w = packed + ocb0 * w_ocb + kh.lo * w_t;
          const float* in_row = src + (oh * d.stride_h - d.pad_t + kh.lo) * row;
          const int64_t out_row = out_img + int64_t(oh) * g.ow * L;
          for (int ci = 0, ow0 = jl; ci < c.n; ++ci) {
            const int ur = ci + 1 == c.n ? c.last : c.ur;
            a.in = in_row + int64_t(ow0 * sw - d.pad_l + left) * px;
            a.out = y + out_row + int64_t(ow0) * L;
            a.res = residual ? residual + out_row + int64_t(ow0) * L : nullptr;
            if (slide)
              k.slide[0][d.kw][ur](a);
            else
              (plain ? k.tile_plain[step_idx][nv][ur] : tile_kernel(k, step, nv, ur))(a);
            ow0 += ur;
          }
        }
      }
      if (!split) continue;
      // Edge columns: their own kernel columns, rows with the same kernel rows together.
      const int rmax = max_rows(k, step_idx, nv, 1);
      for (int j = 0; j < g.ow; ++j) {
        if (j == jl) j = std::max(jr, jl);
        if (j >= g.ow) break;
        const int kw_lo = std::max(0, d.pad_l - j * sw);
        const int kw_hi = std::min(d.kw, d.w + d.pad_l - j * sw);
        a.nu = std::max(0, kw_hi - kw_lo);
        for (int oh = r_lo; oh < r_hi;) {
          const Range kh = kh_range(oh);
          int rows = 1;
          while (rows < rmax && oh + rows < r_hi && kh_range(oh + rows).lo == kh.lo &&
                 kh_range(oh + rows).hi == kh.hi)
            ++rows;
          a.nt = std::max(0, kh.hi - kh.lo);
          a.w = packed + ocb0 * w_ocb + kh.lo * w_t + kw_lo * w_u;
          a.in = src + (oh * d.stride_h - d.pad_t + kh.lo) * row +
                 int64_t(j * sw - d.pad_l + kw_lo) * L;
          const int64_t o = out_img + (int64_t(oh) * g.ow + j) * L;
          a.out = y + o;
          a.res = residual ? residual + o : nullptr;
          k.tile[step_idx][nv][1][rows](a);
          oh += rows;
        }
      }
    }
  });
}

// Images per tile group of the small-map paths: kMaxRows, fewer when that leaves threads idle.
int small_image_group(int n, int groups, int threads) {
  int rg = std::min(n, kMaxRows);
  while (rg > 1 && ceil_div(n, rg) * groups < 2 * threads) rg = (rg + 1) / 2;
  return rg;
}

void forward_small(const ConvDesc& d, const Geo& g, const BlockedKernels& k, const float* x,
                   const float* packed, const float* bias, const float* residual, int act,
                   float* y, const FwdScratch& s) {
  const int L = g.L, sw = d.stride_w;
  const int noc = choose_small_noc(k, sw <= 2 ? sw - 1 : 0, g.ow, g.cbo, std::min(d.n, kMaxRows));
  const int groups = ceil_div(g.cbo, noc);
  const int64_t w_t = int64_t(d.kw) * L * L, w_blk = d.kh * w_t, w_ocb = g.cbi * w_blk;
  const int threads = op_threads();
  const int rg = small_image_group(d.n, groups, threads);
  const int img_groups = ceil_div(d.n, rg);

  TileArgs base{};
  base.in_r = g.x_img;
  base.w_ocb = w_ocb;
  base.nblk = g.cbi;
  base.last_lanes = d.c_in - (g.cbi - 1) * L;
  base.in_blk = g.x_plane;
  base.w_blk = w_blk;
  base.in_t = int64_t(d.w) * L;
  base.w_t = w_t;
  base.in_u = L;
  base.w_u = int64_t(L) * L;
  base.out_r = g.y_img;
  base.out_pix = L;
  base.out_ocb = g.y_plane;
  base.act = act;
  auto valid = [&](int u) { return valid_outputs(u, sw, d.pad_l, d.w, g.ow); };
  parallel_items(img_groups * groups, threads, [&](int item, int) {
    const int n0 = (item / groups) * rg, rows = std::min(rg, d.n - n0);
    const int ocb0 = (item % groups) * noc, nv = std::min(noc, g.cbo - ocb0);
    TileArgs a = base;
    a.bias = bias ? s.bias + ocb0 * L : nullptr;
    for (int oh = 0; oh < g.oh; ++oh) {
      const int ih0 = oh * d.stride_h - d.pad_t;
      const int kh_lo = std::max(0, -ih0), kh_hi = std::min(d.kh, d.h - ih0);
      a.nt = std::max(0, kh_hi - kh_lo);
      a.w = packed + ocb0 * w_ocb + kh_lo * w_t;
      a.in = x + n0 * g.x_img + int64_t(ih0 + kh_lo) * d.w * L - int64_t(d.pad_l) * L;
      const int64_t o = (int64_t(n0) * g.cbo + ocb0) * g.y_plane + int64_t(oh) * g.ow * L;
      a.out = y + o;
      a.res = residual ? residual + o : nullptr;
      split_row(k, L, sw, nv, a, g.ow, rows, d.kw, valid, true);
    }
  });
}

void forward_depthwise(const ConvDesc& d, const Geo& g, const BlockedKernels& k, const float* x,
                       const float* packed, const float* bias, const float* residual, int act,
                       float* y, const FwdScratch& s) {
  const int L = g.L, sw = d.stride_w;
  const Margins m = fwd_margins(d, g);
  const int wp = m.left + d.w + m.right;
  const int step = sw <= 2 ? sw : 1;
  const Chunks c = chunks(g.ow, max_ur(k, sw, 1, true));
  const int64_t row = int64_t(m.copy() ? wp : d.w) * L;
  TileArgs base{};
  base.nblk = 1;
  base.last_lanes = L;
  base.w_t = int64_t(d.kw) * L;
  base.nu = d.kw;
  base.w_u = L;
  base.in_u = L;
  base.in_t = row;
  base.out_pix = L;
  base.act = act;
  base.epilogue = true;
  parallel_items(d.n * g.cbo, op_threads(), [&](int item, int tid) {
    const int n = item / g.cbo, cb = item % g.cbo;
    const float* src = x + n * g.x_img + cb * g.x_plane;
    if (m.copy()) {
      float* buf = s.pad + tid * s.pad_floats;
      copy_padded(src, 1, d.h, d.w, m.left, m.right, L, buf);
      src = buf;
    }
    TileArgs a = base;
    a.bias = bias ? s.bias + cb * L : nullptr;
    for (int oh = 0; oh < g.oh; ++oh) {
      const int ih0 = oh * d.stride_h - d.pad_t;
      const int kh_lo = std::max(0, -ih0), kh_hi = std::min(d.kh, d.h - ih0);
      a.nt = std::max(0, kh_hi - kh_lo);
      a.w = packed + cb * d.kh * base.w_t + kh_lo * base.w_t;
      const float* in_row = src + (ih0 + kh_lo) * row;
      const int64_t out_row = (int64_t(n) * g.cbo + cb) * g.y_plane + int64_t(oh) * g.ow * L;
      for (int ci = 0, ow0 = 0; ci < c.n; ++ci) {
        const int ur = ci + 1 == c.n ? c.last : c.ur;
        a.in = in_row + int64_t(ow0 * sw - d.pad_l + m.left) * L;
        a.out = y + out_row + int64_t(ow0) * L;
        a.res = residual ? residual + out_row + int64_t(ow0) * L : nullptr;
        k.dw_tile[step - 1][ur](a);
        ow0 += ur;
      }
    }
  });
}

// ---- backward data ----

// One stride phase along one axis: dx positions r + s*i see the taps k0 + s*t (t < ntap),
// reading dy at i + c0 - t.
struct Phase {
  int k0, ntap, c0, count;
};
Phase phase(int r, int stride, int pad, int k, int in) {
  Phase p;
  p.k0 = (r + pad) % stride;
  p.ntap = p.k0 < k ? (k - 1 - p.k0) / stride + 1 : 0;
  p.c0 = (r + pad - p.k0) / stride;
  p.count = r < in ? (in - r + stride - 1) / stride : 0;
  return p;
}

// Margins of the padded dy copy: every phase column's taps read inside it.
Margins bwd_margins(const ConvDesc& d, const Geo& g) {
  Margins m{0, 0};
  for (int rw = 0; rw < std::min(d.stride_w, d.w); ++rw) {
    const Phase p = phase(rw, d.stride_w, d.pad_l, d.kw, d.w);
    if (p.ntap == 0 || p.count == 0) continue;
    m.left = std::max(m.left, p.ntap - 1 - p.c0);
    m.right = std::max(m.right, p.count - 1 + p.c0 - (g.ow - 1));
  }
  return m;
}

// Pixels [lo, hi) of a phase row whose kernel columns all read inside dy.
Range bwd_interior(const Phase& pw, int ow) {
  if (pw.ntap == 0) return {0, pw.count};
  const int jl = std::min(pw.count, std::max(0, pw.ntap - 1 - pw.c0));
  return {jl, std::max(jl, std::min(pw.count, ow - pw.c0))};
}

// As fwd_split, for dense backward data (phase 0's row).
bool bwd_split(const ConvDesc& d, const Geo& g) {
  if (conv_is_depthwise(d) || !bwd_margins(d, g).copy()) return false;
  const Phase pw = phase(0, d.stride_w, d.pad_l, d.kw, d.w);
  const Range in = bwd_interior(pw, g.ow);
  return (pw.count - (in.hi - in.lo)) * 4 <= pw.count;
}

struct BwdScratch {
  float* pad;
  size_t pad_floats;
  size_t total;
};
BwdScratch bwd_scratch(const ConvDesc& d, int threads, float* base) {
  const Geo g = geo(d);
  const Margins m = bwd_margins(d, g);
  BwdScratch s;
  Carve c{base};
  const size_t blocks = conv_is_depthwise(d) ? 1 : bwd_split(d, g) ? 0 : g.cbo;
  s.pad_floats = m.copy() ? round16(blocks * g.oh * (m.left + g.ow + m.right) * g.L) : 0;
  s.pad = c.take(s.pad_floats * threads);
  s.total = c.used;
  return s;
}

void backward_data_impl(const ConvDesc& d, const Geo& g, const BlockedKernels& k,
                        const float* dy, const float* packed, float* dx, const BwdScratch& s) {
  const int L = g.L, sh = d.stride_h, sw = d.stride_w;
  const bool dw = conv_is_depthwise(d);
  // Dense: dy's edge columns cost no copy (as forward_dense) unless rows are narrow; depthwise:
  // a padded copy.
  const bool split = bwd_split(d, g);
  const Margins m = split ? Margins{0, 0} : bwd_margins(d, g);
  const int owp = m.left + g.ow + m.right;
  const int64_t row = int64_t(m.copy() ? owp : g.ow) * L;
  // The dx row of phase rw = 0 has the most pixels; NOC is chosen for it.
  const int noc = dw ? 1 : choose_noc(k, 1, ceil_div(d.w, sw), g.cbi);
  const int groups = dw ? g.cbi : ceil_div(g.cbi, noc);
  const int64_t kl = dw ? L : int64_t(L) * L;  // floats per tap of one block pair
  const int64_t w_blk = int64_t(d.kh) * d.kw * kl, w_ocb = dw ? w_blk : g.cbo * w_blk;
  const int threads = op_threads();
  const Items it = split_items(d.n, groups, d.h, threads);

  TileArgs base{};
  base.w_ocb = w_ocb;
  base.nblk = dw ? 1 : g.cbo;
  base.last_lanes = dw ? L : d.c_out - (g.cbo - 1) * L;
  base.in_blk = row * g.oh;
  base.w_blk = w_blk;
  base.in_t = -row;
  base.w_t = int64_t(sh) * d.kw * kl;
  base.in_u = -L;
  base.w_u = int64_t(sw) * kl;
  base.out_pix = int64_t(sw) * L;
  base.out_ocb = g.x_plane;
  base.epilogue = false;
  base.in_r = row;                          // edge tiles: consecutive phase rows
  base.out_r = int64_t(sh) * d.w * L;

  int last_img[256];
  for (int t = 0; t < std::min(threads, 256); ++t) last_img[t] = -1;
  parallel_items(it.count, threads, [&](int item, int tid) {
    const int n = item / it.per_img, rest = item % it.per_img;
    const int g_lo = it.per_img == 1 ? 0 : rest / it.row_chunks;
    const int g_hi = it.per_img == 1 ? groups : g_lo + 1;
    const int r_lo = it.per_img == 1 ? 0 : (rest % it.row_chunks) * it.row_len;
    const int r_hi = std::min(d.h, r_lo + it.row_len);
    for (int gi = g_lo; gi < g_hi; ++gi) {
      const int b0 = dw ? gi : gi * noc, nv = dw ? 1 : std::min(noc, g.cbi - b0);
      // The dy this group reads: every block (dense) or its own (depthwise).
      const float* src = dy + n * g.y_img + (dw ? b0 * g.y_plane : 0);
      if (m.copy()) {
        float* buf = s.pad + tid * s.pad_floats;
        const int key = dw ? n * g.cbo + b0 : n;
        if (tid >= 256 || last_img[tid] != key) {
          copy_padded(src, dw ? 1 : g.cbo, g.oh, g.ow, m.left, m.right, L, buf);
          if (tid < 256) last_img[tid] = key;
        }
        src = buf;
      }
      TileArgs a = base;
      const int64_t out_img = (int64_t(n) * g.cbi + b0) * g.x_plane;
      for (int rh = 0; rh < std::min(sh, d.h); ++rh) {
        const Phase ph = phase(rh, sh, d.pad_t, d.kh, d.h);
        // Phase rows i (dx row rh + sh*i) in [r_lo, r_hi), and their kernel rows [t_lo, t_hi).
        const int i_lo = std::max(0, ceil_div(r_lo - rh, sh)), i_hi = ceil_div(r_hi - rh, sh);
        auto taps = [&](int i) {
          return Range{std::max(0, i + ph.c0 - g.oh + 1), std::min(ph.ntap, i + ph.c0 + 1)};
        };
        for (int rw = 0; rw < std::min(sw, d.w); ++rw) {
          const Phase pw = phase(rw, sw, d.pad_l, d.kw, d.w);
          // Pixels [jl, jr) of a phase row read every kernel column inside dy (split), or all.
          const Range in = split ? bwd_interior(pw, g.ow) : Range{0, pw.count};
          const int jl = in.lo, jr = in.hi;
          // One block of dx, stride 1, 3 or 5 kernel columns: the sliding tiles.
          const bool slide = !dw && nv == 1 && sw == 1 && pw.ntap == d.kw && d.kw <= kMaxKwt &&
                             k.slide[1][d.kw][1] != nullptr;
          int urmax = max_ur(k, 1, nv, dw);
          if (slide)
            while (urmax > 1 && !k.slide[1][d.kw][urmax]) --urmax;
          const Chunks c = chunks(std::max(1, jr - jl), urmax);
          for (int i = i_lo; i < i_hi && jr > jl; ++i) {
            const Range t = taps(i);
            a.nt = std::max(0, t.hi - t.lo);
            a.nu = pw.ntap;
            a.w = packed + b0 * w_ocb + (ph.k0 + int64_t(sh) * t.lo) * d.kw * kl + pw.k0 * kl;
            const float* in_row = src + (a.nt > 0 ? int64_t(i + ph.c0 - t.lo) * row : 0);
            const int64_t out_row = out_img + int64_t(rh + sh * i) * d.w * L;
            for (int ci = 0, j0 = jl; ci < c.n; ++ci) {
              const int ur = ci + 1 == c.n ? c.last : c.ur;
              a.in = in_row + int64_t(j0 + pw.c0 + m.left) * L;
              a.out = dx + out_row + int64_t(rw + sw * j0) * L;
              if (dw)
                k.dw_tile[0][ur](a);
              else if (slide)
                k.slide[1][d.kw][ur](a);
              else
                k.tile[0][nv][ur][1](a);
              j0 += ur;
            }
          }
          if (!split) continue;
          // Edge pixels: their own kernel columns, phase rows with the same kernel rows together.
          const int rmax = max_rows(k, 0, nv, 1);
          for (int j = 0; j < pw.count; ++j) {
            if (j == jl) j = jr;
            if (j >= pw.count) break;
            const int u_lo = std::max(0, j + pw.c0 - g.ow + 1);
            const int u_hi = std::min(pw.ntap, j + pw.c0 + 1);
            a.nu = std::max(0, u_hi - u_lo);
            for (int i = i_lo; i < i_hi;) {
              const Range t = taps(i);
              int rows = 1;
              while (rows < rmax && i + rows < i_hi && taps(i + rows).lo == t.lo &&
                     taps(i + rows).hi == t.hi)
                ++rows;
              a.nt = std::max(0, t.hi - t.lo);
              a.w = packed + b0 * w_ocb + (ph.k0 + int64_t(sh) * t.lo) * d.kw * kl +
                    (pw.k0 + int64_t(sw) * u_lo) * kl;
              a.in = src + (a.nt > 0 ? int64_t(i + ph.c0 - t.lo) * row : 0) +
                     int64_t(j + pw.c0 - u_lo) * L;
              a.out = dx + out_img + int64_t(rh + sh * i) * d.w * L + int64_t(rw + sw * j) * L;
              k.tile[0][nv][1][rows](a);
              i += rows;
            }
          }
        }
      }
    }
  });
}

// Backward data on small maps (phase rows of <= kMaxRowCols pixels): the small-map tiles, dy
// read in place.
void backward_data_small(const ConvDesc& d, const Geo& g, const BlockedKernels& k,
                         const float* dy, const float* packed, float* dx) {
  const int L = g.L, sh = d.stride_h, sw = d.stride_w;
  const int noc = choose_small_noc(k, 0, ceil_div(d.w, sw), g.cbi, std::min(d.n, kMaxRows));
  const int groups = ceil_div(g.cbi, noc);
  const int64_t kl = int64_t(L) * L, w_blk = int64_t(d.kh) * d.kw * kl, w_ocb = g.cbo * w_blk;
  const int threads = op_threads();
  const int rg = small_image_group(d.n, groups, threads);
  const int img_groups = ceil_div(d.n, rg);

  TileArgs base{};
  base.in_r = g.y_img;
  base.w_ocb = w_ocb;
  base.nblk = g.cbo;
  base.last_lanes = d.c_out - (g.cbo - 1) * L;
  base.in_blk = g.y_plane;
  base.w_blk = w_blk;
  base.in_t = -int64_t(g.ow) * L;
  base.w_t = int64_t(sh) * d.kw * kl;
  base.in_u = -L;
  base.w_u = int64_t(sw) * kl;
  base.out_r = g.x_img;
  base.out_pix = int64_t(sw) * L;
  base.out_ocb = g.x_plane;
  parallel_items(img_groups * groups, threads, [&](int item, int) {
    const int n0 = (item / groups) * rg, rows = std::min(rg, d.n - n0);
    const int b0 = (item % groups) * noc, nv = std::min(noc, g.cbi - b0);
    TileArgs a = base;
    for (int ih = 0; ih < d.h; ++ih) {
      const Phase ph = phase(ih % sh, sh, d.pad_t, d.kh, d.h);
      const int i = ih / sh;
      const int t_lo = std::max(0, i + ph.c0 - g.oh + 1), t_hi = std::min(ph.ntap, i + ph.c0 + 1);
      a.nt = std::max(0, t_hi - t_lo);
      const int dy_row = a.nt > 0 ? i + ph.c0 - t_lo : 0;
      for (int rw = 0; rw < std::min(sw, d.w); ++rw) {
        const Phase pw = phase(rw, sw, d.pad_l, d.kw, d.w);
        a.w = packed + b0 * w_ocb + (ph.k0 + int64_t(sh) * t_lo) * d.kw * kl + pw.k0 * kl;
        a.in = dy + n0 * g.y_img + (int64_t(dy_row) * g.ow + pw.c0) * L;
        a.out = dx + (int64_t(n0) * g.cbi + b0) * g.x_plane + (int64_t(ih) * d.w + rw) * L;
        // Phase pixel j reads dy column j + c0 - u.
        auto valid = [&](int u) {
          const int lo = std::clamp(u - pw.c0, 0, pw.count);
          return Range{lo, std::clamp(g.ow + u - pw.c0, lo, pw.count)};
        };
        split_row(k, L, 1, nv, a, pw.count, rows, pw.ntap, valid, false);
      }
    }
  });
}

// ---- backward weights ----

// Cost of the wgrad tile nci x nv per pixel (the forward model with roles swapped).
int choose_wgrad_noc(const BlockedKernels& k, int lanes, int nb) {
  int best = 1;
  double best_cost = 0.0;
  for (int noc = 1; noc <= std::min(kMaxNoc, nb); ++noc) {
    int nci = lanes;
    while (nci > 1 && !k.wgrad[0][noc][nci][1]) --nci;
    if (!k.wgrad[0][noc][nci][1]) continue;
    double cost = 0.0;
    for (int g0 = 0; g0 < nb; g0 += noc) {
      const int nv = std::min(noc, nb - g0);
      int m = lanes;
      while (m > 1 && !k.wgrad[0][nv][m][1]) --m;
      const Chunks c = chunks(lanes, m);
      cost += (c.n - 1) * tile_cycles(c.ur, nv) + tile_cycles(c.last, nv);
    }
    if (noc == 1 || cost <= best_cost) {
      best = noc;
      best_cost = cost;
    }
  }
  return best;
}

struct WgradScratch {
  int* flags;       // [c_out]: filter selected
  int* list;        // [c_out]: selected filters (few) or block runs (many)
  float* part;      // per thread [part_floats]
  size_t part_floats;
  float* pad;       // per thread [pad_floats]: an NCHW input image with zero side margins
  size_t pad_floats;
  size_t total;
};
size_t tile_acc_floats(const ConvDesc& d) {
  return size_t(d.kh) * d.kw * kMaxNoc * d.lanes * d.lanes;
}
WgradScratch wgrad_scratch(const ConvDesc& d, int threads, float* base) {
  const Geo g = geo(d);
  WgradScratch s;
  Carve c{base};
  s.flags = reinterpret_cast<int*>(c.take(size_t(d.c_out)));
  s.list = reinterpret_cast<int*>(c.take(size_t(2 * d.c_out + 2)));
  size_t part;
  if (conv_is_depthwise(d)) {
    part = size_t(g.cbo) * d.kh * d.kw * g.L;
  } else {
    const size_t few = size_t(std::min(kFewMax, d.c_out)) * g.cbi * d.kh * d.kw * g.L;
    const size_t all_tiles = size_t(g.cbo + kMaxNoc - 1) * g.cbi * d.kh * d.kw * g.L * g.L;
    const size_t many = std::max(size_t(std::max(1, 4 * threads)) * tile_acc_floats(d),
                                 std::min(size_t(kImagesOuterFloats), all_tiles));
    part = std::max(few, many);
  }
  s.part_floats = round16(part);
  s.part = c.take(s.part_floats * threads);
  const Margins m = fwd_margins(d, g);
  const SquareMargins sm = square_margins(d, g);
  s.pad_floats = d.c_in <= kMaxWgradTapLanes
                     ? round16(size_t(d.c_in) * (sm.top + d.h + sm.bottom) *
                               (m.left + d.w + m.right))
                     : 0;
  s.pad = c.take(s.pad_floats * threads);
  s.total = c.used;
  return s;
}

// Calls f(kw0, kwt, lo, hi) so that every (tap kw, output column in the tap's valid range) is
// covered once with taps of at most kwt_max: columns valid for a whole chunk of taps go in one
// call, the chunk's edge columns tap by tap.
template <class F>
void for_tap_chunks(const ConvDesc& d, const Geo& g, int kwt_max, F&& f) {
  for (int kw0 = 0; kw0 < d.kw; kw0 += kwt_max) {
    const int kwt = std::min(kwt_max, d.kw - kw0);
    int lo = 0, hi = g.ow;
    for (int u = 0; u < kwt; ++u) {
      const Range r = valid_outputs(kw0 + u, d.stride_w, d.pad_l, d.w, g.ow);
      lo = std::max(lo, r.lo);
      hi = std::min(hi, r.hi);
    }
    if (hi <= lo) lo = hi = 0;
    if (hi > lo) f(kw0, kwt, lo, hi);
    for (int u = 0; u < kwt; ++u) {
      const Range r = valid_outputs(kw0 + u, d.stride_w, d.pad_l, d.w, g.ow);
      if (hi > lo) {
        if (r.lo < lo) f(kw0 + u, 1, r.lo, lo);
        if (hi < r.hi) f(kw0 + u, 1, hi, r.hi);
      } else if (r.hi > r.lo) {
        f(kw0 + u, 1, r.lo, r.hi);
      }
    }
  }
}

// db[f] for the selected filters (flags): sums of dy.
void bias_grad(const ConvDesc& d, const Geo& g, const float* dy, const int* flags, float* db) {
  const int L = g.L;
  parallel_items(g.cbo, std::min(op_threads(), g.cbo), [&](int cb, int) {
    bool any = false;
    for (int l = 0; l < L && cb * L + l < d.c_out; ++l) any = any || flags[cb * L + l];
    if (!any) return;
    double sum[kMaxLanes] = {};
    for (int n = 0; n < d.n; ++n) {
      const float* p = dy + n * g.y_img + cb * g.y_plane;
      float part[kMaxLanes] = {};
      for (int64_t q = 0; q < int64_t(g.oh) * g.ow; ++q)
        for (int l = 0; l < L; ++l) part[l] += p[q * L + l];
      for (int l = 0; l < L; ++l) sum[l] += part[l];
    }
    for (int l = 0; l < L && cb * L + l < d.c_out; ++l)
      if (flags[cb * L + l]) db[cb * L + l] = static_cast<float>(sum[l]);
  });
}

void wgrad_depthwise(const ConvDesc& d, const Geo& g, const BlockedKernels& k, const float* x,
                     const float* dy, float* dw, const WgradScratch& s) {
  const int L = g.L, threads = op_threads();
  const size_t part = size_t(g.cbo) * d.kh * d.kw * L;
  // Per-thread partials [cb][kh][kw][L], zeroed by their thread.
#pragma omp parallel num_threads(threads) if (threads > 1)
  std::memset(s.part + omp_get_thread_num() * s.part_floats, 0, sizeof(float) * part);
  parallel_items(d.n * g.cbo, threads, [&](int item, int tid) {
    const int n = item / g.cbo, cb = item % g.cbo;
    if (!std::any_of(s.flags + cb * L, s.flags + std::min(d.c_out, cb * L + L),
                     [](int f) { return f != 0; }))
      return;
    float* acc = s.part + tid * s.part_floats + size_t(cb) * d.kh * d.kw * L;
    for (int kh = 0; kh < d.kh; ++kh) {
      const Range rows = valid_outputs(kh, d.stride_h, d.pad_t, d.h, g.oh);
      if (rows.hi <= rows.lo) continue;
      for_tap_chunks(d, g, kMaxKwt, [&](int kw0, int kwt, int lo, int hi) {
        WgradFewArgs a{};
        a.x = x + n * g.x_img + cb * g.x_plane +
              (int64_t(rows.lo) * d.stride_h - d.pad_t + kh) * d.w * L +
              (int64_t(lo) * d.stride_w - d.pad_l + kw0) * L;
        a.dy[0] = dy + n * g.y_img + cb * g.y_plane + (int64_t(rows.lo) * g.ow + lo) * L;
        a.nimg = 1;
        a.nrows = rows.hi - rows.lo;
        a.x_row = int64_t(d.stride_h) * d.w * L;
        a.dy_row = int64_t(g.ow) * L;
        a.ncols = hi - lo;
        a.x_col = int64_t(d.stride_w) * L;
        a.acc = acc + (int64_t(kh) * d.kw + kw0) * L;
        k.dw_wgrad[kwt](a);
      });
    }
  });
  const int kk = d.kh * d.kw;
  parallel_items(g.cbo, std::min(threads, g.cbo), [&](int cb, int) {
    for (int l = 0; l < L && cb * L + l < d.c_out; ++l) {
      const int f = cb * L + l;
      if (!s.flags[f]) continue;
      for (int t = 0; t < kk; ++t) {
        float v = 0.0f;
        for (int th = 0; th < threads; ++th)
          v += s.part[th * s.part_floats + (size_t(cb) * kk + t) * L + l];
        dw[int64_t(f) * kk + t] = v;
      }
    }
  });
}

// Few filters: s.list[0..nf) the distinct selected filters.
void wgrad_few(const ConvDesc& d, const Geo& g, const BlockedKernels& k, const float* x,
               const float* dy, float* dw, int nf, const WgradScratch& s) {
  const int L = g.L, threads = op_threads();
  const int kk = d.kh * d.kw;
  const int64_t acc_f = int64_t(g.cbi) * kk * L;
  const size_t part = size_t(nf) * acc_f;
#pragma omp parallel num_threads(threads) if (threads > 1)
  std::memset(s.part + omp_get_thread_num() * s.part_floats, 0, sizeof(float) * part);
  // Largest tile that fits: filters per call first, then kernel columns, then input blocks.
  const int nfc = std::min(nf, kMaxNf);
  auto fits = [&](int kwt, int ncbi, int nff) { return k.few[kwt][ncbi][nff] != nullptr; };
  parallel_items(d.n * d.kh, threads, [&](int item, int tid) {
    const int n = item / d.kh, kh = item % d.kh;
    const Range rows = valid_outputs(kh, d.stride_h, d.pad_t, d.h, g.oh);
    if (rows.hi <= rows.lo) return;
    float* part_t = s.part + tid * s.part_floats;
    for (int f0 = 0; f0 < nf; f0 += nfc) {
      const int nff = std::min(nfc, nf - f0);
      int kwt_max = std::min(d.kw, kMaxKwt);
      while (kwt_max > 1 && !fits(kwt_max, 0, nff)) --kwt_max;
      for_tap_chunks(d, g, kwt_max, [&](int kw0, int kwt, int lo, int hi) {
        WgradFewArgs a{};
        a.x_blk = g.x_plane;
        a.nimg = 1;
        a.nrows = rows.hi - rows.lo;
        a.x_row = int64_t(d.stride_h) * d.w * L;
        a.dy_row = int64_t(g.ow) * L;
        a.ncols = hi - lo;
        a.x_col = int64_t(d.stride_w) * L;
        a.acc_f = acc_f;
        a.acc_b = int64_t(kk) * L;
        const int64_t dy_pix = (int64_t(rows.lo) * g.ow + lo) * L;
        for (int f = 0; f < nff; ++f) {
          const int filt = s.list[f0 + f];
          a.dy[f] = dy + n * g.y_img + (filt / L) * g.y_plane + dy_pix + filt % L;
        }
        const float* xr = x + n * g.x_img + (int64_t(rows.lo) * d.stride_h - d.pad_t + kh) * d.w * L +
                          (int64_t(lo) * d.stride_w - d.pad_l + kw0) * L;
        for (int b0 = 0; b0 < g.cbi;) {
          int ncbi = kNcbSizes - 1;
          while (ncbi > 0 && ((1 << ncbi) > g.cbi - b0 || !fits(kwt, ncbi, nff))) --ncbi;
          a.x = xr + b0 * g.x_plane;
          a.acc = part_t + f0 * acc_f + (int64_t(b0) * kk + int64_t(kh) * d.kw + kw0) * L;
          k.few[kwt][ncbi][nff](a);
          b0 += 1 << ncbi;
        }
      });
    }
  });
  // dw[f][ci][kh][kw] = sum over threads of part[f][cb][kh][kw][ci % L].
  parallel_items(nf, std::min(threads, nf), [&](int j, int) {
    float* out = dw + int64_t(s.list[j]) * d.c_in * kk;
    for (int ci = 0; ci < d.c_in; ++ci)
      for (int t = 0; t < kk; ++t) {
        const size_t o = size_t(j) * acc_f + (size_t(ci / L) * kk + t) * L + ci % L;
        float v = 0.0f;
        for (int th = 0; th < threads; ++th) v += s.part[th * s.part_floats + o];
        out[int64_t(ci) * kk + t] = v;
      }
  });
}

// Many filters: output-block runs in s.list as (first block, count) pairs, s.list[0] pairs.
// plain: x is NCHW (c_in <= kMaxWgradTapLanes).
void wgrad_many(const ConvDesc& d, const Geo& g, const BlockedKernels& k, const float* x,
                const float* dy, float* dw, const WgradScratch& s, bool plain) {
  const int L = g.L, threads = op_threads();
  const int kk = d.kh * d.kw;
  const int nruns = s.list[0];
  int nb = 0;
  for (int r = 0; r < nruns; ++r) nb = std::max(nb, s.list[2 + 2 * r]);
  // An NCHW stem input with a square kernel of <= 5 taps a side sums its whole kernel in one
  // pass over dy (wgrad_square), from an image copy with zero margins on all sides.
  const bool square = plain && d.kh == d.kw && d.kh >= 2 && d.kh <= kMaxKwt &&
                      k.wgrad_square[1][d.c_in][d.kh] != nullptr;
  const int noc = square ? (nb >= 2 && k.wgrad_square[2][d.c_in][d.kh] ? 2 : 1)
                         : choose_wgrad_noc(k, L, nb);
  // Tiles: (group of <= noc blocks of a run, input block).
  int ngroups = 0;
  for (int r = 0; r < nruns; ++r) ngroups += ceil_div(s.list[2 + 2 * r], noc);
  const int tiles = ngroups * g.cbi;
  const int64_t tile_acc = int64_t(kk) * noc * L * L;
  // Images per kernel call: enough pixels to amortise the accumulators, few enough that the
  // call's dy and x stay in L1/L2 across the taps.
  const int64_t img_bytes = int64_t(g.oh) * g.ow * (noc + 1) * L * 4;
  const int ib = static_cast<int>(std::clamp<int64_t>(32768 / std::max<int64_t>(img_bytes, 1), 1, d.n));

  auto group_of = [&](int gi, int& b0, int& nv) {
    for (int r = 0; r < nruns; ++r) {
      const int first = s.list[1 + 2 * r], cnt = s.list[2 + 2 * r];
      const int gr = ceil_div(cnt, noc);
      if (gi < gr) {
        b0 = first + gi * noc;
        nv = std::min(noc, cnt - gi * noc);
        return;
      }
      gi -= gr;
    }
  };

  // Writes tile (gi, cib)'s sums (acc [kh][kw][v][ci][co] of each source) into dw.
  auto write_tile = [&](int gi, int cib, const float* const* src, int nsrc) {
    int b0 = 0, nv = 0;
    group_of(gi, b0, nv);
    for (int v = 0; v < nv; ++v)
      for (int lo = 0; lo < L; ++lo) {
        const int f = (b0 + v) * L + lo;
        if (f >= d.c_out || !s.flags[f]) continue;
        float* out = dw + int64_t(f) * d.c_in * kk;
        for (int li = 0; li < L && cib * L + li < d.c_in; ++li)
          for (int t = 0; t < kk; ++t) {
            const int64_t o = ((int64_t(t) * noc + v) * L + li) * L + lo;
            float sum = 0.0f;
            for (int j = 0; j < nsrc; ++j) sum += src[j][o];
            out[int64_t(cib * L + li) * kk + t] = sum;
          }
      }
  };

  // Adds tile `tile`'s sums over images [n_lo, n_hi) to acc. Blocks of a few input lanes
  // (stems) take several kernel columns per call, so that each dy vector loaded serves more
  // FMAs: the columns that read inside the image for a chunk's whole range in one call, the
  // chunk's edge columns one by one (for_tap_chunks).
  const int px = plain ? 1 : L;  // floats per x pixel (of one block)
  const int64_t x_img = plain ? int64_t(d.c_in) * d.h * d.w : g.x_img;
  // An NCHW input is read from a copy with zero side margins, an image at a time, so that every
  // kernel column covers every output column in one call (its edge columns would otherwise
  // cost a call per row each: half the time of a 28x28 stem).
  const Margins pm = fwd_margins(d, g);
  const bool plain_copy = plain && pm.copy();
  const int wpp = pm.left + d.w + pm.right;
  auto run_tile = [&](int tile, int n_lo, int n_hi, float* acc, int tid) {
    const int gi = tile / g.cbi, cib = tile % g.cbi;
    int b0 = 0, nv = 0;
    group_of(gi, b0, nv);
    const int nl = std::min(L, d.c_in - cib * L);
    const bool taps = nl <= kMaxWgradTapLanes;
    int kwt_max = 1;
    if (taps) {
      kwt_max = std::min(d.kw, kMaxKwt);
      while (kwt_max > 1 && !k.wgrad[plain][nv][nl][kwt_max]) --kwt_max;
    }
    int nci_max = L;
    while (nci_max > 1 && !k.wgrad[0][nv][nci_max][1]) --nci_max;
    const Chunks cc = chunks(nl, taps ? nl : nci_max);
    // Sliding tiles (stride 1, one output block, >= 4 lanes per call): kernel columns per call.
    int slide_kwt = 0;
    Chunks sc{};
    if (!plain && !taps && nv == 1 && d.stride_w == 1 && d.kw > 1) {
      for (int kwt = std::min(d.kw, kMaxKwt); kwt > 1 && slide_kwt == 0; --kwt) {
        int m = L;
        while (m > 1 && !k.wgrad_slide[m][kwt]) --m;
        // Worth it where the slid columns are most of a row (not 5x5 on 10 columns, whose
        // edge columns would run 40% of the work in narrow single-tap calls).
        const int slid = std::min(d.w, g.ow - d.pad_l) - std::max(0, kwt - 1 - d.pad_l);
        if (m >= 4 && slid * 4 >= 3 * g.ow) {
          slide_kwt = kwt;
          sc = chunks(nl, m);
        }
      }
    }
    WgradArgs a{};
    a.x_lane = int64_t(d.h) * (plain_copy ? wpp : d.w);
    a.dy_ocb = g.y_plane;
    a.x_img = x_img;
    a.dy_img = g.y_img;
    a.x_row = int64_t(d.stride_h) * (plain_copy ? wpp : d.w) * px;
    a.dy_row = int64_t(g.ow) * L;
    a.x_col = int64_t(d.stride_w) * px;
    a.acc_ocb = int64_t(L) * L;
    a.acc_tap = int64_t(noc) * L * L;
    if (square) {
      const SquareMargins sm = square_margins(d, g);
      const int hp = sm.top + d.h + sm.bottom;
      a.x_row = int64_t(d.stride_h) * wpp;
      a.x_trow = wpp;
      a.x_lane = int64_t(hp) * wpp;
      a.acc_trow = int64_t(d.kw) * noc * L * L;
      a.acc = acc;
      a.nimg = 1;
      a.nrows = g.oh;
      a.ncols = g.ow;
      float* buf = s.pad + tid * s.pad_floats;
      for (int n = n_lo; n < n_hi; ++n) {
        // [c_in][hp][wpp]: zero rows above and below, zero margins left and right.
        const float* xn = x + n * x_img;
        std::memset(buf, 0, sizeof(float) * size_t(d.c_in) * hp * wpp);
        for (int c = 0; c < d.c_in; ++c)
          for (int h = 0; h < d.h; ++h)
            std::memcpy(buf + (int64_t(c) * hp + sm.top + h) * wpp + pm.left,
                        xn + (int64_t(c) * d.h + h) * d.w, sizeof(float) * d.w);
        a.x = buf;
        a.dy = dy + n * g.y_img + b0 * g.y_plane;
        k.wgrad_square[nv][d.c_in][d.kh](a);
      }
      return;
    }
    const int step_n = plain_copy ? 1 : ib;
    for (int n0 = n_lo; n0 < n_hi; n0 += step_n) {
      a.nimg = std::min(step_n, n_hi - n0);
      const float* xn = x + n0 * x_img;
      if (plain_copy) {
        float* buf = s.pad + tid * s.pad_floats;
        copy_padded(xn, d.c_in, d.h, d.w, pm.left, pm.right, 1, buf);
        xn = buf + pm.left;  // column 0 of the image
      }
      const int xw = plain_copy ? wpp : d.w;  // floats between x rows of a channel
      for (int kh = 0; kh < d.kh; ++kh) {
        const Range rows = valid_outputs(kh, d.stride_h, d.pad_t, d.h, g.oh);
        if (rows.hi <= rows.lo) continue;
        a.nrows = rows.hi - rows.lo;
        // Kernel columns [kw0, kw0 + kwt) over output columns [lo, hi).
        auto run = [&](int kw0, int kwt, int lo, int hi) {
          a.ncols = hi - lo;
          const float* xb = xn + (plain ? 0 : cib * g.x_plane) +
                            (int64_t(rows.lo) * d.stride_h - d.pad_t + kh) * xw * px +
                            (int64_t(lo) * d.stride_w - d.pad_l + kw0) * px;
          a.dy = dy + n0 * g.y_img + b0 * g.y_plane + (int64_t(rows.lo) * g.ow + lo) * L;
          float* at = acc + int64_t(kh * d.kw + kw0) * noc * L * L;
          for (int ci = 0, r0 = 0; ci < cc.n; ++ci) {
            const int nci = ci + 1 == cc.n ? cc.last : cc.ur;
            a.x = xb + r0;
            a.acc = at + int64_t(r0) * L;
            k.wgrad[plain][nv][nci][kwt](a);
            r0 += nci;
          }
        };
        if (plain_copy) {
          for (int kw0 = 0; kw0 < d.kw; kw0 += kwt_max) run(kw0, std::min(kwt_max, d.kw - kw0), 0, g.ow);
        } else if (taps) {
          for_tap_chunks(d, g, kwt_max, run);
        } else if (slide_kwt > 0) {
          // Sliding tiles over the input columns every tap of a chunk pairs with a dy column;
          // each tap's remaining output columns (1-2 at each edge) with the plain tile.
          for (int kw0 = 0; kw0 < d.kw; kw0 += slide_kwt) {
            const int kwt = std::min(slide_kwt, d.kw - kw0);
            const int ca = std::max(0, kw0 + kwt - 1 - d.pad_l);
            const int cb = std::min(d.w, g.ow - d.pad_l + kw0);
            if (cb > ca) {
              WgradArgs e = a;
              e.ncols = cb - ca;
              e.x_col = L;
              e.acc_tap = int64_t(noc) * L * L;
              const float* xb = xn + cib * g.x_plane +
                                (int64_t(rows.lo) * d.stride_h - d.pad_t + kh) * d.w * L +
                                int64_t(ca) * L;
              e.dy = dy + n0 * g.y_img + b0 * g.y_plane +
                     (int64_t(rows.lo) * g.ow + ca + d.pad_l - kw0) * L;
              float* at = acc + int64_t(kh * d.kw + kw0) * noc * L * L;
              for (int ci = 0, r0 = 0; ci < sc.n; ++ci) {
                const int nci = ci + 1 == sc.n ? sc.last : sc.ur;
                e.x = xb + r0;
                e.acc = at + int64_t(r0) * L;
                k.wgrad_slide[nci][kwt](e);
                r0 += nci;
              }
            }
            for (int u = 0; u < kwt; ++u) {
              const int kw = kw0 + u;
              const Range cols = valid_outputs(kw, 1, d.pad_l, d.w, g.ow);
              const int s_lo = cb > ca ? ca + d.pad_l - kw : cols.hi;  // slid output columns
              const int s_hi = cb > ca ? cb + d.pad_l - kw : cols.hi;
              if (std::min(cols.hi, s_lo) > cols.lo) run(kw, 1, cols.lo, std::min(cols.hi, s_lo));
              if (cols.hi > std::max(cols.lo, s_hi)) run(kw, 1, std::max(cols.lo, s_hi), cols.hi);
            }
          }
        } else {
          for (int kw = 0; kw < d.kw; ++kw) {
            const Range cols = valid_outputs(kw, d.stride_w, d.pad_l, d.w, g.ow);
            if (cols.hi > cols.lo) run(kw, 1, cols.lo, cols.hi);
          }
        }
      }
    }
  };

  auto zero_partials = [&](size_t floats) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    std::memset(s.part + omp_get_thread_num() * s.part_floats, 0, sizeof(float) * floats);
  };
  auto reduce_partials = [&] {
    parallel_items(tiles, std::min(threads, tiles), [&](int tile, int) {
      const float* src[256];
      const int nsrc = std::min(threads, 256);
      for (int t = 0; t < nsrc; ++t) src[t] = s.part + t * s.part_floats + tile * tile_acc;
      write_tile(tile / g.cbi, tile % g.cbi, src, nsrc);
    });
  };

  if (tiles * tile_acc <= std::min<int64_t>(kImagesOuterFloats, s.part_floats)) {
    // Images outer: each item is a few images through every tile, so its x and dy stay in L2
    // while the tiles pass over them; every thread sums into its own copy of all tiles.
    zero_partials(size_t(tiles) * tile_acc);
    const int chunk = std::clamp(d.n / (4 * threads), 1, ib);
    parallel_items(ceil_div(d.n, chunk), threads, [&](int item, int tid) {
      const int n_lo = item * chunk, n_hi = std::min(d.n, n_lo + chunk);
      float* part = s.part + tid * s.part_floats;
      for (int tile = 0; tile < tiles; ++tile)
        run_tile(tile, n_lo, n_hi, part + tile * tile_acc, tid);
    });
    reduce_partials();
    return;
  }
  // Tiles outer (large weight gradients): each item is a tile over all images (or, where the
  // tiles are too few for the threads, over a chunk of them, with per-thread partials).
  const int img_chunks = threads <= 1 || tiles >= 4 * threads
                             ? 1
                             : std::min(d.n, ceil_div(4 * threads, tiles));
  const int img_len = ceil_div(d.n, img_chunks);
  const bool partials = img_chunks > 1;
  if (partials) zero_partials(size_t(tiles) * tile_acc);
  parallel_items(tiles * img_chunks, threads, [&](int item, int tid) {
    const int tile = item / img_chunks, chunk = item % img_chunks;
    float* acc = s.part + tid * s.part_floats + (partials ? tile * tile_acc : 0);
    if (!partials) std::memset(acc, 0, sizeof(float) * tile_acc);
    run_tile(tile, chunk * img_len, std::min(d.n, (chunk + 1) * img_len), acc, tid);
    if (!partials) {
      const float* src[1] = {acc};
      write_tile(tile / g.cbi, tile % g.cbi, src, 1);
    }
  });
  if (partials) reduce_partials();
}

}  // namespace

int lanes() { return cpu_isa() == CpuIsa::Avx512 ? 16 : 8; }

bool conv_supported(const ConvDesc& d, Pass) {
  if (d.lanes == 16 && !cpu_avx512_usable()) return false;
  if (d.lanes == 8 && !blocked_kernels_avx2()) return false;
  if (d.lanes != 8 && d.lanes != 16) return false;
  return d.groups == 1 || conv_is_depthwise(d);
}

size_t packed_weights_floats(const ConvDesc& d, Pass pass) {
  if (pass == Pass::BackwardWeights) return 0;
  const Geo g = geo(d);
  if (conv_is_depthwise(d)) return size_t(g.cbo) * d.kh * d.kw * g.L;
  return size_t(g.cbo) * g.cbi * d.kh * d.kw * g.L * g.L;
}

void pack_weights(const ConvDesc& d, Pass pass, const float* oihw, const float* oc_scale,
                  float* packed, const int32_t* filters, int n_filters) {
  check_desc(d, "pack_weights");
  if (pass == Pass::BackwardWeights) return;
  const Geo g = geo(d);
  const int L = g.L, kk = d.kh * d.kw;
  const bool all = filters == nullptr;
  const int count = all ? d.c_out : n_filters;
  for (int j = 0; j < count; ++j)
    if (!all && (filters[j] < 0 || filters[j] >= d.c_out))
      throw std::invalid_argument("blocked::pack_weights: filter " + std::to_string(filters[j]) +
                                  " outside [0, " + std::to_string(d.c_out) + ")");
  if (all) std::memset(packed, 0, sizeof(float) * packed_weights_floats(d, pass));
  if (conv_is_depthwise(d)) {
    // [cb][kh][kw][L], the same for both passes (backward data reads it with flipped strides).
    for (int j = 0; j < count; ++j) {
      const int f = all ? j : filters[j];
      const float sc = oc_scale ? oc_scale[f] : 1.0f;
      for (int t = 0; t < kk; ++t)
        packed[(int64_t(f / L) * kk + t) * L + f % L] = oihw[int64_t(f) * kk + t] * sc;
    }
    return;
  }
  for (int j = 0; j < count; ++j) {
    const int f = all ? j : filters[j];
    const float sc = oc_scale ? oc_scale[f] : 1.0f;
    const int ob = f / L, ol = f % L;
    for (int ci = 0; ci < d.c_in; ++ci) {
      const int ib = ci / L, il = ci % L;
      for (int t = 0; t < kk; ++t) {
        const float v = oihw[(int64_t(f) * d.c_in + ci) * kk + t] * sc;
        if (pass == Pass::Forward)  // [CBo][CBi][KH][KW][L ci][L co]
          packed[(((int64_t(ob) * g.cbi + ib) * kk + t) * L + il) * L + ol] = v;
        else  // [CBi][CBo][KH][KW][L co][L ci]
          packed[(((int64_t(ib) * g.cbo + ob) * kk + t) * L + ol) * L + il] = v;
      }
    }
  }
}

size_t scratch_floats(const ConvDesc& d, Pass pass, int threads) {
  threads = std::max(1, threads);
  switch (pass) {
    case Pass::Forward: return fwd_scratch(d, threads, nullptr).total;
    case Pass::BackwardData: return bwd_scratch(d, threads, nullptr).total;
    default: return wgrad_scratch(d, threads, nullptr).total;
  }
}

void conv_forward(const ConvDesc& d, const float* x, const float* packed, const float* bias,
                  const float* residual, Activation act, float* y, float* scratch) {
  check_desc(d, "conv_forward");
  if (act != Activation::None && act != Activation::ReLU && act != Activation::ReLU6)
    throw std::invalid_argument("blocked::conv_forward: activation must be None, ReLU or ReLU6");
  const BlockedKernels& k = kernels_for(d);
  const Geo g = geo(d);
  const FwdScratch s = fwd_scratch(d, op_threads(), scratch);
  if (bias) {
    std::memset(s.bias, 0, sizeof(float) * g.cbo * g.L);
    std::memcpy(s.bias, bias, sizeof(float) * d.c_out);
  }
  const int a = act == Activation::ReLU ? 1 : act == Activation::ReLU6 ? 2 : 0;
  if (conv_is_depthwise(d))
    forward_depthwise(d, g, k, x, packed, bias, residual, a, y, s);
  else if (small_rows(g.ow))
    forward_small(d, g, k, x, packed, bias, residual, a, y, s);
  else
    forward_dense(d, g, k, x, packed, bias, residual, a, y, s, false);
}

void conv_backward_data(const ConvDesc& d, const float* dy, const float* packed_bwd, float* dx,
                        float* scratch) {
  check_desc(d, "conv_backward_data");
  const BlockedKernels& k = kernels_for(d);
  const Geo g = geo(d);
  if (!conv_is_depthwise(d) && small_rows(ceil_div(d.w, d.stride_w)))
    backward_data_small(d, g, k, dy, packed_bwd, dx);
  else
    backward_data_impl(d, g, k, dy, packed_bwd, dx, bwd_scratch(d, op_threads(), scratch));
}

namespace {

void backward_weights_impl(const ConvDesc& d, const float* x, const float* dy, float* dw,
                           float* db, const int32_t* filters, int n_filters, float* scratch,
                           bool plain) {
  const BlockedKernels& k = kernels_for(d);
  const Geo g = geo(d);
  const WgradScratch s = wgrad_scratch(d, op_threads(), scratch);
  // The distinct selected filters, in order of first appearance.
  std::memset(s.flags, 0, sizeof(int) * d.c_out);
  int nf = 0;
  const int count = filters ? n_filters : d.c_out;
  for (int j = 0; j < count; ++j) {
    const int f = filters ? filters[j] : j;
    if (f < 0 || f >= d.c_out)
      throw std::invalid_argument("blocked::conv_backward_weights: filter " + std::to_string(f) +
                                  " outside [0, " + std::to_string(d.c_out) + ")");
    if (!s.flags[f]) {
      s.flags[f] = 1;
      if (nf < kFewMax) s.list[nf] = f;
      ++nf;
    }
  }
  if (nf == 0) return;
  if (db) bias_grad(d, g, dy, s.flags, db);
  if (conv_is_depthwise(d)) {
    wgrad_depthwise(d, g, k, x, dy, dw, s);
    return;
  }
  int blocks = 0;
  for (int b = 0; b < g.cbo; ++b)
    for (int l = 0; l < g.L && b * g.L + l < d.c_out; ++l)
      if (s.flags[b * g.L + l]) {
        ++blocks;
        break;
      }
  if (!plain && nf <= kFewMax && 2 * nf <= g.L * blocks) {
    wgrad_few(d, g, k, x, dy, dw, nf, s);
    return;
  }
  // Runs of consecutive selected blocks: list = [runs, (first, count)...].
  int runs = 0;
  for (int b = 0; b < g.cbo;) {
    auto selected = [&](int blk) {
      for (int l = 0; l < g.L && blk * g.L + l < d.c_out; ++l)
        if (s.flags[blk * g.L + l]) return true;
      return false;
    };
    if (!selected(b)) {
      ++b;
      continue;
    }
    int e = b;
    while (e < g.cbo && selected(e)) ++e;
    s.list[1 + 2 * runs] = b;
    s.list[2 + 2 * runs] = e - b;
    ++runs;
    b = e;
  }
  s.list[0] = runs;
  wgrad_many(d, g, k, x, dy, dw, s, plain);
}

}  // namespace

void conv_backward_weights(const ConvDesc& d, const float* x, const float* dy, float* dw,
                           float* db, const int32_t* filters, int n_filters, float* scratch) {
  check_desc(d, "conv_backward_weights");
  backward_weights_impl(d, x, dy, dw, db, filters, n_filters, scratch, false);
}

bool nchw_input_supported(const ConvDesc& d) {
  return d.groups == 1 && d.c_in <= kMaxWgradTapLanes && conv_supported(d, Pass::Forward);
}

namespace {
void check_nchw_input(const ConvDesc& d, const char* op) {
  check_desc(d, op);
  if (!nchw_input_supported(d))
    throw std::invalid_argument(std::string("blocked::") + op + ": an NCHW input needs groups 1 and c_in <= " +
                                std::to_string(kMaxWgradTapLanes) + " (" + describe(d) + ")");
}
}  // namespace

void conv_forward_nchw_input(const ConvDesc& d, const float* x, const float* packed,
                             const float* bias, const float* residual, Activation act, float* y,
                             float* scratch) {
  check_nchw_input(d, "conv_forward_nchw_input");
  if (act != Activation::None && act != Activation::ReLU && act != Activation::ReLU6)
    throw std::invalid_argument(
        "blocked::conv_forward_nchw_input: activation must be None, ReLU or ReLU6");
  const BlockedKernels& k = kernels_for(d);
  const Geo g = geo(d);
  const FwdScratch s = fwd_scratch(d, op_threads(), scratch);
  if (bias) {
    std::memset(s.bias, 0, sizeof(float) * g.cbo * g.L);
    std::memcpy(s.bias, bias, sizeof(float) * d.c_out);
  }
  const int a = act == Activation::ReLU ? 1 : act == Activation::ReLU6 ? 2 : 0;
  forward_dense(d, g, k, x, packed, bias, residual, a, y, s, true);
}

void conv_backward_weights_nchw_input(const ConvDesc& d, const float* x, const float* dy,
                                      float* dw, float* db, const int32_t* filters,
                                      int n_filters, float* scratch) {
  check_nchw_input(d, "conv_backward_weights_nchw_input");
  backward_weights_impl(d, x, dy, dw, db, filters, n_filters, scratch, true);
}

void to_blocked(int n, int c, int h, int w, int lanes, const float* nchw, float* blocked) {
  const int cb = ceil_div(c, lanes);
  const int64_t hw = int64_t(h) * w;
#pragma omp parallel for schedule(static) if (int64_t(n) * c * hw >= (1 << 16))
  for (int i = 0; i < n * cb; ++i) {
    const int img = i / cb, b = i % cb;
    float* out = blocked + int64_t(i) * hw * lanes;
    for (int l = 0; l < lanes; ++l) {
      const int ch = b * lanes + l;
      if (ch >= c) {
        for (int64_t p = 0; p < hw; ++p) out[p * lanes + l] = 0.0f;
        continue;
      }
      const float* in = nchw + (int64_t(img) * c + ch) * hw;
      for (int64_t p = 0; p < hw; ++p) out[p * lanes + l] = in[p];
    }
  }
}

void from_blocked(int n, int c, int h, int w, int lanes, const float* blocked, float* nchw) {
  const int cb = ceil_div(c, lanes);
  const int64_t hw = int64_t(h) * w;
#pragma omp parallel for schedule(static) if (int64_t(n) * c * hw >= (1 << 16))
  for (int i = 0; i < n * cb; ++i) {
    const int img = i / cb, b = i % cb;
    const float* in = blocked + int64_t(i) * hw * lanes;
    for (int l = 0; l < lanes && b * lanes + l < c; ++l) {
      float* out = nchw + (int64_t(img) * c + b * lanes + l) * hw;
      for (int64_t p = 0; p < hw; ++p) out[p] = in[p * lanes + l];
    }
  }
}

}  // namespace nns::ops::cpu::blocked
