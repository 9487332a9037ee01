// Convolution on the CPU: im2col + one SGEMM per group (OpenBLAS), OpenMP over blocks of images.
// Forward and stride-1 backward-data go to the direct kernel of conv_direct.cpp when it is
// compiled in (AVX2); depthwise convs to conv_depthwise.cpp.
//
// Images are processed in blocks of nb consecutive images whose lowered columns sit side by
// side (cols [C_in*KH*KW, nb*OH*OW]), so that small feature maps (7x7 = 49 columns per image)
// still give the GEMM a wide enough N. Each block is handled by one OpenMP thread with its own
// scratch; inside a parallel region OpenBLAS (OpenMP build) runs single-threaded. When there are
// fewer images than threads (batch 1), blocks run one after the other and BLAS threads instead.
// Blocks are handed out dynamically, so a descheduled thread delays the op by one block only.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/conv_internal.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/epilogue.h"
#include "kernels/cpu/im2col.h"
#include "kernels/cpu/scratch.h"

namespace nns::ops::cpu {

namespace {

// GEMM width (columns of a block) below which consecutive images are batched into one block.
constexpr int64_t kTargetBlockCols = 512;

struct Blocking {
  int nb = 1;          // images per block
  int nblocks = 1;     // blocks covering the batch
  bool parallel = false;  // blocks spread over OpenMP threads (else BLAS threads)
};

Blocking plan_blocks(const Conv2dShape& s) {
  const int n = s.n;
  const int64_t ohw = int64_t(s.out_h()) * s.out_w();
  Blocking b;
  const int threads = conv_threads(s);
  b.parallel = threads > 1 && n >= threads;
  const int64_t want = (kTargetBlockCols + ohw - 1) / ohw;
  // Keep at least one block per thread.
  const int64_t cap = b.parallel ? std::max(1, n / threads) : n;
  b.nb = static_cast<int>(std::clamp<int64_t>(want, 1, std::max<int64_t>(cap, 1)));
  b.nblocks = (n + b.nb - 1) / b.nb;
  return b;
}

// Whether the direct kernel runs an op: always when forced (ConvAlgo::Direct), never with
// Im2colGemm; with Auto where it measured faster (AMD Zen 4, one thread, batch 16-128): not for
// tiny GEMM depths (first layers: 3 or 1 input channels), not for pointwise convs (no im2col to
// save; OpenBLAS is as fast or faster there), and for backward data not when the transposed
// conv has fewer than 8 output channels (its 8-wide channel tiles would be mostly padding),
// and for backward filter not on maps under 32 output pixels (resnet18's 4x4 and 2x2 stages:
// the direct kernel walks each image's few pixels per tile, while the GEMM's depth grows with
// the images of a block; 2 threads, resnet18 training 171 -> 184 images/s).
bool use_direct(bool auto_choice) {
  if (!conv_direct_available()) return false;
  switch (conv_algo()) {
    case ConvAlgo::Direct: return true;
    case ConvAlgo::Im2colGemm: return false;
    default: return auto_choice;
  }
}
int depth_per_group(const Conv2dShape& s) { return (s.c_in / s.groups) * s.kh * s.kw; }
bool direct_forward(const Conv2dShape& s) {
  return use_direct(depth_per_group(s) >= 32 && !conv_is_pointwise(s));
}
bool direct_backward_data(const Conv2dShape& s) {
  const int depth = (s.c_out / s.groups) * s.kh * s.kw;
  return use_direct(depth >= 32 && s.c_in / s.groups >= 8);
}
bool direct_backward_filter(const Conv2dShape& s) {
  return use_direct(depth_per_group(s) >= 32 && !(s.kh == 1 && s.kw == 1) &&
                    s.out_h() * s.out_w() >= 32);
}

}  // namespace

const float* im2col_mask(const Conv2dShape& s) {
  const int64_t size = im2col_mask_size(s);
  if (size == 0) return nullptr;
  float* mask = thread_scratch(Scratch::Mask, size);
  im2col_mask_build(s, mask);
  return mask;
}

void conv_check_shape(const Conv2dShape& s, const char* op) {
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(std::string(op) + ": " + what + " (n=" + std::to_string(s.n) +
                                " c_in=" + std::to_string(s.c_in) + " h=" + std::to_string(s.h) +
                                " w=" + std::to_string(s.w) + " c_out=" + std::to_string(s.c_out) +
                                " k=" + std::to_string(s.kh) + "x" + std::to_string(s.kw) +
                                " stride=" + std::to_string(s.stride_h) + "," +
                                std::to_string(s.stride_w) + " pad=" + std::to_string(s.pad_h) +
                                "," + std::to_string(s.pad_w) +
                                " groups=" + std::to_string(s.groups) + ")");
  };
  if (s.n < 1 || s.c_in < 1 || s.h < 1 || s.w < 1 || s.c_out < 1 || s.kh < 1 || s.kw < 1)
    fail("sizes must be positive");
  if (s.stride_h < 1 || s.stride_w < 1 || s.pad_h < 0 || s.pad_w < 0)
    fail("strides must be >= 1 and padding >= 0");
  if (s.groups < 1 || s.c_in % s.groups != 0 || s.c_out % s.groups != 0)
    fail("groups must divide c_in and c_out");
  if (s.h + 2 * s.pad_h < s.kh || s.w + 2 * s.pad_w < s.kw)
    fail("kernel larger than the padded input");
}

