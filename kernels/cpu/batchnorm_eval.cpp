// Backward of eval-mode BatchNorm (frozen statistics): used by eval-mode gradients (the
// obfuscator runs the model in eval mode) and by attacks that fine-tune in eval mode.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace nns::ops::cpu {

void batchnorm_backward_eval(int n, int c, int hw, const float* x, const float* dy,
                             const float* gamma, const float* running_mean,
                             const float* running_var, float eps, float* dx, float* dgamma,
                             float* dbeta) {
#pragma omp parallel for schedule(static)
  for (int ch = 0; ch < c; ++ch) {
    const float invstd = 1.0f / std::sqrt(running_var[ch] + eps);
    const float mean = running_mean[ch];
    const float k = (gamma ? gamma[ch] : 1.0f) * invstd;
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int i = 0; i < n; ++i) {
      const int64_t off = (int64_t(i) * c + ch) * hw;
      const float* xp = x + off;
      const float* dyp = dy + off;
      float s1 = 0, s2 = 0;
      for (int j = 0; j < hw; ++j) {
        s1 += dyp[j];
        s2 += dyp[j] * (xp[j] - mean);
      }
      sum_dy += s1;
      sum_dy_xhat += s2;
      if (dx) {
        float* dxp = dx + off;
        for (int j = 0; j < hw; ++j) dxp[j] = dyp[j] * k;
      }
    }
    if (dgamma) dgamma[ch] = static_cast<float>(sum_dy_xhat * invstd);
    if (dbeta) dbeta[ch] = static_cast<float>(sum_dy);
  }
}

}  // namespace nns::ops::cpu
