// Element-wise ops on CUDA: activations (forward, backward from the output), the fused
// epilogue's backward, add, axpy, fill, and channel_sum. One thread per element (grid-stride);
// the activation is a template parameter so each kernel body is branch-free, with the element
// math of kernels/common/activation.h shared with the CPU backend. channel_sum uses the
// deterministic two-stage channel reduction of channel_reduce.cuh.
#include <string>

#include "kernels/common/activation.h"
#include "kernels/cuda/channel_reduce.cuh"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

template <Activation A>
__global__ void activation_forward_kernel(int64_t count, const float* x, float* y) {
  NNS_GRID_STRIDE(i, count) y[i] = common::act_forward(A, x[i]);
}

template <Activation A>
__global__ void activation_backward_kernel(int64_t count, const float* y, const float* dy,
                                           float* dx) {
  NNS_GRID_STRIDE(i, count) dx[i] = dy[i] * common::act_grad_from_output(A, y[i]);
}

// dacc = dy * act'(y) * scale[c] over y [N, C, HW]; channel of element i is (i / hw) % c.
template <Activation A>
__global__ void epilogue_backward_kernel(int64_t count, int c, int hw, const float* y,
                                         const float* dy, const float* scale, float* dacc) {
  NNS_GRID_STRIDE(i, count) {
    const float sc = scale ? scale[(i / hw) % c] : 1.0f;
    dacc[i] = dy[i] * common::act_grad_from_output(A, y[i]) * sc;
  }
}

__global__ void add_kernel(int64_t count, const float* a, const float* b, float* y) {
  NNS_GRID_STRIDE(i, count) y[i] = a[i] + b[i];
}

__global__ void axpy_kernel(int64_t count, float alpha, const float* x, float* y) {
  NNS_GRID_STRIDE(i, count) y[i] += alpha * x[i];
}

__global__ void fill_kernel(int64_t count, float value, float* y) {
  NNS_GRID_STRIDE(i, count) y[i] = value;
}

__global__ void channel_sum_finalize_kernel(int64_t c, ChannelSplit sp, const double* partial,
                                            float* out) {
  NNS_GRID_STRIDE(ch, c)
  out[ch] = static_cast<float>(channel_total<1>(partial, int(ch), sp.slices, 0));
}

[[noreturn]] void unknown_activation(const char* op, Activation act) {
  invalid(op, "unknown activation " + std::to_string(static_cast<int>(act)));
}

void check_count(const char* op, int64_t count) {
  if (count < 0) invalid(op, "negative element count " + std::to_string(count));
}

}  // namespace

void activation_forward(void* stream, Activation act, int64_t count, const float* x, float* y) {
  check_count("activation_forward", count);
  cudaStream_t s = as_stream(stream);
  switch (act) {
    case Activation::None:
      return NNS_LAUNCH_LINEAR(activation_forward_kernel<Activation::None>, count, s, x, y);
    case Activation::ReLU:
      return NNS_LAUNCH_LINEAR(activation_forward_kernel<Activation::ReLU>, count, s, x, y);
    case Activation::ReLU6:
      return NNS_LAUNCH_LINEAR(activation_forward_kernel<Activation::ReLU6>, count, s, x, y);
    case Activation::Tanh:
      return NNS_LAUNCH_LINEAR(activation_forward_kernel<Activation::Tanh>, count, s, x, y);
    case Activation::Sigmoid:
      return NNS_LAUNCH_LINEAR(activation_forward_kernel<Activation::Sigmoid>, count, s, x, y);
  }
  unknown_activation("activation_forward", act);
}

void activation_backward(void* stream, Activation act, int64_t count, const float* y,
                         const float* dy, float* dx) {
  check_count("activation_backward", count);
  cudaStream_t s = as_stream(stream);
  switch (act) {
    case Activation::None:
      return NNS_LAUNCH_LINEAR(activation_backward_kernel<Activation::None>, count, s, y, dy, dx);
    case Activation::ReLU:
      return NNS_LAUNCH_LINEAR(activation_backward_kernel<Activation::ReLU>, count, s, y, dy, dx);
    case Activation::ReLU6:
      return NNS_LAUNCH_LINEAR(activation_backward_kernel<Activation::ReLU6>, count, s, y, dy, dx);
    case Activation::Tanh:
      return NNS_LAUNCH_LINEAR(activation_backward_kernel<Activation::Tanh>, count, s, y, dy, dx);
    case Activation::Sigmoid:
      return NNS_LAUNCH_LINEAR(activation_backward_kernel<Activation::Sigmoid>, count, s, y, dy,
                               dx);
  }
  unknown_activation("activation_backward", act);
}

void epilogue_backward(void* stream, int n, int c, int hw, Activation act, const float* y,
                       const float* dy, const float* scale, float* dacc) {
  if (n < 0 || c < 1 || hw < 1)
    invalid("epilogue_backward", "invalid shape (n=" + std::to_string(n) +
                                     " c=" + std::to_string(c) + " hw=" + std::to_string(hw) + ")");
  const int64_t count = int64_t(n) * c * hw;
  cudaStream_t s = as_stream(stream);
  switch (act) {
    case Activation::None:
      return NNS_LAUNCH_LINEAR(epilogue_backward_kernel<Activation::None>, count, s, c, hw, y, dy,
                               scale, dacc);
    case Activation::ReLU:
      return NNS_LAUNCH_LINEAR(epilogue_backward_kernel<Activation::ReLU>, count, s, c, hw, y, dy,
                               scale, dacc);
    case Activation::ReLU6:
      return NNS_LAUNCH_LINEAR(epilogue_backward_kernel<Activation::ReLU6>, count, s, c, hw, y, dy,
                               scale, dacc);
    case Activation::Tanh:
      return NNS_LAUNCH_LINEAR(epilogue_backward_kernel<Activation::Tanh>, count, s, c, hw, y, dy,
                               scale, dacc);
    case Activation::Sigmoid:
      return NNS_LAUNCH_LINEAR(epilogue_backward_kernel<Activation::Sigmoid>, count, s, c, hw, y,
                               dy, scale, dacc);
  }
  unknown_activation("epilogue_backward", act);
}

void add(void* stream, int64_t count, const float* a, const float* b, float* y) {
  check_count("add", count);
  NNS_LAUNCH_LINEAR(add_kernel, count, as_stream(stream), a, b, y);
}

void axpy(void* stream, int64_t count, float alpha, const float* x, float* y) {
  check_count("axpy", count);
  NNS_LAUNCH_LINEAR(axpy_kernel, count, as_stream(stream), alpha, x, y);
}

void fill(void* stream, int64_t count, float value, float* y) {
  check_count("fill", count);
  NNS_LAUNCH_LINEAR(fill_kernel, count, as_stream(stream), value, y);
}

void channel_sum(void* stream, int n, int c, int hw, const float* x, float* out) {
  if (n < 0 || c < 0 || hw < 0)
    invalid("channel_sum", "negative size (n=" + std::to_string(n) + " c=" + std::to_string(c) +
                               " hw=" + std::to_string(hw) + ")");
  if (c == 0) return;
  cudaStream_t s = as_stream(stream);
  if (int64_t(n) * hw == 0) return fill(stream, c, 0.0f, out);
  const ChannelSplit sp = channel_split(n, hw);
  Scratch<double> partial(size_t(c) * sp.slices, s);
  channel_partials(s, c, hw, sp, SumOf{x}, partial.get());
  NNS_LAUNCH_LINEAR(channel_sum_finalize_kernel, c, s, sp, partial.get(), out);
}

}  // namespace nns::ops::cuda
