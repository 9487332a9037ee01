// Dropout on the CPU with the counter-based mask of kernels/common/dropout.h: element i's
// decision depends only on (seed, i), so the split over threads does not change the mask.
#include <stdexcept>
#include <string>

#include "kernels/common/dropout.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace nns::ops::cpu {

namespace {
void check_p(float p, const char* op) {
  if (!(p >= 0.0f && p <= 1.0f))
    throw std::invalid_argument(std::string(op) + ": p must be in [0, 1], got " +
                                std::to_string(p));
}
}  // namespace

void dropout_forward(int64_t count, float p, uint64_t seed, const float* x, float* y,
                     uint8_t* mask) {
  check_p(p, "dropout_forward");
  const float scale = common::dropout_scale(p);
#pragma omp parallel for schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) {
    const bool keep = common::dropout_keep(seed, static_cast<uint64_t>(i), p);
    mask[i] = keep ? 1 : 0;
    y[i] = keep ? x[i] * scale : 0.0f;
  }
}

void dropout_backward(int64_t count, float p, const uint8_t* mask, const float* dy, float* dx) {
  check_p(p, "dropout_backward");
  const float scale = common::dropout_scale(p);
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) dx[i] = dy[i] * (mask[i] ? scale : 0.0f);
}

}  // namespace nns::ops::cpu