std::vector<int32_t> conv_filter_list(const Conv2dShape& s, const int32_t* filters,
                                      int n_filters, const char* op) {
  std::vector<int32_t> sel;
  if (!filters) {
    sel.resize(s.c_out);
    for (int f = 0; f < s.c_out; ++f) sel[f] = f;
    return sel;
  }
  if (n_filters < 0) throw std::invalid_argument(std::string(op) + ": n_filters < 0");
  sel.assign(filters, filters + n_filters);
  for (int32_t f : sel) {
    if (f < 0 || f >= s.c_out)
      throw std::out_of_range(std::string(op) + ": filter index " + std::to_string(f) +
                              " outside [0, " + std::to_string(s.c_out) + ")");
  }
  std::sort(sel.begin(), sel.end());
  sel.erase(std::unique(sel.begin(), sel.end()), sel.end());
  return sel;
}

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const Epilogue& epi,
                    float* y) {
  conv_check_shape(s, "conv2d_forward");
  if (conv_is_depthwise(s)) return depthwise_forward(s, x, w, epi, y);
  if (direct_forward(s)) return conv_direct(s, x, w, DirectWeights::Forward, epi, y);

  const int g = s.groups, cout_g = s.c_out / g;
  const int kg = (s.c_in / g) * s.kh * s.kw;  // GEMM depth per group
  const int64_t ohw = int64_t(s.out_h()) * s.out_w();
  const int64_t x_img = int64_t(s.c_in) * s.h * s.w, y_img = int64_t(s.c_out) * ohw;
  const Blocking bl = plan_blocks(s);
  const bool pointwise = conv_is_pointwise(s);
  const bool identity = epilogue_is_identity(epi);
  const float* mask = im2col_mask(s);

#pragma omp parallel for schedule(dynamic, 1) if (bl.parallel)
  for (int blk = 0; blk < bl.nblocks; ++blk) {
    const int n0 = blk * bl.nb, cnt = std::min(bl.nb, s.n - n0);
    const int64_t ncols = cnt * ohw;
    const float* cols = x + n0 * x_img;
    if (!(pointwise && cnt == 1)) {
      float* buf = thread_scratch(Scratch::Cols, size_t(kg) * g * ncols);
      im2col_block(s, x + n0 * x_img, cnt, buf, mask, !bl.parallel);
      cols = buf;
    }
    // One image: the GEMM writes y directly; several: a [C_out, nb*OHW] buffer that the
    // epilogue pass scatters into the images.
    float* out = cnt == 1 ? y + n0 * y_img : thread_scratch(Scratch::GemmOut, s.c_out * ncols);
    for (int gi = 0; gi < g; ++gi) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout_g, ncols, kg, 1.0f,
                  w + int64_t(gi) * cout_g * kg, kg, cols + int64_t(gi) * kg * ncols, ncols, 0.0f,
                  out + int64_t(gi) * cout_g * ncols, ncols);
    }
    if (cnt == 1) {
      if (!identity)
        for (int c = 0; c < s.c_out; ++c) epilogue_channel(epi, c, out + c * ohw, out + c * ohw, ohw);
    } else {
      for (int b = 0; b < cnt; ++b)
        for (int c = 0; c < s.c_out; ++c)
          epilogue_channel(epi, c, out + c * ncols + b * ohw, y + (n0 + b) * y_img + c * ohw, ohw);
    }
  }
}

void conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  conv_check_shape(s, "conv2d_backward_data");
  if (conv_is_depthwise(s)) return depthwise_backward_data(s, dy, w, dx);
  if (s.stride_h == 1 && s.stride_w == 1 && s.pad_h < s.kh && s.pad_w < s.kw &&
      direct_backward_data(s)) {
    // Stride 1: dx is the convolution of dy with the weights transposed per group and flipped,
    // padded by k - 1 - pad (its output is exactly H x W).
    Conv2dShape t = s;
    t.c_in = s.c_out;
    t.c_out = s.c_in;
    t.h = s.out_h();
    t.w = s.out_w();
    t.pad_h = s.kh - 1 - s.pad_h;
    t.pad_w = s.kw - 1 - s.pad_w;
    return conv_direct(t, dy, w, DirectWeights::BackwardData, Epilogue{}, dx);
  }

  const int g = s.groups, cout_g = s.c_out / g;
  const int kg = (s.c_in / g) * s.kh * s.kw;
  const int64_t ohw = int64_t(s.out_h()) * s.out_w();
  const int64_t x_img = int64_t(s.c_in) * s.h * s.w, y_img = int64_t(s.c_out) * ohw;
  const Blocking bl = plan_blocks(s);
  const bool pointwise = conv_is_pointwise(s);
  const float* mask = im2col_mask(s);

#pragma omp parallel for schedule(dynamic, 1) if (bl.parallel)
  for (int blk = 0; blk < bl.nblocks; ++blk) {
    const int n0 = blk * bl.nb, cnt = std::min(bl.nb, s.n - n0);
    const int64_t ncols = cnt * ohw;
    // dy of the block as [C_out, nb*OHW].
    const float* dyb = dy + n0 * y_img;
    if (cnt > 1) {
      float* buf = thread_scratch(Scratch::Gather, s.c_out * ncols);
      for (int b = 0; b < cnt; ++b)
        for (int c = 0; c < s.c_out; ++c)
          std::memcpy(buf + c * ncols + b * ohw, dyb + b * y_img + c * ohw, sizeof(float) * ohw);
      dyb = buf;
    }
    float* dxb = dx + n0 * x_img;
    // cols = W_g^T dy_g; a pointwise conv's single image needs no col2im.
    const bool direct = pointwise && cnt == 1;
    float* cols = direct ? dxb : thread_scratch(Scratch::Cols, size_t(kg) * g * ncols);
    for (int gi = 0; gi < g; ++gi) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, kg, ncols, cout_g, 1.0f,
                  w + int64_t(gi) * cout_g * kg, kg, dyb + int64_t(gi) * cout_g * ncols, ncols,
                  0.0f, cols + int64_t(gi) * kg * ncols, ncols);
    }
    if (!direct) col2im_block(s, cols, cnt, dxb, mask, !bl.parallel);
  }
}

