// Allocation and copies for both devices. CPU memory is 64-byte aligned (AVX-512 friendly).
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/ops.h"

namespace nns::ops {

#if defined(NNS_HAVE_CUDA)
namespace cuda_mem {  // kernels/cuda/memory.cu
void* alloc(size_t bytes);
void free(void* p);
void copy(Device dst_dev, void* dst, Device src_dev, const void* src, size_t bytes);
void zero(void* p, size_t bytes);
}  // namespace cuda_mem
#endif

namespace {
[[maybe_unused]] [[noreturn]] void no_cuda() {
  throw std::runtime_error("CUDA memory requested but this nnsplitter was built without CUDA");
}
}  // namespace

void* device_alloc(Device dev, size_t bytes) {
  if (bytes == 0) bytes = 1;
  if (dev == Device::CPU) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    return p;
  }
#if defined(NNS_HAVE_CUDA)
  return cuda_mem::alloc(bytes);
#else
  no_cuda();
#endif
}

void device_free(Device dev, void* p) {
  if (!p) return;
  if (dev == Device::CPU) {
    std::free(p);
    return;
  }
#if defined(NNS_HAVE_CUDA)
  cuda_mem::free(p);
#else
  no_cuda();
#endif
}

void copy_bytes(Device dst_dev, void* dst, Device src_dev, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev == Device::CPU && src_dev == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
#if defined(NNS_HAVE_CUDA)
  cuda_mem::copy(dst_dev, dst, src_dev, src, bytes);
#else
  no_cuda();
#endif
}

void zero_bytes(Device dev, void* p, size_t bytes) {
  if (bytes == 0) return;
  if (dev == Device::CPU) {
    std::memset(p, 0, bytes);
    return;
  }
#if defined(NNS_HAVE_CUDA)
  cuda_mem::zero(p, bytes);
#else
  no_cuda();
#endif
}

}  // namespace nns::ops
