// Pooling on CUDA, NCHW planes. Forward: one thread per output, scanning its window in the
// CPU backend's order (so ties and NaNs pick the same argmax). Backward is a gather over
// inputs, one thread per input element summing the outputs whose window covers it in
// ascending output order: deterministic (no atomics) and the CPU's order of additions.
#include <string>

#include "kernels/common/pool.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

void check_pool(const Pool2dShape& s, const char* op) {
  if (s.n < 1 || s.c < 1 || s.h < 1 || s.w < 1 || s.kh < 1 || s.kw < 1 || s.stride_h < 1 ||
      s.stride_w < 1 || s.pad_h < 0 || s.pad_w < 0 || s.out_h() < 1 || s.out_w() < 1 ||
      s.h + 2 * s.pad_h < s.kh || s.w + 2 * s.pad_w < s.kw)
    invalid(op, "invalid pooling shape (n=" + std::to_string(s.n) + " c=" + std::to_string(s.c) +
                    " h=" + std::to_string(s.h) + " w=" + std::to_string(s.w) +
                    " k=" + std::to_string(s.kh) + "x" + std::to_string(s.kw) +
                    " stride=" + std::to_string(s.stride_h) + "," + std::to_string(s.stride_w) +
                    " pad=" + std::to_string(s.pad_h) + "," + std::to_string(s.pad_w) + ")");
  // PyTorch's rule: padding at most half the kernel, so no window lies entirely in the padding.
  if (2 * s.pad_h > s.kh || 2 * s.pad_w > s.kw)
    invalid(op, "padding must be at most half the kernel (k=" + std::to_string(s.kh) + "x" +
                    std::to_string(s.kw) + " pad=" + std::to_string(s.pad_h) + "," +
                    std::to_string(s.pad_w) + ")");
}

// The geometry a kernel needs, passed by value.
struct PoolGeom {
  int h, w, oh, ow, kh, kw, sh, sw, ph, pw;
  bool include_pad;
};

PoolGeom geom(const Pool2dShape& s) {
  return PoolGeom{s.h,        s.w,        s.out_h(), s.out_w(), s.kh,
                  s.kw,       s.stride_h, s.stride_w, s.pad_h,   s.pad_w,
                  s.count_include_pad};
}

// 1 / the divisor of output (oh, ow)'s averaging window (kernels/common/pool.h).
__device__ inline float avg_inv(const PoolGeom& g, int oh, int ow) {
  int hs, he, span_h, ws, we, span_w;
  common::pool_window(oh, g.sh, g.ph, g.kh, g.h, &hs, &he, &span_h);
  common::pool_window(ow, g.sw, g.pw, g.kw, g.w, &ws, &we, &span_w);
  return 1.0f / float(common::avg_divisor(g.include_pad, hs, he, ws, we, span_h, span_w));
}

// Window of output index o along one axis, clipped to the image: [*lo, *hi).
__device__ inline void window(int o, int stride, int pad, int k, int size, int* lo, int* hi) {
  const int start = o * stride - pad;
  *lo = start > 0 ? start : 0;
  *hi = start + k < size ? start + k : size;
}

// The outputs along one axis whose window covers input i: [*lo, *hi] (empty when lo > hi).
// Output o covers i when o*stride - pad <= i <= o*stride - pad + k - 1.
__device__ inline void covering(int i, int stride, int pad, int k, int out, int* lo, int* hi) {
  const int num = i + pad - k + 1;
  *lo = num <= 0 ? 0 : (num + stride - 1) / stride;
  const int last = (i + pad) / stride;
  *hi = last < out - 1 ? last : out - 1;
}

__global__ void maxpool_forward_kernel(int64_t count, PoolGeom g, const float* x, float* y,
                                       int32_t* argmax) {
  NNS_GRID_STRIDE(o, count) {
    const int ow = static_cast<int>(o % g.ow);
    const int oh = static_cast<int>((o / g.ow) % g.oh);
    const int64_t plane = o / (int64_t(g.ow) * g.oh);
    const float* xp = x + plane * g.h * g.w;
    int hs, he, ws, we;
    window(oh, g.sh, g.ph, g.kh, g.h, &hs, &he);
    window(ow, g.sw, g.pw, g.kw, g.w, &ws, &we);
    // Row-major scan; only a strictly larger value (or a NaN, as in PyTorch) replaces the best.
    int best_i = hs * g.w + ws;
    float best = xp[best_i];
    for (int ih = hs; ih < he; ++ih) {
      for (int iw = ws; iw < we; ++iw) {
        const float v = xp[ih * g.w + iw];
        if (v > best || isnan(v)) {
          best = v;
          best_i = ih * g.w + iw;
        }
      }
    }
    y[o] = best;
    argmax[o] = best_i;
  }
}

__global__ void maxpool_backward_kernel(int64_t count, PoolGeom g, const float* dy,
                                        const int32_t* argmax, float* dx) {
  NNS_GRID_STRIDE(e, count) {
    const int iw = static_cast<int>(e % g.w);
    const int ih = static_cast<int>((e / g.w) % g.h);
    const int64_t plane = e / (int64_t(g.w) * g.h);
    const int64_t base = plane * g.oh * g.ow;
    const int32_t self = ih * g.w + iw;
    int oh0, oh1, ow0, ow1;
    covering(ih, g.sh, g.ph, g.kh, g.oh, &oh0, &oh1);
    covering(iw, g.sw, g.pw, g.kw, g.ow, &ow0, &ow1);
    float acc = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow) {
        const int64_t o = base + int64_t(oh) * g.ow + ow;
        if (argmax[o] == self) acc += dy[o];
      }
    dx[e] = acc;
  }
}

