// Direct convolution on the CPU (AVX2 + FMA, or AVX-512 where the CPU has it: cpu_isa.h): an
// implicit GEMM that reads the input in place.
//
// For each tile of 6 consecutive output pixels (flat over OH*OW, so a tile may span output
// rows) and 2L output channels (L = 8 floats per AVX2 vector, 16 per AVX-512 vector; or 12
// pixels and L channels), the micro-kernel (direct_micro.h) keeps the 6 x 2L accumulators in
// registers and walks k = (ci, kh, kw): two vector loads of the packed weights w[k][2L co], six
// broadcasts of input values x[ci, ih, iw] (one per pixel, each pixel with its own pointer into
// a zero-padded copy of the image, so no bounds checks), twelve FMAs. There is no im2col buffer
// and no GEMM packing of the input; the only extra passes are the padded copy of the input
// (1/(KH*KW) of an im2col) and a transpose of the [pixel][channel] accumulators into NCHW,
// fused with the epilogue.
//
// Pixels are processed in blocks of at most kMaxBlock (small maps: several images per block);
// each channel tile's weight panel is streamed once per block (it stays in L1 for K up to ~400).
// Threads take whole images when the batch has at least one image per thread, otherwise pixel
// blocks of one image.
// Work is handed out dynamically (an image, or a block, at a time): on a shared machine a
// descheduled thread then delays the op by one image, not by its whole static share.
//
// Backward data of a stride-1 convolution is the same kernel applied to dy with the weights
// transposed (per group) and flipped, padding k - 1 - pad: see conv2d_backward_data. Backward
// filter is the same micro-kernel with taps in place of pixels and pixels in place of taps,
// reading dy transposed to [pixel][filter] (only the selected filters).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/cpu/conv_internal.h"
#include "kernels/cpu/cpu_isa.h"
#include "kernels/cpu/direct_micro.h"
#include "kernels/cpu/epilogue.h"
#include "kernels/cpu/scratch.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define NNS_CONV_DIRECT 1
#endif

