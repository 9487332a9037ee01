// Optimizer updates on CUDA: one thread per parameter element running the element math of
// kernels/common/optim.h (PyTorch SGD and Adam); the step-dependent Adam scalars are computed
// once on the host, exactly as the CPU backend does.
#include <string>

#include "kernels/common/optim.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

__global__ void sgd_plain_kernel(int64_t count, float* w, const float* g, float lr,
                                 float weight_decay) {
  NNS_GRID_STRIDE(i, count) {
    common::sgd_element(w[i], g[i], nullptr, lr, 0.0f, weight_decay, false, false);
  }
}

__global__ void sgd_momentum_kernel(int64_t count, float* w, const float* g, float* buf, float lr,
                                    float momentum, float weight_decay, bool nesterov,
                                    bool first_step) {
  NNS_GRID_STRIDE(i, count) {
    common::sgd_element(w[i], g[i], buf + i, lr, momentum, weight_decay, nesterov, first_step);
  }
}

__global__ void adam_kernel(int64_t count, float* w, const float* g, float* m, float* v,
                            float beta1, float beta2, float eps, float weight_decay,
                            common::AdamStepConsts c) {
  NNS_GRID_STRIDE(i, count) {
    common::adam_element(w[i], g[i], m[i], v[i], beta1, beta2, eps, weight_decay, c);
  }
}

}  // namespace

void sgd_update(void* stream, int64_t count, float* w, const float* g, float* buf, float lr,
                float momentum, float weight_decay, bool nesterov, bool first_step) {
  if (count < 0) invalid("sgd_update", "negative element count " + std::to_string(count));
  if (momentum != 0.0f && !buf)
    invalid("sgd_update", "momentum != 0 needs a momentum buffer (buf is null)");
  cudaStream_t s = as_stream(stream);
  if (momentum == 0.0f)
    NNS_LAUNCH_LINEAR(sgd_plain_kernel, count, s, w, g, lr, weight_decay);
  else
    NNS_LAUNCH_LINEAR(sgd_momentum_kernel, count, s, w, g, buf, lr, momentum, weight_decay,
                      nesterov, first_step);
}

void adam_update(void* stream, int64_t count, float* w, const float* g, float* m, float* v,
                 float lr, float beta1, float beta2, float eps, float weight_decay, int64_t t) {
  if (t < 1) invalid("adam_update", "step t must be >= 1, got " + std::to_string(t));
  if (count < 0) invalid("adam_update", "negative element count " + std::to_string(count));
  NNS_LAUNCH_LINEAR(adam_kernel, count, as_stream(stream), w, g, m, v, beta1, beta2, eps,
                    weight_decay, common::adam_step_consts(lr, beta1, beta2, t));
}

}  // namespace nns::ops::cuda