void conv2d_backward_filter(const Conv2dShape& s, const float* x, const float* dy, float* dw,
                            float* db, const int32_t* filters, int n_filters) {
  conv_check_shape(s, "conv2d_backward_filter");
  const std::vector<int32_t> sel =
      conv_filter_list(s, filters, n_filters, "conv2d_backward_filter");
  const int nf = static_cast<int>(sel.size());
  if (nf == 0) return;
  if (conv_is_depthwise(s)) return depthwise_backward_filter(s, x, dy, dw, db, sel);
  if (direct_backward_filter(s)) return conv_direct_backward_filter(s, x, dy, sel, dw, db);

  const int g = s.groups, cout_g = s.c_out / g;
  const int kg = (s.c_in / g) * s.kh * s.kw;
  const int64_t ohw = int64_t(s.out_h()) * s.out_w();
  const int64_t x_img = int64_t(s.c_in) * s.h * s.w, y_img = int64_t(s.c_out) * ohw;
  const Blocking bl = plan_blocks(s);
  const bool pointwise = conv_is_pointwise(s);
  const bool all = nf == s.c_out;
  const float* mask = im2col_mask(s);

  // sel is sorted, so the selected filters of group gi are sel[gstart[gi] .. gstart[gi+1]).
  std::vector<int> gstart(g + 1, 0);
  for (int j = 0; j < nf; ++j) gstart[sel[j] / cout_g + 1]++;
  for (int gi = 0; gi < g; ++gi) gstart[gi + 1] += gstart[gi];

  // Each thread accumulates dW_sel [nf, kg] and db_sel [nf] over its blocks in its own partial
  // buffer; the partials are then summed element-wise in parallel.
  const int64_t part_size = int64_t(nf) * kg + nf;
  const int max_threads = bl.parallel ? conv_threads(s) : 1;
  std::vector<float*> parts(max_threads, nullptr);

#pragma omp parallel num_threads(max_threads) if (bl.parallel)
  {
    const int t = omp_get_thread_num();
    float* part = thread_scratch(Scratch::Partial, part_size);
    std::memset(part, 0, sizeof(float) * part_size);
    float* part_db = part + int64_t(nf) * kg;
    parts[t] = part;

    // Static: which blocks a partial holds, and so the summation order, is fixed for a given
    // thread count; dynamic scheduling made training differ in the last bit between runs.
#pragma omp for schedule(static)
    for (int blk = 0; blk < bl.nblocks; ++blk) {
      const int n0 = blk * bl.nb, cnt = std::min(bl.nb, s.n - n0);
      const int64_t ncols = cnt * ohw;
      const float* cols = x + n0 * x_img;
      if (!(pointwise && cnt == 1)) {
        float* buf = thread_scratch(Scratch::Cols, size_t(kg) * g * ncols);
        im2col_block(s, x + n0 * x_img, cnt, buf, mask, !bl.parallel);
        cols = buf;
      }
      // dy rows of the selected filters as [nf, nb*OHW]: the GEMM costs nf, not C_out, rows.
      const float* dys = dy + n0 * y_img;
      if (!(all && cnt == 1)) {
        float* buf = thread_scratch(Scratch::Gather, nf * ncols);
        for (int b = 0; b < cnt; ++b)
          for (int j = 0; j < nf; ++j)
            std::memcpy(buf + j * ncols + b * ohw, dy + (n0 + b) * y_img + sel[j] * ohw,
                        sizeof(float) * ohw);
        dys = buf;
      }
      if (db) {
        for (int j = 0; j < nf; ++j) {
          const float* row = dys + j * ncols;
          float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
          for (int64_t i = 0; i < ncols; ++i) acc += row[i];
          part_db[j] += acc;
        }
      }
      // Computed transposed, dW_g^T [kg, rows] = cols_g dy_g^T: OpenBLAS runs this
      // orientation (long M = kg, short N = filters) 15-20% faster than dy_g cols_g^T.
      for (int gi = 0; gi < g; ++gi) {
        const int rows = gstart[gi + 1] - gstart[gi];
        if (rows == 0) continue;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, kg, rows, ncols, 1.0f,
                    cols + int64_t(gi) * kg * ncols, ncols, dys + int64_t(gstart[gi]) * ncols,
                    ncols, 1.0f, part + int64_t(gstart[gi]) * kg, rows);
      }
    }  // implicit barrier: every partial is complete

    // Sum the partials; group gi's block of the partial is [kg, rows_g] from gstart[gi]*kg.
    const int nt = omp_get_num_threads();
#pragma omp for schedule(static)
    for (int j = 0; j < nf; ++j) {
      const int gi = sel[j] / cout_g;
      const int rows = gstart[gi + 1] - gstart[gi];
      const int64_t base = int64_t(gstart[gi]) * kg + (j - gstart[gi]);
      float* out = dw + int64_t(sel[j]) * kg;
      for (int k = 0; k < kg; ++k) {
        float acc = 0.0f;
        for (int u = 0; u < nt; ++u) acc += parts[u][base + int64_t(k) * rows];
        out[k] = acc;
      }
      if (db) {
        float acc = 0.0f;
        for (int u = 0; u < nt; ++u) acc += parts[u][int64_t(nf) * kg + j];
        db[sel[j]] = acc;
      }
    }
  }
}

}  // namespace nns::ops::cpu
