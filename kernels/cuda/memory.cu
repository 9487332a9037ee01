// Device memory for the CUDA backend (plain cudaMalloc for now; the caching allocator is part of
// the CUDA backend issue).
#include <cuda_runtime.h>

#include "kernels/cuda/check.h"
#include "kernels/device.h"

namespace nns::ops::cuda_mem {

void* alloc(size_t bytes) {
  void* p = nullptr;
  NNS_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

void free(void* p) { NNS_CUDA_CHECK(cudaFree(p)); }

void copy(Device dst_dev, void* dst, Device src_dev, const void* src, size_t bytes) {
  cudaMemcpyKind kind = cudaMemcpyDefault;
  if (dst_dev == Device::CUDA && src_dev == Device::CPU) kind = cudaMemcpyHostToDevice;
  if (dst_dev == Device::CPU && src_dev == Device::CUDA) kind = cudaMemcpyDeviceToHost;
  if (dst_dev == Device::CUDA && src_dev == Device::CUDA) kind = cudaMemcpyDeviceToDevice;
  NNS_CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
}

void zero(void* p, size_t bytes) { NNS_CUDA_CHECK(cudaMemset(p, 0, bytes)); }

}  // namespace nns::ops::cuda_mem