namespace nns::ops::cpu {

namespace {
ConvAlgo g_conv_algo = ConvAlgo::Auto;
}  // namespace

void set_conv_algo(ConvAlgo algo) { g_conv_algo = algo; }
ConvAlgo conv_algo() { return g_conv_algo; }

#if defined(NNS_CONV_DIRECT)

bool conv_direct_available() { return true; }

namespace {

constexpr int kNarrowPixels = kDirectMaxPixels;  // most pixels of any micro-kernel call
constexpr int kMaxBlock = 256;                   // most pixels per block
constexpr int kMaxWidth = 2 * kDirectMaxLanes;   // widest channel tile

// The micro-kernels of the instruction set chosen now (cpu_isa.h).
const DirectKernels& active_kernels() {
  const DirectKernels* k =
      cpu_isa() == CpuIsa::Avx512 ? direct_kernels_avx512() : direct_kernels_avx2();
  return *k;
}

// One output-channel tile of a group: channels [co0, co0 + width) of the group, width 2L (wide)
// or L (narrow) for L floats per vector, in the packed panel (rows past `valid` are zero weights).
struct ChannelTile {
  int co0, valid, width;
  int64_t panel;  // offset of the panel [K][width] in the packed weights
};

// dst[r][i] = src[i][r] for an 8 x 8 block (src rows of stride lds, dst rows of stride ldd).
inline void transpose8x8(const float* src, int lds, float* dst, int ldd) {
  __m256 r0 = _mm256_loadu_ps(src + 0 * lds), r1 = _mm256_loadu_ps(src + 1 * lds);
  __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
  __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
  __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst + 0 * ldd, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(dst + 1 * ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// Everything one call needs, shared read-only by the threads.
struct DirectPlan {
  Conv2dShape s;
  int oh_n, ow_n;
  int64_t ohw;
  int hp, wp;           // padded input plane
  bool padded;          // false: the kernel reads x itself (no padding)
  int cin_g, cout_g, k;  // per group
  const int* koff;      // [k]: offset of tap (ci, kh, kw) in the padded image of one group
  const float* w;       // packed panels, per group
  int64_t group_w;      // floats of packed weights per group
  const std::vector<ChannelTile>* tiles;
  const DirectKernels* kern;
  Epilogue epi;
  bool identity;
};

// The pixels of `nimg` consecutive images, flattened (image, oh, ow), are cut into blocks of
// `block` pixels; direct_blocks computes blocks [b0, b1). xin: the (padded) first image, images
// img_stride floats apart; y: the first output image.
void direct_blocks(const DirectPlan& pl, const float* xin, int64_t img_stride, int nimg, float* y,
                   int block, int b0, int b1) {
  const Conv2dShape& s = pl.s;
  constexpr int ld = kMaxBlock + kNarrowPixels;  // room for the padded last tile
  // cbuf [pixel][channel]; tbuf [kMaxWidth][ld].
  float* cbuf = thread_scratch(Scratch::GemmOut, size_t(ld) * kMaxWidth * 2);
  float* tbuf = cbuf + size_t(ld) * kMaxWidth;
  const DirectKernels& kern = *pl.kern;
  const int64_t plane = int64_t(pl.hp) * pl.wp;
  const int64_t total = pl.ohw * nimg;
  const int64_t y_img = int64_t(s.c_out) * pl.ohw;
  for (int blk = b0; blk < b1; ++blk) {
    const int64_t q_begin = int64_t(blk) * block;
    const int pn = static_cast<int>(std::min<int64_t>(block, total - q_begin));
    // Pixel pointers of the block (relative to the group's first channel): tails repeat the
    // last pixel, whose results are dropped.
    const float* pix[ld];
    const int padded_pn = (pn + kNarrowPixels - 1) / kNarrowPixels * kNarrowPixels;
    for (int q = 0; q < padded_pn; ++q) {
      const int64_t qq = q_begin + std::min(q, pn - 1);
      const int64_t img = qq / pl.ohw, p = qq % pl.ohw;
      const int64_t oh = p / pl.ow_n, ow = p % pl.ow_n;
      pix[q] = xin + img * img_stride + oh * s.stride_h * pl.wp + ow * s.stride_w;
    }
    for (int g = 0; g < s.groups; ++g) {
      const float* wg = pl.w + g * pl.group_w;
      const int64_t xoff = int64_t(g) * pl.cin_g * plane;
      for (const ChannelTile& t : *pl.tiles) {
        const float* panel = wg + t.panel;
        // Pixels per call: 6 (AVX2) or 12 (AVX-512) for wide tiles, 12 for narrow ones.
        const bool wide = t.width == 2 * kern.lanes;
        const int np = wide ? kern.wide_pixels : kern.narrow_pixels;
        for (int q0 = 0; q0 < pn; q0 += np) {
          const float* px[kNarrowPixels];
          for (int j = 0; j < np; ++j) px[j] = pix[q0 + j] + xoff;
          float* c = cbuf + int64_t(q0) * t.width;
          (wide ? kern.wide : kern.narrow)(pl.k, pl.koff, panel, px, c);
        }
        // cbuf [pixel][channel] -> y [channel][pixel]: directly when the block lies in one
        // image, every row of the tile is a real channel and there is no epilogue; else
        // through tbuf and the epilogue, image by image.
        const int co_first = g * pl.cout_g + t.co0;
        if (nimg == 1 && pl.identity && t.valid == t.width) {
          float* yt = y + int64_t(co_first) * pl.ohw + q_begin;
          int p = 0;
          for (; p + 8 <= pn; p += 8)
            for (int v = 0; v < t.width; v += 8)
              transpose8x8(cbuf + int64_t(p) * t.width + v, t.width, yt + v * pl.ohw + p,
                           static_cast<int>(pl.ohw));
          for (; p < pn; ++p)
            for (int r = 0; r < t.width; ++r) yt[r * pl.ohw + p] = cbuf[int64_t(p) * t.width + r];
          continue;
        }
        int p = 0;
        for (; p + 8 <= pn; p += 8)
          for (int v = 0; v < t.width; v += 8)
            transpose8x8(cbuf + int64_t(p) * t.width + v, t.width, tbuf + int64_t(v) * ld + p, ld);
        for (; p < pn; ++p)
          for (int r = 0; r < t.width; ++r) tbuf[int64_t(r) * ld + p] = cbuf[int64_t(p) * t.width + r];
        for (int64_t qq = q_begin; qq < q_begin + pn;) {
          const int64_t img = qq / pl.ohw, p0 = qq % pl.ohw;
          const int len = static_cast<int>(std::min(pl.ohw - p0, q_begin + pn - qq));
          float* yi = y + img * y_img + p0;
          for (int r = 0; r < t.valid; ++r) {
            const int co = co_first + r;
            epilogue_channel(pl.epi, co, tbuf + int64_t(r) * ld + (qq - q_begin),
                             yi + int64_t(co) * pl.ohw, len);
          }
          qq += len;
        }
      }
    }
  }
}

// The calling thread's padded-image buffer holding `nimg` images x [nimg, C, H, W] as
// [nimg, C, H + 2 pad_h, W + 2 pad_w] with a zero border. The border is written only when the
// buffer or the geometry changed since this thread's last call: the interior copy never
// touches it, and no other code writes the Padded slot.
const float* padded_images(const Conv2dShape& s, const float* x, int nimg, int hp, int wp) {
  struct Geometry {
    const float* buf = nullptr;
    int nimg = 0, c = 0, h = 0, w = 0, pad_h = 0, pad_w = 0;
  };
  thread_local Geometry last;
  const int planes = nimg * s.c_in;
  float* xp = thread_scratch(Scratch::Padded, size_t(planes) * hp * wp);
  const bool same = last.buf == xp && last.nimg == nimg && last.c == s.c_in && last.h == s.h &&
                    last.w == s.w && last.pad_h == s.pad_h && last.pad_w == s.pad_w;
  for (int c = 0; c < planes; ++c) {
    float* dst = xp + int64_t(c) * hp * wp;
    const float* src = x + int64_t(c) * s.h * s.w;
    if (!same) {
      for (int64_t i = 0; i < int64_t(s.pad_h) * wp; ++i) dst[i] = 0.0f;
      for (int64_t i = int64_t(s.h + s.pad_h) * wp; i < int64_t(hp) * wp; ++i) dst[i] = 0.0f;
      for (int i = 0; i < s.h; ++i) {
        float* row = dst + int64_t(i + s.pad_h) * wp;
        for (int j = 0; j < s.pad_w; ++j) row[j] = 0.0f;
        for (int j = s.pad_w + s.w; j < wp; ++j) row[j] = 0.0f;
      }
    }
    for (int i = 0; i < s.h; ++i) {
      float* __restrict row = dst + int64_t(i + s.pad_h) * wp + s.pad_w;
      const float* __restrict in = src + int64_t(i) * s.w;
      for (int j = 0; j < s.w; ++j) row[j] = in[j];
    }
  }
  last = Geometry{xp, nimg, s.c_in, s.h, s.w, s.pad_h, s.pad_w};
  return xp;
}

const float* padded_image(const Conv2dShape& s, const float* x, int hp, int wp) {
  return padded_images(s, x, 1, hp, wp);
}

}  // namespace

void conv_direct(const Conv2dShape& s, const float* x, const float* w, DirectWeights layout,
                 const Epilogue& epi, float* y) {
  DirectPlan pl;
  pl.s = s;
  pl.oh_n = s.out_h();
  pl.ow_n = s.out_w();
  pl.ohw = int64_t(pl.oh_n) * pl.ow_n;
  pl.padded = s.pad_h > 0 || s.pad_w > 0;
  pl.hp = s.h + 2 * s.pad_h;
  pl.wp = s.w + 2 * s.pad_w;
  pl.cin_g = s.c_in / s.groups;
  pl.cout_g = s.c_out / s.groups;
  pl.k = pl.cin_g * s.kh * s.kw;
  pl.epi = epi;
  pl.identity = epilogue_is_identity(epi);

  // Channel tiles of a group: 2L wide while more than L channels remain, then one of L (L = 8
  // floats per vector with AVX2, 16 with AVX-512).
  const DirectKernels& kern = active_kernels();
  pl.kern = &kern;
  const int lanes = kern.lanes;
  std::vector<ChannelTile> tiles;
  int64_t panel = 0;
  for (int co0 = 0; co0 < pl.cout_g;) {
    const int left = pl.cout_g - co0;
    const int width = left > lanes ? 2 * lanes : lanes;
    const int valid = std::min(width, left);
    tiles.push_back({co0, valid, width, panel});
    panel += int64_t(pl.k) * width;
    co0 += valid;
  }
  pl.tiles = &tiles;
  pl.group_w = panel;

  // Tap offsets, and the weights packed as panels [k][width] (zero past the valid channels).
  int* koff = reinterpret_cast<int*>(thread_scratch(Scratch::Mask, pl.k));
  for (int ci = 0, k = 0; ci < pl.cin_g; ++ci)
    for (int kh = 0; kh < s.kh; ++kh)
      for (int kw = 0; kw < s.kw; ++kw, ++k)
        koff[k] = static_cast<int>((int64_t(ci) * pl.hp + kh) * pl.wp + kw);
  pl.koff = koff;
  float* wp = thread_scratch(Scratch::Weights, size_t(pl.group_w) * s.groups);
  const int kk = s.kh * s.kw;
  for (int g = 0; g < s.groups; ++g) {
    for (const ChannelTile& t : tiles) {
      float* dst = wp + g * pl.group_w + t.panel;
      for (int k = 0; k < pl.k; ++k) {
        const int ci = k / kk, tap = k % kk;
        for (int r = 0; r < t.width; ++r) {
          float v = 0.0f;
          if (r < t.valid) {
            const int co = t.co0 + r;  // within the group
            if (layout == DirectWeights::Forward) {
              v = w[(int64_t(g * pl.cout_g + co) * pl.cin_g + ci) * kk + tap];
            } else {
              // Backward data: this conv maps dy (c_in = original c_out) to dx (c_out =
              // original c_in); its weight [co][ci][kh][kw] is the original
              // w[g*cin_g' + ci][co][KH-1-kh][KW-1-kw], where cin_g' = pl.cin_g.
              v = w[(int64_t(g * pl.cin_g + ci) * pl.cout_g + co) * kk + (kk - 1 - tap)];
            }
          }
          dst[int64_t(k) * t.width + r] = v;
        }
      }
    }
  }
  pl.w = wp;

  const int64_t x_img = int64_t(s.c_in) * s.h * s.w, y_img = int64_t(s.c_out) * pl.ohw;
  const int64_t pad_img = int64_t(s.c_in) * pl.hp * pl.wp;  // == x_img when not padded
  const int threads = conv_threads(s);
  if (s.n >= threads) {
    // Whole images per thread; small maps group several images into one pixel block (less
    // waste in the last tile, more reuse of each weight panel), keeping a group per thread.
    int nimg = 1;
    if (pl.ohw * 2 <= kMaxBlock)
      nimg = static_cast<int>(std::min<int64_t>(kMaxBlock / pl.ohw, std::max(1, s.n / threads)));
    const int ngroups = (s.n + nimg - 1) / nimg;
#pragma omp parallel for schedule(dynamic, 1) if (threads > 1)
    for (int gi = 0; gi < ngroups; ++gi) {
      const int n0 = gi * nimg, cnt = std::min(nimg, s.n - n0);
      const float* xin = x + n0 * x_img;
      if (pl.padded) xin = padded_images(s, xin, cnt, pl.hp, pl.wp);
      int block, nblocks;
      if (cnt > 1) {
        block = static_cast<int>(pl.ohw * cnt);
        nblocks = 1;
      } else {
        // One block when the map fits, else blocks of 192 (whole 8-pixel transposes).
        block = static_cast<int>(pl.ohw <= kMaxBlock ? pl.ohw : 192);
        nblocks = static_cast<int>((pl.ohw + block - 1) / block);
      }
      direct_blocks(pl, xin, pad_img, cnt, y + n0 * y_img, block, 0, nblocks);
    }
    return;
  }
  // Fewer images than threads: the pixel blocks of each image over the threads, with at least
  // one block per thread when the image has 48 pixels per thread or more.
  int nb = static_cast<int>((pl.ohw + kMaxBlock - 1) / kMaxBlock);
  if (threads > 1) nb = std::max(nb, static_cast<int>(std::min<int64_t>(threads, pl.ohw / 48)));
  const int bs = static_cast<int>((pl.ohw + nb - 1) / nb);
  for (int n = 0; n < s.n; ++n) {
    const float* xin = x + n * x_img;
    if (pl.padded) xin = padded_image(s, xin, pl.hp, pl.wp);
#pragma omp parallel for schedule(dynamic, 1) if (threads > 1 && nb > 1)
    for (int b = 0; b < nb; ++b) direct_blocks(pl, xin, pad_img, 1, y + n * y_img, bs, b, b + 1);
  }
}

void conv_direct_backward_filter(const Conv2dShape& s, const float* x, const float* dy,
                                 const std::vector<int32_t>& sel, float* dw, float* db) {
  // dW_g^T [tap][filter] = sum over images and output pixels p of
  //   x_pad[tap offset + pixel offset(p)] * dy[filter][p],
  // the forward micro-kernel with the roles swapped: 6 taps x 2L filters per tile, k = pixel.
  const int oh_n = s.out_h(), ow_n = s.out_w();
  const int64_t ohw = int64_t(oh_n) * ow_n;
  const bool padded = s.pad_h > 0 || s.pad_w > 0;
  const int hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w;
  const int cin_g = s.c_in / s.groups, cout_g = s.c_out / s.groups;
  const int kg = cin_g * s.kh * s.kw;
  const int nf = static_cast<int>(sel.size());
  // Taps per micro-kernel call: the kernels' pixels per call (at most kNarrowTaps).
  constexpr int kNarrowTaps = kNarrowPixels;
  const DirectKernels& kern = active_kernels();
  const int lanes = kern.lanes;

  // Filter tiles: the selected filters of each group, 2L (or a last L) at a time. sel is
  // sorted, so a group's filters are contiguous in it.
  struct FilterTile {
    int g, j0, valid, width;  // sel[j0 .. j0 + valid) are the tile's filters
    int taps, ktiles;         // taps per micro-kernel call, calls covering the kg taps
    int64_t dyt;              // offset of its [ohw][width] panel in the transposed dy
    int64_t acc;              // offset of its [ktiles*taps][width] accumulators
  };
  std::vector<FilterTile> tiles;
  std::vector<std::pair<int, int>> work_items;  // (tile, tap tile)
  int64_t dyt_size = 0, acc_size = 0;
  for (int j = 0; j < nf;) {
    const int g = sel[j] / cout_g;
    int end = j;
    while (end < nf && sel[end] / cout_g == g) ++end;
    for (int j0 = j; j0 < end;) {
      const int left = end - j0, width = left > lanes ? 2 * lanes : lanes;
      const int valid = std::min(width, left);
      const int taps = width == 2 * lanes ? kern.wide_pixels : kern.narrow_pixels;
      const int ktiles = (kg + taps - 1) / taps;
      for (int kt = 0; kt < ktiles; ++kt) work_items.push_back({int(tiles.size()), kt});
      tiles.push_back({g, j0, valid, width, taps, ktiles, dyt_size, acc_size});
      dyt_size += ohw * width;
      acc_size += int64_t(ktiles) * taps * width;
      j0 += valid;
    }
    j = end;
  }

  // Offsets of the taps within one group of the padded image, then of the output pixels.
  int* offs = reinterpret_cast<int*>(thread_scratch(Scratch::Mask, size_t(kg) + ohw));
  int* koff = offs;
  int* pixoff = offs + kg;
  for (int ci = 0, k = 0; ci < cin_g; ++ci)
    for (int kh = 0; kh < s.kh; ++kh)
      for (int kw = 0; kw < s.kw; ++kw, ++k)
        koff[k] = static_cast<int>((int64_t(ci) * hp + kh) * wp + kw);
  for (int64_t p = 0; p < ohw; ++p)
    pixoff[p] = static_cast<int>((p / ow_n) * s.stride_h * wp + (p % ow_n) * s.stride_w);

  const int64_t x_img = int64_t(s.c_in) * s.h * s.w, y_img = int64_t(s.c_out) * ohw;
  const int64_t plane = int64_t(hp) * wp;
  const int64_t part_size = acc_size + nf;  // accumulators, then the bias sums

  // One image: transposed dy panels (+ bias sums into bsum), then the tiles (ft, kt) in
  // [w0, w1) of the flattened (filter tile, tap tile) space.
  auto transpose_dy = [&](const float* dyn, float* dyt, float* bsum) {
    for (const FilterTile& t : tiles) {
      float* panel = dyt + t.dyt;
      for (int r = 0; r < t.width; ++r) {
        if (r >= t.valid) {
          for (int64_t p = 0; p < ohw; ++p) panel[p * t.width + r] = 0.0f;
          continue;
        }
        const float* row = dyn + int64_t(sel[t.j0 + r]) * ohw;
        float sum = 0.0f;
        int64_t p = 0;
        for (; p < ohw; ++p) {
          panel[p * t.width + r] = row[p];
          sum += row[p];
        }
        if (bsum) bsum[t.j0 + r] += sum;
      }
    }
  };
  auto run_tiles = [&](const float* xin, const float* dyt, float* acc, int w0, int w1) {
    for (int wi = w0; wi < w1; ++wi) {
      const FilterTile& t = tiles[work_items[wi].first];
      const int kt = work_items[wi].second;
      const float* xg = xin + int64_t(t.g) * cin_g * plane;
      const float* kp[kNarrowTaps];
      for (int j = 0; j < t.taps; ++j) kp[j] = xg + koff[std::min(kt * t.taps + j, kg - 1)];
      float* c = acc + t.acc + int64_t(kt) * t.taps * t.width;
      (t.width == 2 * lanes ? kern.wide_acc : kern.narrow_acc)(static_cast<int>(ohw), pixoff,
                                                               dyt + t.dyt, kp, c);
    }
  };
  const int work = static_cast<int>(work_items.size());

  const int threads = conv_threads(s);
  const bool by_image = threads > 1 && s.n >= threads;
  std::vector<float*> parts(by_image ? threads : 1, nullptr);
  if (by_image) {
    // Each thread accumulates its images in its own partial; then the partials are summed.
#pragma omp parallel num_threads(threads)
    {
      const int tid = omp_get_thread_num();
      float* part = thread_scratch(Scratch::Partial, part_size);
      std::memset(part, 0, sizeof(float) * part_size);
      parts[tid] = part;
      float* dyt = thread_scratch(Scratch::Gather, dyt_size);
      // Static: the images of each partial (the summation order) are fixed for a thread count.
#pragma omp for schedule(static)
      for (int n = 0; n < s.n; ++n) {
        const float* xin = x + n * x_img;
        if (padded) xin = padded_image(s, xin, hp, wp);
        transpose_dy(dy + n * y_img, dyt, part + acc_size);
        run_tiles(xin, dyt, part, 0, work);
      }
    }
  } else {
    // Fewer images than threads: the tiles of each image over the threads (disjoint outputs).
    float* part = thread_scratch(Scratch::Partial, part_size);
    std::memset(part, 0, sizeof(float) * part_size);
    parts[0] = part;
    float* dyt = thread_scratch(Scratch::Gather, dyt_size);
    for (int n = 0; n < s.n; ++n) {
      const float* xin = x + n * x_img;
      if (padded) xin = padded_image(s, xin, hp, wp);
      transpose_dy(dy + n * y_img, dyt, part + acc_size);
#pragma omp parallel for schedule(dynamic, 1) if (threads > 1 && work > 1)
      for (int wi = 0; wi < work; ++wi) run_tiles(xin, dyt, part, wi, wi + 1);
    }
  }

  // dw[f][k] = sum over partials of acc[tile][k][r]; db likewise.
  const int nparts = static_cast<int>(parts.size());
#pragma omp parallel for schedule(static) if (nparts > 1 && int64_t(nf) * kg >= 4096)
  for (int j = 0; j < nf; ++j) {
    size_t ti = 0;
    while (!(tiles[ti].j0 <= j && j < tiles[ti].j0 + tiles[ti].valid)) ++ti;
    const FilterTile& t = tiles[ti];
    const int r = j - t.j0;
    float* out = dw + int64_t(sel[j]) * kg;
    for (int k = 0; k < kg; ++k) {
      float a = 0.0f;
      for (int u = 0; u < nparts; ++u) a += parts[u][t.acc + int64_t(k) * t.width + r];
      out[k] = a;
    }
    if (db) {
      float a = 0.0f;
      for (int u = 0; u < nparts; ++u) a += parts[u][acc_size + j];
      db[sel[j]] = a;
    }
  }
}

#else  // no AVX2: the im2col + GEMM path runs every convolution

bool conv_direct_available() { return false; }
void conv_direct(const Conv2dShape&, const float*, const float*, DirectWeights, const Epilogue&,
                 float*) {}
void conv_direct_backward_filter(const Conv2dShape&, const float*, const float*,
                                 const std::vector<int32_t>&, float*, float*) {}

#endif

}  // namespace nns::ops::cpu
