// Linear layers on the CPU: one SGEMM each (OpenBLAS threads over the cores), the epilogue fused
// into a pass over the freshly written output.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/activation.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/scratch.h"

namespace nns::ops::cpu {

namespace {

void check_linear(int n, int in, int out, const char* op) {
  if (n < 1 || in < 1 || out < 1)
    throw std::invalid_argument(std::string(op) + ": sizes must be positive (n=" +
                                std::to_string(n) + " in=" + std::to_string(in) +
                                " out=" + std::to_string(out) + ")");
}

template <Activation A>
void linear_epilogue(int n, int out, const float* b, const float* sc, const float* sh, float* y) {
#pragma omp parallel for schedule(static) if (int64_t(n) * out >= kParallelElements)
  for (int i = 0; i < n; ++i) {
    float* row = y + int64_t(i) * out;
    for (int j = 0; j < out; ++j) row[j] = common::epilogue_apply(row[j], b[j], sc[j], sh[j], A);
  }
}

}  // namespace

void linear_forward(int n, int in, int out, const float* x, const float* w, const Epilogue& epi,
                    float* y) {
  check_linear(n, in, out, "linear_forward");
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, w, in, 0.0f, y,
              out);
  if (!epi.bias && !epi.scale && !epi.shift && epi.act == Activation::None) return;
  // Per-feature constants with the null defaults filled in, so the row loop has no branches.
  std::vector<float> consts(3 * size_t(out));
  float* b = consts.data();
  float* sc = b + out;
  float* sh = sc + out;
  for (int j = 0; j < out; ++j) {
    b[j] = epi.bias ? epi.bias[j] : 0.0f;
    sc[j] = epi.scale ? epi.scale[j] : 1.0f;
    sh[j] = epi.shift ? epi.shift[j] : 0.0f;
  }
  switch (epi.act) {
    case Activation::ReLU: linear_epilogue<Activation::ReLU>(n, out, b, sc, sh, y); break;
    case Activation::ReLU6: linear_epilogue<Activation::ReLU6>(n, out, b, sc, sh, y); break;
    case Activation::Tanh: linear_epilogue<Activation::Tanh>(n, out, b, sc, sh, y); break;
    case Activation::Sigmoid: linear_epilogue<Activation::Sigmoid>(n, out, b, sc, sh, y); break;
    default: linear_epilogue<Activation::None>(n, out, b, sc, sh, y); break;
  }
}

void linear_backward_data(int n, int in, int out, const float* dy, const float* w, float* dx) {
  check_linear(n, in, out, "linear_backward_data");
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, w, in, 0.0f,
              dx, in);
}

void linear_backward_weight(int n, int in, int out, const float* x, const float* dy, float* dw,
                            float* db, const int32_t* rows, int n_rows) {
  check_linear(n, in, out, "linear_backward_weight");
  if (!rows) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 0.0f,
                dw, in);
    if (db) {
      std::vector<double> acc(out, 0.0);
      for (int i = 0; i < n; ++i) {
        const float* row = dy + int64_t(i) * out;
        for (int j = 0; j < out; ++j) acc[j] += row[j];
      }
      for (int j = 0; j < out; ++j) db[j] = static_cast<float>(acc[j]);
    }
    return;
  }
  if (n_rows < 0) throw std::invalid_argument("linear_backward_weight: n_rows < 0");
  std::vector<int32_t> sel(rows, rows + n_rows);
  for (int32_t r : sel) {
    if (r < 0 || r >= out)
      throw std::out_of_range("linear_backward_weight: row index " + std::to_string(r) +
                              " outside [0, " + std::to_string(out) + ")");
  }
  std::sort(sel.begin(), sel.end());
  sel.erase(std::unique(sel.begin(), sel.end()), sel.end());
  const int nr = static_cast<int>(sel.size());
  if (nr == 0) return;
  // dy columns of the selected rows as dyT [nr, n], then dW_sel [nr, in] = dyT x: the cost
  // scales with the number of rows asked for.
  float* dyt = thread_scratch(Scratch::Gather, size_t(nr) * n);
  for (int i = 0; i < n; ++i) {
    const float* row = dy + int64_t(i) * out;
    for (int j = 0; j < nr; ++j) dyt[int64_t(j) * n + i] = row[sel[j]];
  }
  float* dws = thread_scratch(Scratch::GemmOut, size_t(nr) * in);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, in, n, 1.0f, dyt, n, x, in, 0.0f,
              dws, in);
  for (int j = 0; j < nr; ++j) {
    std::memcpy(dw + int64_t(sel[j]) * in, dws + int64_t(j) * in, sizeof(float) * in);
    if (db) {
      double acc = 0.0;
      for (int i = 0; i < n; ++i) acc += dyt[int64_t(j) * n + i];
      db[sel[j]] = static_cast<float>(acc);
    }
  }
}

}  // namespace nns::ops::cpu
