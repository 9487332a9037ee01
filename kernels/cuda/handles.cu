// Per-stream cuBLAS / cuDNN handles and growing workspaces (see handles.h).
//
// The registries are allocated once and deliberately never destroyed: their destructors would
// run during static destruction, after the CUDA runtime may have unloaded, where cublasDestroy
// or cudnnDestroy can crash. Each resource is still an RAII object, so anything erased from a
// registry (nothing is, today) would be released properly.
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cublas_check.h"
#include "kernels/cuda/cudnn_check.h"
#include "kernels/cuda/handles.h"

namespace nns::ops::cuda {

namespace {

using StreamKey = std::pair<int, cudaStream_t>;  // (device, stream)

int current_device() {
  int dev = 0;
  NNS_CUDA_CHECK(cudaGetDevice(&dev));
  return dev;
}

class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream) {
    NNS_CUBLAS_CHECK(cublasCreate(&h_));
    NNS_CUBLAS_CHECK(cublasSetStream(h_, stream));
    NNS_CUBLAS_CHECK(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH));
  }
  ~CublasHandle() {
    if (h_) cublasDestroy(h_);
  }
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

#if defined(NNS_HAVE_CUDNN)
class CudnnHandle {
 public:
  explicit CudnnHandle(cudaStream_t stream) {
    NNS_CUDNN_CHECK(cudnnCreate(&h_));
    NNS_CUDNN_CHECK(cudnnSetStream(h_, stream));
  }
  ~CudnnHandle() {
    if (h_) cudnnDestroy(h_);
  }
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
  cudnnHandle_t get() const { return h_; }

 private:
  cudnnHandle_t h_ = nullptr;
};
#endif

// A device buffer that only grows; frees and allocations are ordered on its stream.
class StreamBuffer {
 public:
  explicit StreamBuffer(cudaStream_t stream) : stream_(stream) {}
  ~StreamBuffer() {
    if (p_) cudaFreeAsync(p_, stream_);
  }
  StreamBuffer(const StreamBuffer&) = delete;
  StreamBuffer& operator=(const StreamBuffer&) = delete;

  void* reserve(size_t bytes) {
    if (bytes <= bytes_) return p_;
    // Grow by at least 1.5x (and to a whole MiB) so that a sweep of growing shapes does not
    // reallocate every call.
    constexpr size_t kMiB = size_t(1) << 20;
    size_t want = std::max(bytes, bytes_ + bytes_ / 2);
    want = (want + kMiB - 1) / kMiB * kMiB;
    if (p_) {
      NNS_CUDA_CHECK(cudaFreeAsync(p_, stream_));
      p_ = nullptr;
      bytes_ = 0;
    }
    NNS_CUDA_CHECK(cudaMallocAsync(&p_, want, stream_));
    bytes_ = want;
    return p_;
  }

 private:
  cudaStream_t stream_;
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

struct StreamResources {
  explicit StreamResources(cudaStream_t s) : stream(s) {}
  cudaStream_t stream;
  std::unique_ptr<CublasHandle> cublas;
#if defined(NNS_HAVE_CUDNN)
  std::unique_ptr<CudnnHandle> cudnn;
#endif
  std::unique_ptr<StreamBuffer> buffers[static_cast<int>(WorkspaceSlot::Count)];
};

struct Registry {
  std::mutex mu;
  std::map<StreamKey, std::unique_ptr<StreamResources>> streams;
  std::map<int, int> sms;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed, see the file comment
  return *r;
}

// The resources of (current device, stream); the caller holds the registry lock.
StreamResources& resources_locked(Registry& r, cudaStream_t stream) {
  const StreamKey key{current_device(), stream};
  auto it = r.streams.find(key);
  if (it == r.streams.end())
    it = r.streams.emplace(key, std::make_unique<StreamResources>(stream)).first;
  return *it->second;
}

}  // namespace

int sm_count() {
  Registry& r = registry();
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.sms.find(dev);
  if (it != r.sms.end()) return it->second;
  int n = 0;
  NNS_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  n = std::max(n, 1);
  r.sms.emplace(dev, n);
  return n;
}

cublasHandle_t cublas_handle(cudaStream_t stream) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  StreamResources& res = resources_locked(r, stream);
  if (!res.cublas) res.cublas = std::make_unique<CublasHandle>(stream);
  return res.cublas->get();
}

#if defined(NNS_HAVE_CUDNN)
cudnnHandle_t cudnn_handle(cudaStream_t stream) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  StreamResources& res = resources_locked(r, stream);
  if (!res.cudnn) res.cudnn = std::make_unique<CudnnHandle>(stream);
  return res.cudnn->get();
}
#endif

void* workspace(cudaStream_t stream, WorkspaceSlot slot, size_t bytes) {
  if (bytes == 0) return nullptr;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  StreamResources& res = resources_locked(r, stream);
  auto& buf = res.buffers[static_cast<int>(slot)];
  if (!buf) buf = std::make_unique<StreamBuffer>(stream);
  return buf->reserve(bytes);
}

}  // namespace nns::ops::cuda