__global__ void avgpool_forward_kernel(int64_t count, PoolGeom g, const float* x, float* y) {
  NNS_GRID_STRIDE(o, count) {
    const int ow = static_cast<int>(o % g.ow);
    const int oh = static_cast<int>((o / g.ow) % g.oh);
    const int64_t plane = o / (int64_t(g.ow) * g.oh);
    const float* xp = x + plane * g.h * g.w;
    int hs, he, ws, we;
    window(oh, g.sh, g.ph, g.kh, g.h, &hs, &he);
    window(ow, g.sw, g.pw, g.kw, g.w, &ws, &we);
    float acc = 0.0f;
    for (int ih = hs; ih < he; ++ih)
      for (int iw = ws; iw < we; ++iw) acc += xp[ih * g.w + iw];
    y[o] = acc * avg_inv(g, oh, ow);
  }
}

__global__ void avgpool_backward_kernel(int64_t count, PoolGeom g, const float* dy, float* dx) {
  NNS_GRID_STRIDE(e, count) {
    const int iw = static_cast<int>(e % g.w);
    const int ih = static_cast<int>((e / g.w) % g.h);
    const int64_t base = e / (int64_t(g.w) * g.h) * g.oh * g.ow;
    int oh0, oh1, ow0, ow1;
    covering(ih, g.sh, g.ph, g.kh, g.oh, &oh0, &oh1);
    covering(iw, g.sw, g.pw, g.kw, g.ow, &ow0, &ow1);
    float acc = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh)
      for (int ow = ow0; ow <= ow1; ++ow)
        acc += __fmul_rn(dy[base + int64_t(oh) * g.ow + ow], avg_inv(g, oh, ow));  // no fma
    dx[e] = acc;
  }
}

// One warp per (image, channel) plane: y[p] = mean of its hw values.
__global__ void global_avgpool_forward_kernel(int64_t planes, int hw, float inv, const float* x,
                                              float* y) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int64_t n_warps = int64_t(gridDim.x) * blockDim.x / kWarp;
  for (int64_t p = warp; p < planes; p += n_warps) {  // warp-uniform loop
    const float* xp = x + p * hw;
    float acc = 0.0f;
    for (int k = lane; k < hw; k += kWarp) acc += xp[k];
    acc = warp_sum(acc);
    if (lane == 0) y[p] = acc * inv;
  }
}

__global__ void global_avgpool_backward_kernel(int64_t count, int hw, float inv, const float* dy,
                                               float* dx) {
  NNS_GRID_STRIDE(e, count) dx[e] = dy[e / hw] * inv;
}

void check_planes(const char* op, int n, int c, int hw) {
  if (n < 0 || c < 0 || hw < 1)
    invalid(op, "invalid shape (n=" + std::to_string(n) + " c=" + std::to_string(c) +
                    " hw=" + std::to_string(hw) + ")");
}

}  // namespace

void maxpool2d_forward(void* stream, const Pool2dShape& s, const float* x, float* y,
                       int32_t* argmax) {
  check_pool(s, "maxpool2d_forward");
  const int64_t count = int64_t(s.n) * s.c * s.out_h() * s.out_w();
  NNS_LAUNCH_LINEAR(maxpool_forward_kernel, count, as_stream(stream), geom(s), x, y, argmax);
}

void maxpool2d_backward(void* stream, const Pool2dShape& s, const float* dy, const int32_t* argmax,
                        float* dx) {
  check_pool(s, "maxpool2d_backward");
  const int64_t count = int64_t(s.n) * s.c * s.h * s.w;
  NNS_LAUNCH_LINEAR(maxpool_backward_kernel, count, as_stream(stream), geom(s), dy, argmax, dx);
}

void avgpool2d_forward(void* stream, const Pool2dShape& s, const float* x, float* y) {
  check_pool(s, "avgpool2d_forward");
  const int64_t count = int64_t(s.n) * s.c * s.out_h() * s.out_w();
  NNS_LAUNCH_LINEAR(avgpool_forward_kernel, count, as_stream(stream), geom(s), x, y);
}

void avgpool2d_backward(void* stream, const Pool2dShape& s, const float* dy, float* dx) {
  check_pool(s, "avgpool2d_backward");
  const int64_t count = int64_t(s.n) * s.c * s.h * s.w;
  NNS_LAUNCH_LINEAR(avgpool_backward_kernel, count, as_stream(stream), geom(s), dy, dx);
}

void global_avgpool_forward(void* stream, int n, int c, int hw, const float* x, float* y) {
  check_planes("global_avgpool_forward", n, c, hw);
  const int64_t planes = int64_t(n) * c;
  if (planes == 0) return;
  NNS_LAUNCH(global_avgpool_forward_kernel, dim3(blocks_for(planes * kWarp)), dim3(kThreads), 0,
             as_stream(stream), planes, hw, 1.0f / float(hw), x, y);
}

void global_avgpool_backward(void* stream, int n, int c, int hw, const float* dy, float* dx) {
  check_planes("global_avgpool_backward", n, c, hw);
  NNS_LAUNCH_LINEAR(global_avgpool_backward_kernel, int64_t(n) * c * hw, as_stream(stream), hw,
                    1.0f / float(hw), dy, dx);
}

}  // namespace nns::ops::cuda
