// Element math of the ops of imported graphs (kernels/ops.h: clip, hardsigmoid, broadcast
// binary ops, strided copy), shared by the CPU and CUDA backends.
//
// Broadcasting is planned once on the host (BroadcastPlan: dims of size 1 dropped, neighbouring
// dims with the same broadcast pattern merged, element strides with 0 on broadcast dims); the
// kernels then map an output index to its operands' offsets, and a reduced operand's element
// to the run of output elements that read it.
#pragma once

#include <stdint.h>

#include "kernels/common/hd.h"
#include "kernels/ops.h"

namespace nns::ops::common {

// ---------------------------------------------------------------------------------------------
// Clip and HardSigmoid. Comparisons, not fminf/fmaxf: a NaN input stays NaN (PyTorch's clamp).
NNS_HD inline float clip_f(float x, float lo, float hi) {
  const float a = x < lo ? lo : x;
  return a > hi ? hi : a;
}
// PyTorch's hardtanh_backward: the gradient passes strictly inside (lo, hi).
NNS_HD inline float clip_backward_f(float x, float lo, float hi, float dy) {
  return (x <= lo || x >= hi) ? 0.0f : dy;
}
NNS_HD inline float hardsigmoid_f(float x, float alpha, float beta) {
  return clip_f(alpha * x + beta, 0.0f, 1.0f);
}
NNS_HD inline float hardsigmoid_backward_f(float x, float alpha, float beta, float dy) {
  const float t = alpha * x + beta;
  return (t <= 0.0f || t >= 1.0f) ? 0.0f : dy * alpha;
}

NNS_HD inline float binary_f(Binary op, float a, float b) { return op == Binary::Mul ? a * b : a + b; }

// ---------------------------------------------------------------------------------------------
// Broadcasting.
struct BroadcastPlan {
  int rank = 0;                   // after dropping 1s and merging (0: a scalar op)
  int64_t out[kMaxDims] = {};     // output dims
  int64_t ostride[kMaxDims] = {}; // contiguous output strides
  int64_t astride[kMaxDims] = {}; // a's element strides, 0 where a is broadcast
  int64_t bstride[kMaxDims] = {};
  int64_t count = 1;              // output elements
  int64_t a_count = 1, b_count = 1;
};

// The plan of a BroadcastShape (checked by the caller: a[i], b[i] in {1, out[i]}).
NNS_HD inline BroadcastPlan broadcast_plan(const BroadcastShape& s) {
  BroadcastPlan p;
  // Pattern of a dim: bit 0 = a broadcast, bit 1 = b broadcast.
  int pat[kMaxDims];
  int64_t dims[kMaxDims];
  int r = 0;
  for (int i = 0; i < s.rank; ++i) {
    if (s.out[i] == 1) continue;
    const int q = (s.a[i] == 1 ? 1 : 0) | (s.b[i] == 1 ? 2 : 0);
    if (r > 0 && pat[r - 1] == q) {
      dims[r - 1] *= s.out[i];
    } else {
      pat[r] = q;
      dims[r] = s.out[i];
      ++r;
    }
  }
  p.rank = r;
  int64_t os = 1, as = 1, bs = 1;
  for (int i = r - 1; i >= 0; --i) {
    p.out[i] = dims[i];
    p.ostride[i] = os;
    p.astride[i] = (pat[i] & 1) ? 0 : as;
    p.bstride[i] = (pat[i] & 2) ? 0 : bs;
    os *= dims[i];
    if (!(pat[i] & 1)) as *= dims[i];
    if (!(pat[i] & 2)) bs *= dims[i];
  }
  p.count = os;
  p.a_count = as;
  p.b_count = bs;
  return p;
}

// Offsets into a and b of output element o.
NNS_HD inline void broadcast_offsets(const BroadcastPlan& p, int64_t o, int64_t* oa, int64_t* ob) {
  int64_t a = 0, b = 0;
  for (int i = 0; i < p.rank; ++i) {
    const int64_t c = o / p.ostride[i];
    o -= c * p.ostride[i];
    a += c * p.astride[i];
    b += c * p.bstride[i];
  }
  *oa = a;
  *ob = b;
}

// The gradient reaching element j of operand `target` (a when target_is_a, else b) of
// y = a op b: the sum over the output elements that read it, in ascending output order, of
// dy * (Mul: the other operand, Add: 1).
NNS_HD inline float broadcast_reduce(const BroadcastPlan& p, bool target_is_a, Binary op,
                                     int64_t j, const float* dy, const float* other) {
  const int64_t* ts = target_is_a ? p.astride : p.bstride;
  const int64_t* os = target_is_a ? p.bstride : p.astride;
  // j -> coordinates on the target's own (non-broadcast) dims, outermost first.
  int64_t base_out = 0, base_other = 0;
  int red[kMaxDims];
  int n_red = 0;
  for (int i = 0; i < p.rank; ++i) {
    if (ts[i] == 0) {
      red[n_red++] = i;
      continue;
    }
    const int64_t c = j / ts[i];
    j -= c * ts[i];
    base_out += c * p.ostride[i];
    base_other += c * os[i];
  }
  int64_t idx[kMaxDims] = {};
  float acc = 0.0f;
  for (;;) {
    int64_t o = base_out, ot = base_other;
    for (int k = 0; k < n_red; ++k) {
      o += idx[k] * p.ostride[red[k]];
      ot += idx[k] * os[red[k]];
    }
    acc += op == Binary::Mul ? dy[o] * other[ot] : dy[o];
    int k = n_red - 1;
    while (k >= 0 && ++idx[k] == p.out[red[k]]) idx[k--] = 0;
    if (k < 0) break;
  }
  return acc;
}

// ---------------------------------------------------------------------------------------------
// Strided copy: dims of size 1 dropped, neighbours merged where both sides are contiguous
// across them.
NNS_HD inline StridedCopy strided_copy_plan(const StridedCopy& s) {
  StridedCopy p;
  for (int i = 0; i < s.rank; ++i) {
    if (s.n[i] == 1) continue;
    const int r = p.rank;
    if (r > 0 && p.src_stride[r - 1] == s.n[i] * s.src_stride[i] &&
        p.dst_stride[r - 1] == s.n[i] * s.dst_stride[i]) {
      p.n[r - 1] *= s.n[i];
      p.src_stride[r - 1] = s.src_stride[i];
      p.dst_stride[r - 1] = s.dst_stride[i];
    } else {
      p.n[r] = s.n[i];
      p.src_stride[r] = s.src_stride[i];
      p.dst_stride[r] = s.dst_stride[i];
      p.rank = r + 1;
    }
  }
  return p;
}

// Offsets of the e-th element (row-major over n) in src and dst.
NNS_HD inline void strided_offsets(const StridedCopy& p, int64_t e, int64_t* so, int64_t* dso) {
  int64_t s = 0, d = 0;
  for (int i = p.rank - 1; i >= 0; --i) {
    const int64_t c = e % p.n[i];
    e /= p.n[i];
    s += c * p.src_stride[i];
    d += c * p.dst_stride[i];
  }
  *so = s;
  *dso = d;
}

}  // namespace nns::ops::common
