// Softmax cross-entropy and accuracy on the CPU. Rows are independent; K is small (classes), so
// rows are spread over threads only for large batches.
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/common/softmax_ce.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace nns::ops::cpu {

namespace {

void check_labels(int n, int k, const int32_t* labels, const char* op) {
  if (n < 1 || k < 1)
    throw std::invalid_argument(std::string(op) + ": sizes must be positive (n=" +
                                std::to_string(n) + " k=" + std::to_string(k) + ")");
  if (!labels) throw std::invalid_argument(std::string(op) + ": labels is null");
  for (int i = 0; i < n; ++i) {
    if (!common::label_valid(labels[i], k))
      throw std::out_of_range(std::string(op) + ": label " + std::to_string(labels[i]) +
                              " of sample " + std::to_string(i) + " outside [0, " +
                              std::to_string(k) + ")");
  }
}

}  // namespace

void softmax_cross_entropy_forward(int n, int k, const float* logits, const int32_t* labels,
                                   float* probs, float* loss) {
  check_labels(n, k, labels, "softmax_cross_entropy_forward");
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) \
    if (int64_t(n) * k >= kParallelElements)
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * k;
    float* p = probs + int64_t(i) * k;
    float zmax = z[0];
    for (int j = 1; j < k; ++j) zmax = std::fmax(zmax, z[j]);
    double sum = 0.0;
    for (int j = 0; j < k; ++j) {
      const float e = std::exp(z[j] - zmax);
      p[j] = e;
      sum += e;
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int j = 0; j < k; ++j) p[j] *= inv;
    // -log softmax(z)[label] = log(sum exp(z - zmax)) - (z[label] - zmax), stable for large
    // logits where probs[label] underflows.
    total += std::log(sum) - (double(z[labels[i]]) - double(zmax));
  }
  *loss = static_cast<float>(total / n);
}

void softmax_cross_entropy_backward(int n, int k, const float* probs, const int32_t* labels,
                                    float scale, float* dlogits) {
  check_labels(n, k, labels, "softmax_cross_entropy_backward");
  const float inv_n = 1.0f / float(n);
#pragma omp parallel for schedule(static) if (int64_t(n) * k >= kParallelElements)
  for (int i = 0; i < n; ++i) {
    const float* p = probs + int64_t(i) * k;
    float* d = dlogits + int64_t(i) * k;
    const int y = labels[i];
    for (int j = 0; j < k; ++j) d[j] = common::softmax_ce_grad(p[j], j == y, scale, inv_n);
  }
}

int64_t argmax_accuracy(int n, int k, const float* logits, const int32_t* labels, int32_t* pred) {
  if (n < 1 || k < 1)
    throw std::invalid_argument("argmax_accuracy: sizes must be positive (n=" +
                                std::to_string(n) + " k=" + std::to_string(k) + ")");
  int64_t correct = 0;
#pragma omp parallel for schedule(static) reduction(+ : correct) \
    if (int64_t(n) * k >= kParallelElements)
  for (int i = 0; i < n; ++i) {
    const float* z = logits + int64_t(i) * k;
    int best = 0;
    for (int j = 1; j < k; ++j)
      if (z[j] > z[best]) best = j;  // strict: the first index wins ties
    if (pred) pred[i] = best;
    if (labels && labels[i] == best) ++correct;
  }
  return correct;
}

}  // namespace nns::ops::cpu
