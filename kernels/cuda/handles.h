// Per-stream library handles and workspaces of the CUDA conv/GEMM kernels.
//
// A cuBLAS / cuDNN handle is bound to one stream, so each (device, stream) pair gets its own,
// created on first use. Workspaces are growing device buffers, one per (device, stream, slot):
// a request larger than the current buffer frees it and allocates a bigger one, both
// stream-ordered (cudaFreeAsync / cudaMallocAsync on that stream), so work already queued on the
// stream keeps using the old buffer safely. A pointer stays valid for work queued on the same
// stream until the next request of the same slot; one op that needs two buffers at the same
// time asks for two slots.
//
// Lookups are thread-safe; a handle or workspace must not be used by two host threads at once
// (the same rule as for the stream itself).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

#if defined(NNS_HAVE_CUDNN)
#include <cudnn.h>
#endif

namespace nns::ops::cuda {

// Streaming multiprocessors of the current device (cached per device).
int sm_count();

// The cuBLAS handle of `stream` on the current device. Math mode CUBLAS_DEFAULT_MATH: FP32
// SGEMM runs on FMA units, TF32 tensor cores are not used.
cublasHandle_t cublas_handle(cudaStream_t stream);

#if defined(NNS_HAVE_CUDNN)
// The cuDNN handle of `stream` on the current device.
cudnnHandle_t cudnn_handle(cudaStream_t stream);
#endif

enum class WorkspaceSlot : int {
  SplitK = 0,    // partial sums of split-K GEMMs and split reductions
  Library = 1,   // the workspace cuDNN asks for
  Scratch = 2,   // a full-size intermediate (cuDNN's full dW, gathered GEMM operands)
  Scratch2 = 3,  // a second intermediate needed at the same time as Scratch
  Reduce = 4,    // partial sums of the bias-gradient reductions
  Count = 5
};

// At least `bytes` of device memory for work queued on `stream` (nullptr when bytes == 0).
void* workspace(cudaStream_t stream, WorkspaceSlot slot, size_t bytes);

}  // namespace nns::ops::cuda
