// The one launch helper of the CUDA backend, plus the pieces every kernel file shares:
//   - NNS_LAUNCH / NNS_LAUNCH_LINEAR: a checked launch that names the kernel, file and line
//     when the launch fails; the linear form takes the element count first and computes the
//     grid (tiny-cuda-nn's linear_kernel), kernels walk it with NNS_GRID_STRIDE;
//   - warp and block reductions over warp shuffles, in a fixed order (deterministic);
//   - Scratch<T>: RAII stream-ordered workspace (cudaMallocAsync/cudaFreeAsync on the op's
//     stream), so a workspace freed while its kernels are queued is never handed out too early.
// Included only by .cu files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels/cuda/check.h"

namespace nns::ops::cuda {

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Threads per block of the element-wise kernels (a multiple of the warp size, which the block
// reductions below require).
constexpr int kThreads = 256;
constexpr int kWarp = 32;
// Grids are capped; kernels use grid-stride loops, so any count is covered.
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

inline int blocks_for(int64_t count, int threads = kThreads) {
  const int64_t b = (count + threads - 1) / threads;
  return static_cast<int>(std::clamp<int64_t>(b, 1, kMaxBlocks));
}

// Where a launch happened, for the error message.
struct LaunchSite {
  const char* file;
  int line;
  const char* kernel;
};

[[noreturn]] inline void launch_failed(const LaunchSite& at, cudaError_t err) {
  throw std::runtime_error(std::string(at.file) + ":" + std::to_string(at.line) + ": launch of " +
                           at.kernel + " failed: " + cudaGetErrorString(err));
}

// kernel<<<grid, block, smem, stream>>>(args...), then the launch error (bad configuration,
// no device, an earlier sticky error) is turned into an exception naming the kernel.
// Asynchronous faults surface at the next synchronisation; run with CUDA_LAUNCH_BLOCKING=1 to
// attribute them to their kernel.
template <class... KernelArgs, class... Args>
void launch_kernel(const LaunchSite& at, void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                   size_t smem, cudaStream_t stream, Args&&... args) {
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) launch_failed(at, err);
}

// An element-wise kernel whose first parameter is the element count: the grid covers count
// elements with kThreads per block (capped, grid-stride). count <= 0 launches nothing.
template <class... KernelArgs, class... Args>
void launch_linear(const LaunchSite& at, void (*kernel)(KernelArgs...), int64_t count,
                   cudaStream_t stream, Args&&... args) {
  if (count <= 0) return;
  launch_kernel(at, kernel, dim3(blocks_for(count)), dim3(kThreads), 0, stream, count,
                std::forward<Args>(args)...);
}

}  // namespace nns::ops::cuda

// Kernel names with a comma (several template arguments) go in parentheses.
#define NNS_LAUNCH(kernel, grid, block, smem, stream, ...)                                   \
  ::nns::ops::cuda::launch_kernel(::nns::ops::cuda::LaunchSite{__FILE__, __LINE__, #kernel}, \
                                  kernel, grid, block, smem, stream, __VA_ARGS__)
#define NNS_LAUNCH_LINEAR(kernel, count, stream, ...)                                        \
  ::nns::ops::cuda::launch_linear(::nns::ops::cuda::LaunchSite{__FILE__, __LINE__, #kernel}, \
                                  kernel, count, stream, __VA_ARGS__)

// for (int64_t i = first index of this thread; i < n; i += all threads of the grid)
#define NNS_GRID_STRIDE(i, n)                                               \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(blockDim.x) * gridDim.x)

namespace nns::ops::cuda {

// ---------------------------------------------------------------------------------------------
// Reductions. All lanes of the warp must call the warp functions (full mask); the block
// functions need blockDim.x to be a multiple of 32 and every thread of the block to call them.
// The order of the additions is fixed by the lane/warp numbering, so results are bitwise
// reproducible for a given launch configuration.

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// fmaxf semantics: a NaN lane is ignored unless every lane is NaN (as std::fmax on the CPU).
__device__ __forceinline__ float warp_fmax(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the block; the result is valid in thread 0 only. Safe to call several times in a
// kernel (the shared slots are fenced before reuse).
template <class T>
__device__ T block_sum(T v) {
  __shared__ T warp_totals[kWarp];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int n_warps = (blockDim.x + kWarp - 1) / kWarp;
  v = warp_sum(v);
  __syncthreads();  // a previous call may still be reading warp_totals
  if (lane == 0) warp_totals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < n_warps ? warp_totals[lane] : T(0);
    v = warp_sum(v);
  }
  return v;
}

// Sum over the block, returned to every thread.
template <class T>
__device__ T block_sum_broadcast(T v) {
  __shared__ T total;
  v = block_sum(v);
  if (threadIdx.x == 0) total = v;
  __syncthreads();
  v = total;
  __syncthreads();  // total may be rewritten by a later call
  return v;
}

// ---------------------------------------------------------------------------------------------
// Stream-ordered workspace (kernels/cuda/allocator.cu): cudaMallocAsync/cudaFreeAsync on the
// stream, so the memory stays valid for every kernel queued before the free and the pool behind
// it recycles it without a device synchronisation. On a device without memory pools it falls
// back to cudaMalloc, and the free synchronises the stream first.
void* stream_alloc(size_t bytes, cudaStream_t stream);
void stream_free(void* p, cudaStream_t stream) noexcept;

// n elements of T (uninitialised) for the duration of an op.
template <class T>
class Scratch {
 public:
  Scratch(size_t n, cudaStream_t stream)
      : ptr_(static_cast<T*>(stream_alloc(std::max<size_t>(n, 1) * sizeof(T), stream))),
        n_(n),
        stream_(stream) {}
  ~Scratch() { stream_free(ptr_, stream_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  T* ptr_;
  size_t n_;
  cudaStream_t stream_;
};

// Shape errors are std::invalid_argument naming the op, as in the CPU backend.
[[noreturn]] inline void invalid(const char* op, const std::string& what) {
  throw std::invalid_argument(std::string(op) + ": " + what);
}

}  // namespace nns::ops::cuda
