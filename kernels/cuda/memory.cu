// Device memory for the CUDA backend: allocations go through the caching allocator
// (kernels/cuda/allocator.h); copies and zeroing are synchronous with respect to the host and
// ordered on the legacy default stream.
#include <cuda_runtime.h>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/check.h"
#include "kernels/device.h"

namespace nns::ops::cuda_mem {

void* alloc(size_t bytes) { return cuda::CachingAllocator::global().allocate(bytes); }

void free(void* p) { cuda::CachingAllocator::global().deallocate(p); }

void copy(Device dst_dev, void* dst, Device src_dev, const void* src, size_t bytes) {
  cudaMemcpyKind kind = cudaMemcpyDefault;
  if (dst_dev == Device::CUDA && src_dev == Device::CPU) kind = cudaMemcpyHostToDevice;
  if (dst_dev == Device::CPU && src_dev == Device::CUDA) kind = cudaMemcpyDeviceToHost;
  if (dst_dev == Device::CUDA && src_dev == Device::CUDA) kind = cudaMemcpyDeviceToDevice;
  NNS_CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
}

// Queued on the legacy default stream: ordered before any later op or copy of the engine.
void zero(void* p, size_t bytes) { NNS_CUDA_CHECK(cudaMemset(p, 0, bytes)); }

}  // namespace nns::ops::cuda_mem

namespace nns::ops {
void cuda_synchronize(void* stream) {
  NNS_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}
}  // namespace nns::ops
