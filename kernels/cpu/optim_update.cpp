// Optimizer updates on the CPU: the per-element math of kernels/common/optim.h over the tensor.
#include <stdexcept>
#include <string>

#include "kernels/common/optim.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace nns::ops::cpu {

void sgd_update(int64_t count, float* w, const float* g, float* buf, float lr, float momentum,
                float weight_decay, bool nesterov, bool first_step) {
  if (momentum != 0.0f && !buf)
    throw std::invalid_argument("sgd_update: momentum != 0 needs a momentum buffer (buf is null)");
  if (momentum == 0.0f) {
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
    for (int64_t i = 0; i < count; ++i)
      common::sgd_element(w[i], g[i], nullptr, lr, 0.0f, weight_decay, false, false);
    return;
  }
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i)
    common::sgd_element(w[i], g[i], buf + i, lr, momentum, weight_decay, nesterov, first_step);
}

void adam_update(int64_t count, float* w, const float* g, float* m, float* v, float lr,
                 float beta1, float beta2, float eps, float weight_decay, int64_t t) {
  if (t < 1) throw std::invalid_argument("adam_update: step t must be >= 1, got " + std::to_string(t));
  const common::AdamStepConsts c = common::adam_step_consts(lr, beta1, beta2, t);
#pragma omp parallel for schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i)
    common::adam_element(w[i], g[i], m[i], v[i], beta1, beta2, eps, weight_decay, c);
}

}  // namespace nns::ops::cpu
