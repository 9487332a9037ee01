// GEMM Problems (see kernels/cuda/gemm_tile.h) over plain row-major matrices: the linear layers.
// Host- and device-callable, so the host tests emulate them without a GPU.
#pragma once

#include <stdint.h>

#include "kernels/common/activation.h"
#include "kernels/common/hd.h"
#include "kernels/ops.h"

namespace nns::ops::cuda {

// The fused epilogue of kernels/ops.h for output channel c: act(scale[c] (acc + bias[c]) +
// shift[c]), null pointers meaning bias 0, scale 1, shift 0.
NNS_HD inline float epilogue_at(const Epilogue& e, int c, float acc) {
  return common::epilogue_apply(acc, e.bias ? e.bias[c] : 0.0f, e.scale ? e.scale[c] : 1.0f,
                                e.shift ? e.shift[c] : 0.0f, e.act);
}

inline bool epilogue_is_identity(const Epilogue& e) {
  return !e.bias && !e.scale && !e.shift && e.act == Activation::None;
}

// C[m, n] = v into a row-major matrix with leading dimension ldc.
struct StoreRowMajor {
  float* c;
  int ldc;
  NNS_HD void operator()(int m, int n, float v) const { c[int64_t(m) * ldc + n] = v; }
};

// y[m, n] = epilogue(v) with the per-column (output feature) epilogue of linear_forward.
struct StoreLinearEpilogue {
  float* y;
  int out;
  Epilogue epi;
  NNS_HD void operator()(int m, int n, float v) const {
    y[int64_t(m) * out + n] = epilogue_at(epi, n, v);
  }
};

// C = op(A) op(B) with row-major storage: A is [M, K] (lda) or, when TransA, [K, M]; B is [K, N]
// (ldb) or, when TransB, [N, K]. The loads walk whichever dimension is contiguous.
template <bool TransA, bool TransB, class Store>
struct DenseGemm {
  static constexpr bool kAContigK = !TransA;
  static constexpr bool kBContigN = !TransB;
  int M, N, K;
  const float* A;
  int lda;
  const float* B;
  int ldb;
  Store st;

  NNS_HD float a(int, int m, int k) const {
    return TransA ? A[int64_t(k) * lda + m] : A[int64_t(m) * lda + k];
  }
  NNS_HD float b(int, int k, int n) const {
    return TransB ? B[int64_t(n) * ldb + k] : B[int64_t(k) * ldb + n];
  }
  NNS_HD void store(int, int m, int n, float v) const { st(m, n, v); }
};

// linear_forward: y [n, out] = x [n, in] w^T (w is [out, in]) with the fused epilogue.
using LinearForwardGemm = DenseGemm<false, true, StoreLinearEpilogue>;
inline LinearForwardGemm make_linear_forward_gemm(int n, int in, int out, const float* x,
                                                  const float* w, const Epilogue& epi, float* y) {
  return LinearForwardGemm{n, out, in, x, in, w, in, StoreLinearEpilogue{y, out, epi}};
}

// linear_backward_data: dx [n, in] = dy [n, out] w [out, in].
using LinearBackwardDataGemm = DenseGemm<false, false, StoreRowMajor>;
inline LinearBackwardDataGemm make_linear_backward_data_gemm(int n, int in, int out,
                                                             const float* dy, const float* w,
                                                             float* dx) {
  return LinearBackwardDataGemm{n, in, out, dy, out, w, in, StoreRowMajor{dx, in}};
}

// linear_backward_weight for a row subset: dw[r_m, :] = sum_k dy[k, r_m] x[k, :], with
// r_m = rows[m] (all rows when rows == nullptr). M = number of rows asked for, N = in,
// K = batch: the cost scales with the subset. Entries outside [0, out) are skipped.
struct LinearWeightGradGemm {
  static constexpr bool kAContigK = false;  // A(m, k) = dy[k, r_m]: adjacent along m
  static constexpr bool kBContigN = true;
  int M, N, K;
  int out;
  const float* dy;
  const float* x;
  const int32_t* rows;
  float* dw;

  NNS_HD int row(int m) const {
    const int r = rows ? rows[m] : m;
    return (r >= 0 && r < out) ? r : -1;
  }
  NNS_HD float a(int, int m, int k) const {
    const int r = row(m);
    return r >= 0 ? dy[int64_t(k) * out + r] : 0.0f;
  }
  NNS_HD float b(int, int k, int n) const { return x[int64_t(k) * N + n]; }
  NNS_HD void store(int, int m, int n, float v) const {
    const int r = row(m);
    if (r >= 0) dw[int64_t(r) * N + n] = v;
  }
};

inline LinearWeightGradGemm make_linear_weight_grad_gemm(int n, int in, int out, const float* x,
                                                         const float* dy, float* dw,
                                                         const int32_t* rows, int n_rows) {
  return LinearWeightGradGemm{rows ? n_rows : out, in, n, out, dy, x, rows, dw};
}

}  // namespace nns::ops::cuda
