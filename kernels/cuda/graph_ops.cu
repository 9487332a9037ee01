// The ops of imported graphs on CUDA (kernels/ops.h): clip, hardsigmoid, broadcast binary ops
// and the strided copy. One thread per element (grid-stride), the element math and the index
// maps of kernels/common/graph_ops.h shared with the CPU backend. A reduced operand's gradient
// is a gather (one thread per operand element summing its output elements in ascending order):
// deterministic, no atomics, the CPU's order of additions.
#include <string>

#include "kernels/common/graph_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

__global__ void clip_forward_kernel(int64_t count, float lo, float hi, const float* x, float* y) {
  NNS_GRID_STRIDE(i, count) y[i] = common::clip_f(x[i], lo, hi);
}

__global__ void clip_backward_kernel(int64_t count, float lo, float hi, const float* x,
                                     const float* dy, float* dx) {
  NNS_GRID_STRIDE(i, count) dx[i] = common::clip_backward_f(x[i], lo, hi, dy[i]);
}

__global__ void hardsigmoid_forward_kernel(int64_t count, float alpha, float beta, const float* x,
                                           float* y) {
  // alpha * x + beta without contraction into an fma: the CPU's rounding.
  NNS_GRID_STRIDE(i, count) y[i] = common::clip_f(__fadd_rn(__fmul_rn(alpha, x[i]), beta), 0.0f, 1.0f);
}

__global__ void hardsigmoid_backward_kernel(int64_t count, float alpha, float beta,
                                            const float* x, const float* dy, float* dx) {
  NNS_GRID_STRIDE(i, count) {
    const float t = __fadd_rn(__fmul_rn(alpha, x[i]), beta);
    dx[i] = (t <= 0.0f || t >= 1.0f) ? 0.0f : __fmul_rn(dy[i], alpha);
  }
}

__global__ void broadcast_forward_kernel(int64_t count, common::BroadcastPlan p, Binary op,
                                         const float* a, const float* b, float* y) {
  NNS_GRID_STRIDE(o, count) {
    int64_t oa, ob;
    common::broadcast_offsets(p, o, &oa, &ob);
    y[o] = op == Binary::Mul ? __fmul_rn(a[oa], b[ob]) : __fadd_rn(a[oa], b[ob]);
  }
}

__global__ void broadcast_grad_kernel(int64_t count, common::BroadcastPlan p, bool target_is_a,
                                      Binary op, const float* dy, const float* other, float* out) {
  NNS_GRID_STRIDE(j, count) out[j] = common::broadcast_reduce(p, target_is_a, op, j, dy, other);
}

__global__ void copy_strided_kernel(int64_t count, StridedCopy p, const float* src, float* dst) {
  NNS_GRID_STRIDE(e, count) {
    int64_t so, dso;
    common::strided_offsets(p, e, &so, &dso);
    dst[dso] = src[so];
  }
}

void check_count(const char* op, int64_t count) {
  if (count < 0) invalid(op, "negative element count " + std::to_string(count));
}

void check_broadcast(const char* op, const BroadcastShape& s) {
  if (s.rank < 0 || s.rank > kMaxDims)
    invalid(op, "rank " + std::to_string(s.rank) + " outside [0, " + std::to_string(kMaxDims) + "]");
  for (int i = 0; i < s.rank; ++i)
    if (s.out[i] < 1 || (s.a[i] != 1 && s.a[i] != s.out[i]) || (s.b[i] != 1 && s.b[i] != s.out[i]))
      invalid(op, "dim " + std::to_string(i) + " of a (" + std::to_string(s.a[i]) + ") or b (" +
                      std::to_string(s.b[i]) + ") does not broadcast to " +
                      std::to_string(s.out[i]));
}

}  // namespace

void clip_forward(void* stream, int64_t count, float lo, float hi, const float* x, float* y) {
  check_count("clip_forward", count);
  NNS_LAUNCH_LINEAR(clip_forward_kernel, count, as_stream(stream), lo, hi, x, y);
}

void clip_backward(void* stream, int64_t count, float lo, float hi, const float* x,
                   const float* dy, float* dx) {
  check_count("clip_backward", count);
  NNS_LAUNCH_LINEAR(clip_backward_kernel, count, as_stream(stream), lo, hi, x, dy, dx);
}

void hardsigmoid_forward(void* stream, int64_t count, float alpha, float beta, const float* x,
                         float* y) {
  check_count("hardsigmoid_forward", count);
  NNS_LAUNCH_LINEAR(hardsigmoid_forward_kernel, count, as_stream(stream), alpha, beta, x, y);
}

void hardsigmoid_backward(void* stream, int64_t count, float alpha, float beta, const float* x,
                          const float* dy, float* dx) {
  check_count("hardsigmoid_backward", count);
  NNS_LAUNCH_LINEAR(hardsigmoid_backward_kernel, count, as_stream(stream), alpha, beta, x, dy, dx);
}

void broadcast_forward(void* stream, Binary op, const BroadcastShape& s, const float* a,
                       const float* b, float* y) {
  check_broadcast("broadcast_forward", s);
  const common::BroadcastPlan p = common::broadcast_plan(s);
  NNS_LAUNCH_LINEAR(broadcast_forward_kernel, p.count, as_stream(stream), p, op, a, b, y);
}

void broadcast_backward(void* stream, Binary op, const BroadcastShape& s, const float* a,
                        const float* b, const float* dy, float* da, float* db) {
  check_broadcast("broadcast_backward", s);
  const common::BroadcastPlan p = common::broadcast_plan(s);
  if (da)
    NNS_LAUNCH_LINEAR(broadcast_grad_kernel, p.a_count, as_stream(stream), p, true, op, dy, b, da);
  if (db)
    NNS_LAUNCH_LINEAR(broadcast_grad_kernel, p.b_count, as_stream(stream), p, false, op, dy, a, db);
}

void copy_strided(void* stream, const StridedCopy& s, const float* src, float* dst) {
  if (s.rank < 0 || s.rank > kMaxDims)
    invalid("copy_strided", "rank " + std::to_string(s.rank) + " outside [0, " +
                                std::to_string(kMaxDims) + "]");
  int64_t total = 1;
  for (int i = 0; i < s.rank; ++i) {
    if (s.n[i] < 0 || s.src_stride[i] < 0 || s.dst_stride[i] < 0)
      invalid("copy_strided", "negative size or stride in dim " + std::to_string(i));
    total *= s.n[i];
  }
  const StridedCopy p = common::strided_copy_plan(s);
  NNS_LAUNCH_LINEAR(copy_strided_kernel, total, as_stream(stream), p, src, dst);
}

}  // namespace nns::ops::cuda
