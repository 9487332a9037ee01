// Dropout on CUDA with the counter-based mask of kernels/common/dropout.h: element i's
// decision depends only on (seed, i), so the mask is the CPU backend's, bit for bit.
#include <string>

#include "kernels/common/dropout.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

void check_dropout(const char* op, int64_t count, float p) {
  if (!(p >= 0.0f && p <= 1.0f)) invalid(op, "p must be in [0, 1], got " + std::to_string(p));
  if (count < 0) invalid(op, "negative element count " + std::to_string(count));
}

__global__ void dropout_forward_kernel(int64_t count, float p, uint64_t seed, float scale,
                                       const float* x, float* y, uint8_t* mask) {
  NNS_GRID_STRIDE(i, count) {
    const bool keep = common::dropout_keep(seed, static_cast<uint64_t>(i), p);
    mask[i] = keep ? 1 : 0;
    y[i] = keep ? x[i] * scale : 0.0f;
  }
}

__global__ void dropout_backward_kernel(int64_t count, float scale, const uint8_t* mask,
                                        const float* dy, float* dx) {
  NNS_GRID_STRIDE(i, count) dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

}  // namespace

void dropout_forward(void* stream, int64_t count, float p, uint64_t seed, const float* x, float* y,
                     uint8_t* mask) {
  check_dropout("dropout_forward", count, p);
  NNS_LAUNCH_LINEAR(dropout_forward_kernel, count, as_stream(stream), p, seed,
                    common::dropout_scale(p), x, y, mask);
}

void dropout_backward(void* stream, int64_t count, float p, const uint8_t* mask, const float* dy,
                      float* dx) {
  check_dropout("dropout_backward", count, p);
  NNS_LAUNCH_LINEAR(dropout_backward_kernel, count, as_stream(stream), common::dropout_scale(p),
                    mask, dy, dx);
}

}  // namespace nns::ops::cuda
