// Element-wise ops on the CPU: OpenMP over elements (or channels) above a size threshold, simd
// inner loops; the activation is a template parameter so each loop body is branch-free.
#include <omp.h>

#include <stdexcept>
#include <string>

#include "kernels/common/activation.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace nns::ops::cpu {

namespace {

template <Activation A>
void act_fwd(int64_t count, const float* x, float* y) {
#pragma omp parallel for schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) y[i] = common::act_forward(A, x[i]);
}

template <Activation A>
void act_bwd(int64_t count, const float* y, const float* dy, float* dx) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) dx[i] = common::act_backward(A, y[i], dy[i]);
}

template <Activation A>
void epi_bwd(int n, int c, int hw, const float* y, const float* dy, const float* scale,
             float* dacc) {
  const int64_t planes = int64_t(n) * c;
#pragma omp parallel for schedule(static) if (planes * hw >= kParallelElements)
  for (int64_t p = 0; p < planes; ++p) {
    const float sc = scale ? scale[p % c] : 1.0f;
    const int64_t off = p * hw;
#pragma omp simd
    for (int k = 0; k < hw; ++k)
      dacc[off + k] = common::act_backward(A, y[off + k], dy[off + k]) * sc;
  }
}

}  // namespace

void activation_forward(Activation act, int64_t count, const float* x, float* y) {
  switch (act) {
    case Activation::ReLU: return act_fwd<Activation::ReLU>(count, x, y);
    case Activation::ReLU6: return act_fwd<Activation::ReLU6>(count, x, y);
    case Activation::Tanh: return act_fwd<Activation::Tanh>(count, x, y);
    case Activation::Sigmoid: return act_fwd<Activation::Sigmoid>(count, x, y);
    case Activation::None: return act_fwd<Activation::None>(count, x, y);
  }
  throw std::invalid_argument("activation_forward: unknown activation " +
                              std::to_string(static_cast<int>(act)));
}

void activation_backward(Activation act, int64_t count, const float* y, const float* dy,
                         float* dx) {
  switch (act) {
    case Activation::ReLU: return act_bwd<Activation::ReLU>(count, y, dy, dx);
    case Activation::ReLU6: return act_bwd<Activation::ReLU6>(count, y, dy, dx);
    case Activation::Tanh: return act_bwd<Activation::Tanh>(count, y, dy, dx);
    case Activation::Sigmoid: return act_bwd<Activation::Sigmoid>(count, y, dy, dx);
    case Activation::None: return act_bwd<Activation::None>(count, y, dy, dx);
  }
  throw std::invalid_argument("activation_backward: unknown activation " +
                              std::to_string(static_cast<int>(act)));
}

void epilogue_backward(int n, int c, int hw, Activation act, const float* y, const float* dy,
                       const float* scale, float* dacc) {
  switch (act) {
    case Activation::ReLU: return epi_bwd<Activation::ReLU>(n, c, hw, y, dy, scale, dacc);
    case Activation::ReLU6: return epi_bwd<Activation::ReLU6>(n, c, hw, y, dy, scale, dacc);
    case Activation::Tanh: return epi_bwd<Activation::Tanh>(n, c, hw, y, dy, scale, dacc);
    case Activation::Sigmoid: return epi_bwd<Activation::Sigmoid>(n, c, hw, y, dy, scale, dacc);
    case Activation::None: return epi_bwd<Activation::None>(n, c, hw, y, dy, scale, dacc);
  }
  throw std::invalid_argument("epilogue_backward: unknown activation " +
                              std::to_string(static_cast<int>(act)));
}

void add(int64_t count, const float* a, const float* b, float* y) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) y[i] = a[i] + b[i];
}

void axpy(int64_t count, float alpha, const float* x, float* y) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) y[i] += alpha * x[i];
}

void fill(int64_t count, float value, float* y) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) y[i] = value;
}

void channel_sum(int n, int c, int hw, const float* x, float* out) {
#pragma omp parallel for schedule(static) if (int64_t(n) * c * hw >= kParallelElements)
  for (int ch = 0; ch < c; ++ch) {
    double total = 0.0;
    for (int i = 0; i < n; ++i) {
      const float* p = x + (int64_t(i) * c + ch) * hw;
      float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
      for (int k = 0; k < hw; ++k) acc += p[k];
      total += acc;
    }
    out[ch] = static_cast<float>(total);
  }
}

}  // namespace nns::ops::cpu
