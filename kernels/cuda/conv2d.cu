// Convolution on CUDA: the entry points of kernels/ops.h and the native implicit-GEMM path.
//
// Native engine (ops::conv_engine() == ConvEngine::Native):
//   - forward, backward-data and backward-filter are implicit GEMMs (kernels/cuda/
//     conv_problems.h) run by the tiled SGEMM of kernels/cuda/gemm.cuh: no im2col buffer, the
//     input patches are gathered while loading the shared-memory tiles, padding by bounds checks;
//     the forward epilogue (bias, folded BatchNorm, activation) is applied in the store;
//   - grouped convolutions run one GEMM per group (grid z);
//   - backward-filter computes only the rows of the listed filters (M = number listed), with
//     split-K over N*OH*OW; rows not listed are never written;
//   - depthwise convolutions have direct kernels (conv2d_depthwise.cu).
// cuDNN engine (ConvEngine::Cudnn): conv2d_cudnn.cu.
//
// The filter list is read on the device (no host synchronisation); unlike the CPU backend, this
// backend does not validate it: entries outside [0, C_out) are ignored, duplicates are computed
// twice and write the same value.
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/conv2d_internal.h"
#include "kernels/cuda/conv_problems.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/gemm_aux.h"

namespace nns::ops::cuda {

namespace {

// Throws std::invalid_argument naming `op` when the shape is not a valid convolution, or when a
// tensor is too large for the 32-bit flat indexes of these kernels.
void check_conv(const Conv2dShape& s, const char* op) {
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(
        std::string(op) + " (cuda): " + what + " (n=" + std::to_string(s.n) + " c_in=" +
        std::to_string(s.c_in) + " h=" + std::to_string(s.h) + " w=" + std::to_string(s.w) +
        " c_out=" + std::to_string(s.c_out) + " k=" + std::to_string(s.kh) + "x" +
        std::to_string(s.kw) + " stride=" + std::to_string(s.stride_h) + "," +
        std::to_string(s.stride_w) + " pad=" + std::to_string(s.pad_h) + "," +
        std::to_string(s.pad_w) + " groups=" + std::to_string(s.groups) + ")");
  };
  if (s.n < 1 || s.c_in < 1 || s.h < 1 || s.w < 1 || s.c_out < 1 || s.kh < 1 || s.kw < 1)
    fail("sizes must be positive");
  if (s.stride_h < 1 || s.stride_w < 1 || s.pad_h < 0 || s.pad_w < 0)
    fail("strides must be >= 1 and padding >= 0");
  if (s.groups < 1 || s.c_in % s.groups != 0 || s.c_out % s.groups != 0)
    fail("groups must divide c_in and c_out");
  if (int64_t(s.h) + 2 * int64_t(s.pad_h) < s.kh || int64_t(s.w) + 2 * int64_t(s.pad_w) < s.kw)
    fail("kernel larger than the padded input");
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
  if (s.x_size() > kMax || s.y_size() > kMax || s.w_size() > kMax ||
      int64_t(s.kh) * s.kw * (s.c_in / s.groups) > kMax ||
      int64_t(s.kh) * s.kw * (s.c_out / s.groups) > kMax)
    fail("tensors of 2^31 or more elements are not supported by the CUDA kernels");
}

}  // namespace

void conv2d_forward(void* stream, const Conv2dShape& s, const float* x, const float* w,
                    const Epilogue& epi, float* y) {
  check_conv(s, "conv2d_forward");
  const auto st = static_cast<cudaStream_t>(stream);
  if (conv_engine() == ConvEngine::Cudnn) return conv2d_forward_cudnn(st, s, x, w, epi, y);
  if (conv_is_depthwise(s)) return depthwise_forward(st, s, x, w, epi, y);
  gemm_run(make_conv_forward_gemm(s, x, w, epi, y), s.groups, st);
}

void conv2d_backward_data(void* stream, const Conv2dShape& s, const float* dy, const float* w,
                          float* dx) {
  check_conv(s, "conv2d_backward_data");
  const auto st = static_cast<cudaStream_t>(stream);
  if (conv_engine() == ConvEngine::Cudnn) return conv2d_backward_data_cudnn(st, s, dy, w, dx);
  if (conv_is_depthwise(s)) return depthwise_backward_data(st, s, dy, w, dx);
  gemm_run(make_conv_backward_data_gemm(s, dy, w, dx), s.groups, st);
}

void conv2d_backward_filter(void* stream, const Conv2dShape& s, const float* x, const float* dy,
                            float* dw, float* db, const int32_t* filters, int n_filters) {
  check_conv(s, "conv2d_backward_filter");
  if (filters && n_filters < 0)
    throw std::invalid_argument("conv2d_backward_filter (cuda): n_filters < 0");
  const int n_sel = filters ? n_filters : s.c_out;
  if (n_sel == 0) return;
  const auto st = static_cast<cudaStream_t>(stream);
  if (conv_engine() == ConvEngine::Cudnn)
    conv2d_backward_filter_cudnn(st, s, x, dy, dw, filters, n_sel);
  else if (conv_is_depthwise(s))
    depthwise_backward_filter(st, s, x, dy, dw, filters, n_sel);
  else
    gemm_run(make_conv_backward_filter_gemm(s, x, dy, filters, n_sel, dw), s.groups, st);
  if (db) channel_subset_sum(st, dy, s.n, s.c_out, s.out_h() * s.out_w(), filters, n_sel, db);
}

}  // namespace nns::ops::cuda
