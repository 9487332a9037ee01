// Linear layers on CUDA. x [N, IN], w [OUT, IN], y [N, OUT] (row-major).
//
// Native engine (ops::gemm_engine() == GemmEngine::Native): the tiled SGEMM of
// kernels/cuda/gemm.cuh with the operands read in place (transposes by indexing, see
// kernels/cuda/gemm_problems.h):
//   forward          y  = x w^T   M = N,     N = OUT, K = IN, epilogue fused in the store
//   backward data    dx = dy w    M = N,     N = IN,  K = OUT
//   backward weight  dw[r] = sum_n dy[n, r] x[n]  M = rows listed, N = IN, K = N (split-K)
// cuBLAS engine (GemmEngine::Cublas): cublasSgemm on the column-major views of the same
// matrices (row-major [R, C] is column-major [C, R]), CUBLAS_DEFAULT_MATH (no TF32); the
// epilogue runs as a separate in-place pass, and a row subset gathers the listed dy columns
// first, so that its cost scales with the subset too. Bias gradients: gemm_aux.h for both.
//
// Row lists are read on the device and not validated (entries outside [0, OUT) are ignored).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cublas_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/gemm_aux.h"
#include "kernels/cuda/gemm_problems.h"
#include "kernels/cuda/handles.h"

namespace nns::ops::cuda {

namespace {

void check_linear(int n, int in, int out, const char* op) {
  if (n < 1 || in < 1 || out < 1)
    throw std::invalid_argument(std::string(op) +
                                " (cuda): sizes must be positive (n=" + std::to_string(n) +
                                " in=" + std::to_string(in) + " out=" + std::to_string(out) + ")");
}

// dyt [n_rows, n]: dyt[j, i] = dy[i, rows[j]] (0 for entries outside [0, out)). Grid-stride.
__global__ void gather_columns_kernel(int64_t count, const float* __restrict__ dy, int n, int out,
                                      const int32_t* __restrict__ rows, float* __restrict__ dyt) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < count; e += step) {
    const int j = static_cast<int>(e / n), i = static_cast<int>(e - int64_t(e / n) * n);
    const int r = rows[j];
    dyt[e] = (r >= 0 && r < out) ? dy[int64_t(i) * out + r] : 0.0f;
  }
}

}  // namespace

void linear_forward(void* stream, int n, int in, int out, const float* x, const float* w,
                    const Epilogue& epi, float* y) {
  check_linear(n, in, out, "linear_forward");
  const auto st = static_cast<cudaStream_t>(stream);
  if (gemm_engine() == GemmEngine::Cublas) {
    // y^T [out, n] = (w^T)^T x^T in column-major terms.
    const float one = 1.0f, zero = 0.0f;
    NNS_CUBLAS_CHECK(cublasSgemm(cublas_handle(st), CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, w,
                                 in, x, in, &zero, y, out));
    if (!epilogue_is_identity(epi)) epilogue_inplace(st, int64_t(n) * out, out, 1, epi, y);
    return;
  }
  gemm_run(make_linear_forward_gemm(n, in, out, x, w, epi, y), 1, st);
}

void linear_backward_data(void* stream, int n, int in, int out, const float* dy, const float* w,
                          float* dx) {
  check_linear(n, in, out, "linear_backward_data");
  const auto st = static_cast<cudaStream_t>(stream);
  if (gemm_engine() == GemmEngine::Cublas) {
    // dx^T [in, n] = w^T [in, out] dy^T [out, n] in column-major terms.
    const float one = 1.0f, zero = 0.0f;
    NNS_CUBLAS_CHECK(cublasSgemm(cublas_handle(st), CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, w,
                                 in, dy, out, &zero, dx, in));
    return;
  }
  gemm_run(make_linear_backward_data_gemm(n, in, out, dy, w, dx), 1, st);
}

void linear_backward_weight(void* stream, int n, int in, int out, const float* x, const float* dy,
                            float* dw, float* db, const int32_t* rows, int n_rows) {
  check_linear(n, in, out, "linear_backward_weight");
  if (rows && n_rows < 0) throw std::invalid_argument("linear_backward_weight (cuda): n_rows < 0");
  const int n_sel = rows ? n_rows : out;
  if (n_sel == 0) return;
  const auto st = static_cast<cudaStream_t>(stream);
  if (gemm_engine() == GemmEngine::Cublas) {
    const float one = 1.0f, zero = 0.0f;
    cublasHandle_t h = cublas_handle(st);
    if (!rows) {
      // dw^T [in, out] = x^T [in, n] dy [n, out] in column-major terms.
      NNS_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, in, out, n, &one, x, in, dy, out,
                                   &zero, dw, in));
    } else {
      // dyt [n_rows, n] = the listed columns of dy; dws [n_rows, in] = dyt x; then scatter.
      const int64_t count = int64_t(n_rows) * n;
      float* dyt =
          static_cast<float*>(workspace(st, WorkspaceSlot::Scratch, sizeof(float) * size_t(count)));
      float* dws = static_cast<float*>(
          workspace(st, WorkspaceSlot::Scratch2, sizeof(float) * size_t(n_rows) * in));
      gather_columns_kernel<<<grid_stride_blocks(count, 256), 256, 0, st>>>(count, dy, n, out, rows,
                                                                            dyt);
      NNS_CUDA_CHECK(cudaGetLastError());
      NNS_CUBLAS_CHECK(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, in, n_rows, n, &one, x, in, dyt, n,
                                   &zero, dws, in));
      copy_selected_rows(st, dws, /*src_compact=*/true, in, rows, n_rows, out, dw);
    }
  } else {
    gemm_run(make_linear_weight_grad_gemm(n, in, out, x, dy, dw, rows, n_rows), 1, st);
  }
  if (db) channel_subset_sum(st, dy, n, out, 1, rows, n_sel, db);
}

}  // namespace nns::ops::cuda
