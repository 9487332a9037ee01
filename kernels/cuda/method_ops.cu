// CUDA twins of the method's ops (kernels/cpu/method_ops.cpp): the fused masked Adam + clamp
// over the sparse entry list, gather/scatter, the LSTM cell's pointwise part, and batch
// assembly from uint8 images. One thread per element, each running the element function of
// kernels/common/method.h that the CPU backend runs. mask_select is in mask_select.cu.
#include <string>

#include "kernels/common/method.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

void check_count(const char* op, int64_t count) {
  if (count < 0) invalid(op, "negative element count " + std::to_string(count));
}

// Entries are distinct (mask_select produces each index once), so threads never share w[j].
__global__ void masked_adam_clamp_kernel(int64_t count, const int64_t* idx, float* w,
                                         const float* grad, float* m, float* v, float beta1,
                                         float beta2, float eps, common::AdamStepConsts c,
                                         float grad_scale, float l1, float lo, float hi) {
  NNS_GRID_STRIDE(i, count) {
    const int64_t j = idx[i];
    common::masked_adam_clamp_element(w[j], grad[j], m[i], v[i], beta1, beta2, eps, c, grad_scale,
                                      l1, lo, hi);
  }
}

__global__ void gather_kernel(int64_t count, const int64_t* idx, const float* src, float* dst) {
  NNS_GRID_STRIDE(i, count) dst[i] = src[idx[i]];
}

__global__ void scatter_kernel(int64_t count, const int64_t* idx, const float* src, float* dst) {
  NNS_GRID_STRIDE(i, count) dst[idx[i]] = src[i];
}

// One thread per (batch row, hidden unit); gates and act are [B, 4H] in (i, f, g, o) order.
__global__ void lstm_forward_kernel(int64_t count, int hidden, const float* gates,
                                    const float* c_prev, float* act, float* h, float* c) {
  NNS_GRID_STRIDE(o, count) {
    const int64_t b = o / hidden;
    const int64_t u = o - b * hidden;
    const float* g = gates + b * 4 * hidden;
    float* a = act + b * 4 * hidden;
    common::lstm_unit_forward(g[u], g[hidden + u], g[2 * hidden + u], g[3 * hidden + u], c_prev[o],
                              &a[u], &a[hidden + u], &a[2 * hidden + u], &a[3 * hidden + u], &c[o],
                              &h[o]);
  }
}

__global__ void lstm_backward_kernel(int64_t count, int hidden, const float* act,
                                     const float* c_prev, const float* c, const float* dh,
                                     const float* dc, float* dgates, float* dc_prev) {
  NNS_GRID_STRIDE(o, count) {
    const int64_t b = o / hidden;
    const int64_t u = o - b * hidden;
    const float* a = act + b * 4 * hidden;
    float* d = dgates + b * 4 * hidden;
    common::lstm_unit_backward(a[u], a[hidden + u], a[2 * hidden + u], a[3 * hidden + u], c_prev[o],
                               c[o], dh[o], dc[o], &d[u], &d[hidden + u], &d[2 * hidden + u],
                               &d[3 * hidden + u], &dc_prev[o]);
  }
}

// One thread per output pixel of out [B, C, S, S]; the image sits centred in the S x S frame
// (odd extra pixel bottom/right), the frame is raw value 0 before normalisation.
__global__ void gather_normalize_u8_kernel(int64_t count, int c, int h, int w, int out_size,
                                           const uint8_t* images, const int32_t* idx,
                                           const float* mean, const float* std, float* out) {
  const int top = (out_size - h) / 2, left = (out_size - w) / 2;
  const int64_t img = int64_t(c) * h * w;
  NNS_GRID_STRIDE(e, count) {
    const int x = static_cast<int>(e % out_size);
    const int y = static_cast<int>((e / out_size) % out_size);
    const int64_t plane = e / (int64_t(out_size) * out_size);
    const int ch = static_cast<int>(plane % c);
    const int64_t b = plane / c;
    const int sy = y - top, sx = x - left;
    const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
    const uint8_t u = inside ? images[int64_t(idx[b]) * img + (int64_t(ch) * h + sy) * w + sx] : 0;
    out[e] = common::normalize_u8(u, mean[ch], std[ch]);
  }
}

}  // namespace

void masked_adam_clamp(void* stream, int64_t count, const int64_t* idx, float* w, const float* grad,
                       float* m, float* v, float lr, float beta1, float beta2, float eps, int64_t t,
                       float grad_scale, float l1, float lo, float hi) {
  check_count("masked_adam_clamp", count);
  if (t < 1) invalid("masked_adam_clamp", "step t must be >= 1, got " + std::to_string(t));
  NNS_LAUNCH_LINEAR(masked_adam_clamp_kernel, count, as_stream(stream), idx, w, grad, m, v, beta1,
                    beta2, eps, common::adam_step_consts(lr, beta1, beta2, t), grad_scale, l1, lo,
                    hi);
}

void gather(void* stream, int64_t count, const int64_t* idx, const float* src, float* dst) {
  check_count("gather", count);
  NNS_LAUNCH_LINEAR(gather_kernel, count, as_stream(stream), idx, src, dst);
}

// Indexes must be distinct (otherwise which write lands is unspecified, unlike the CPU loop).
void scatter(void* stream, int64_t count, const int64_t* idx, const float* src, float* dst) {
  check_count("scatter", count);
  NNS_LAUNCH_LINEAR(scatter_kernel, count, as_stream(stream), idx, src, dst);
}

void lstm_pointwise_forward(void* stream, int batch, int hidden, const float* gates,
                            const float* c_prev, float* act, float* h, float* c) {
  if (batch < 0 || hidden < 0)
    invalid("lstm_pointwise_forward", "negative size (batch=" + std::to_string(batch) +
                                          " hidden=" + std::to_string(hidden) + ")");
  NNS_LAUNCH_LINEAR(lstm_forward_kernel, int64_t(batch) * hidden, as_stream(stream), hidden, gates,
                    c_prev, act, h, c);
}

void lstm_pointwise_backward(void* stream, int batch, int hidden, const float* act,
                             const float* c_prev, const float* c, const float* dh, const float* dc,
                             float* dgates, float* dc_prev) {
  if (batch < 0 || hidden < 0)
    invalid("lstm_pointwise_backward", "negative size (batch=" + std::to_string(batch) +
                                           " hidden=" + std::to_string(hidden) + ")");
  NNS_LAUNCH_LINEAR(lstm_backward_kernel, int64_t(batch) * hidden, as_stream(stream), hidden, act,
                    c_prev, c, dh, dc, dgates, dc_prev);
}

void gather_normalize_u8(void* stream, int batch, int c, int h, int w, int out_size,
                         const uint8_t* images, const int32_t* idx, const float* mean,
                         const float* std, float* out) {
  if (batch < 0 || c < 1 || h < 1 || w < 1 || out_size < h || out_size < w)
    invalid("gather_normalize_u8",
            "invalid shape (batch=" + std::to_string(batch) + " c=" + std::to_string(c) +
                " h=" + std::to_string(h) + " w=" + std::to_string(w) +
                " out_size=" + std::to_string(out_size) + "; out_size must be >= h and w)");
  NNS_LAUNCH_LINEAR(gather_normalize_u8_kernel, int64_t(batch) * c * out_size * out_size,
                    as_stream(stream), c, h, w, out_size, images, idx, mean, std, out);
}

}  // namespace nns::ops::cuda
