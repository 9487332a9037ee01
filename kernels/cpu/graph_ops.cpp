// The ops of imported graphs on the CPU (kernels/ops.h): clip, hardsigmoid, broadcast binary
// ops and the strided copy. Element math from kernels/common/graph_ops.h; OpenMP over elements
// or rows above kParallelElements.
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/common/graph_ops.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace nns::ops::cpu {

namespace {

void check_count(const char* op, int64_t count) {
  if (count < 0) throw std::invalid_argument(std::string(op) + ": negative element count");
}

void check_broadcast(const char* op, const BroadcastShape& s) {
  if (s.rank < 0 || s.rank > kMaxDims)
    throw std::invalid_argument(std::string(op) + ": rank " + std::to_string(s.rank) +
                                " outside [0, " + std::to_string(kMaxDims) + "]");
  for (int i = 0; i < s.rank; ++i)
    if (s.out[i] < 1 || (s.a[i] != 1 && s.a[i] != s.out[i]) || (s.b[i] != 1 && s.b[i] != s.out[i]))
      throw std::invalid_argument(std::string(op) + ": dim " + std::to_string(i) + " of a (" +
                                  std::to_string(s.a[i]) + ") or b (" + std::to_string(s.b[i]) +
                                  ") does not broadcast to " + std::to_string(s.out[i]));
}

// y = a op b over rows of the plan's innermost dim: the operands step by 0 or 1 inside a row.
void broadcast_rows(const common::BroadcastPlan& p, Binary op, const float* a, const float* b,
                    float* y) {
  if (p.count == 0) return;
  const int last = p.rank - 1;
  const int64_t len = p.rank ? p.out[last] : 1;
  const int64_t sa = p.rank ? p.astride[last] : 0, sb = p.rank ? p.bstride[last] : 0;
  const int64_t rows = p.count / len;
#pragma omp parallel for schedule(static) if (p.count >= kParallelElements)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t oa, ob;
    common::broadcast_offsets(p, r * len, &oa, &ob);
    const float* ap = a + oa;
    const float* bp = b + ob;
    float* yp = y + r * len;
    if (op == Binary::Mul) {
      for (int64_t k = 0; k < len; ++k) yp[k] = ap[k * sa] * bp[k * sb];
    } else {
      for (int64_t k = 0; k < len; ++k) yp[k] = ap[k * sa] + bp[k * sb];
    }
  }
}

// The gradient of one operand (target) of a broadcast op.
void broadcast_grad(const common::BroadcastPlan& p, bool target_is_a, Binary op, const float* dy,
                    const float* other, float* out) {
  const int64_t n = target_is_a ? p.a_count : p.b_count;
  if (n == p.count) {
    // Not reduced: out = dy (Add) or dy * other broadcast (Mul), element by element.
    if (op == Binary::Add) {
      std::memcpy(out, dy, sizeof(float) * size_t(n));
      return;
    }
    common::BroadcastPlan q = p;  // dy plays the target, other keeps its strides
    for (int i = 0; i < q.rank; ++i) {
      q.astride[i] = q.ostride[i];
      q.bstride[i] = target_is_a ? p.bstride[i] : p.astride[i];
    }
    broadcast_rows(q, Binary::Mul, dy, other, out);
    return;
  }
#pragma omp parallel for schedule(static) if (p.count >= kParallelElements && n > 1)
  for (int64_t j = 0; j < n; ++j)
    out[j] = common::broadcast_reduce(p, target_is_a, op, j, dy, other);
}

}  // namespace

void clip_forward(int64_t count, float lo, float hi, const float* x, float* y) {
  check_count("clip_forward", count);
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) y[i] = common::clip_f(x[i], lo, hi);
}

void clip_backward(int64_t count, float lo, float hi, const float* x, const float* dy, float* dx) {
  check_count("clip_backward", count);
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) dx[i] = common::clip_backward_f(x[i], lo, hi, dy[i]);
}

void hardsigmoid_forward(int64_t count, float alpha, float beta, const float* x, float* y) {
  check_count("hardsigmoid_forward", count);
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i) y[i] = common::hardsigmoid_f(x[i], alpha, beta);
}

void hardsigmoid_backward(int64_t count, float alpha, float beta, const float* x, const float* dy,
                          float* dx) {
  check_count("hardsigmoid_backward", count);
#pragma omp parallel for simd schedule(static) if (count >= kParallelElements)
  for (int64_t i = 0; i < count; ++i)
    dx[i] = common::hardsigmoid_backward_f(x[i], alpha, beta, dy[i]);
}

void broadcast_forward(Binary op, const BroadcastShape& s, const float* a, const float* b,
                       float* y) {
  check_broadcast("broadcast_forward", s);
  broadcast_rows(common::broadcast_plan(s), op, a, b, y);
}

void broadcast_backward(Binary op, const BroadcastShape& s, const float* a, const float* b,
                        const float* dy, float* da, float* db) {
  check_broadcast("broadcast_backward", s);
  const common::BroadcastPlan p = common::broadcast_plan(s);
  if (da) broadcast_grad(p, true, op, dy, b, da);
  if (db) broadcast_grad(p, false, op, dy, a, db);
}

void copy_strided(const StridedCopy& s, const float* src, float* dst) {
  if (s.rank < 0 || s.rank > kMaxDims)
    throw std::invalid_argument("copy_strided: rank " + std::to_string(s.rank) + " outside [0, " +
                                std::to_string(kMaxDims) + "]");
  for (int i = 0; i < s.rank; ++i)
    if (s.n[i] < 0 || s.src_stride[i] < 0 || s.dst_stride[i] < 0)
      throw std::invalid_argument("copy_strided: negative size or stride in dim " +
                                  std::to_string(i));
  const StridedCopy p = common::strided_copy_plan(s);
  int64_t total = 1;
  for (int i = 0; i < s.rank; ++i) total *= s.n[i];
  if (total == 0) return;
  const int last = p.rank - 1;
  const int64_t len = p.rank ? p.n[last] : 1;
  const int64_t ss = p.rank ? p.src_stride[last] : 1, ds = p.rank ? p.dst_stride[last] : 1;
  const int64_t rows = total / len;
#pragma omp parallel for schedule(static) if (total >= kParallelElements && rows > 1)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t so, dso;
    common::strided_offsets(p, r * len, &so, &dso);
    const float* sp = src + so;
    float* dp = dst + dso;
    if (ss == 1 && ds == 1) {
      std::memcpy(dp, sp, sizeof(float) * size_t(len));
    } else {
      for (int64_t k = 0; k < len; ++k) dp[k * ds] = sp[k * ss];
    }
  }
}

}  // namespace nns::ops::cpu
