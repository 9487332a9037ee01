// The caching device allocator (see allocator.h), and the stream-ordered workspace allocation
// of the ops (stream_alloc/stream_free, declared in launch.cuh).
#include <cuda_runtime.h>

#include <atomic>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/cuda/allocator.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

constexpr size_t kMinClass = 512;
// Guard bytes on each side (a multiple of 256 keeps the user pointer 256-byte aligned).
constexpr size_t kGuard = 256;
constexpr unsigned char kGuardByte = 0xA5;

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

std::string mib(size_t bytes) { return std::to_string(bytes / (1024.0 * 1024.0)) + " MiB"; }

}  // namespace

struct CachingAllocator::Impl {
  struct Block {
    void* base;  // what cudaMalloc returned
    size_t class_bytes;
    size_t requested;  // bytes asked for (the user region)
    int device;
  };
  bool guards;
  bool caching;
  mutable std::mutex mu;
  std::unordered_map<void*, Block> live;                            // by user pointer
  std::map<std::pair<int, size_t>, std::vector<void*>> free_lists;  // (device, class) -> bases
  AllocatorStats st;

  void* device_malloc(size_t bytes, int device) {
    void* p = nullptr;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation && !free_lists.empty()) {
      cudaGetLastError();  // clear, then retry with the cache handed back to the driver
      release_cache();
      err = cudaMalloc(&p, bytes);
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      throw std::runtime_error("CUDA caching allocator: cudaMalloc of " + std::to_string(bytes) +
                               " bytes on device " + std::to_string(device) + " failed (" +
                               cudaGetErrorString(err) + "); in use " + mib(st.bytes_in_use) +
                               ", reserved " + mib(st.bytes_reserved) + ", peak " +
                               mib(st.peak_bytes_in_use));
    }
    ++st.device_mallocs;
    st.bytes_reserved += bytes;
    return p;
  }

  void device_free(void* base, size_t class_bytes) {
    NNS_CUDA_CHECK(cudaFree(base));
    ++st.device_frees;
    st.bytes_reserved -= class_bytes;
  }

  void release_cache() {
    for (auto& [key, bases] : free_lists) {
      for (void* b : bases) {
        device_free(b, key.second);
        st.bytes_cached -= key.second;
      }
    }
    free_lists.clear();
  }

  void write_guards(const Block& b) {
    char* user = static_cast<char*>(b.base) + kGuard;
    NNS_CUDA_CHECK(cudaMemset(b.base, kGuardByte, kGuard));
    NNS_CUDA_CHECK(cudaMemset(user + b.requested, kGuardByte, kGuard));
  }

  // Empty string when intact, else a description of the damage.
  std::string damaged_guards(const Block& b) {
    unsigned char head[kGuard], tail[kGuard];
    const char* user = static_cast<const char*>(b.base) + kGuard;
    NNS_CUDA_CHECK(cudaMemcpy(head, b.base, kGuard, cudaMemcpyDeviceToHost));
    NNS_CUDA_CHECK(cudaMemcpy(tail, user + b.requested, kGuard, cudaMemcpyDeviceToHost));
    std::string what;
    for (size_t i = 0; i < kGuard; ++i) {
      if (head[kGuard - 1 - i] != kGuardByte) {
        what += "underrun: byte " + std::to_string(i + 1) + " before the block was overwritten; ";
        break;
      }
    }
    for (size_t i = 0; i < kGuard; ++i) {
      if (tail[i] != kGuardByte) {
        what += "overrun: byte " + std::to_string(i) + " past the end was overwritten; ";
        break;
      }
    }
    return what;
  }
};

CachingAllocator& CachingAllocator::global() {
  static CachingAllocator* a =
      new CachingAllocator(env_flag("NNS_CUDA_GUARD"), !env_flag("NNS_CUDA_NO_CACHE"));
  return *a;
}

CachingAllocator::CachingAllocator(bool guards, bool caching) : impl_(new Impl) {
  impl_->guards = guards;
  impl_->caching = caching;
  impl_->st.guards_enabled = guards;
  impl_->st.caching_enabled = caching;
}

CachingAllocator::~CachingAllocator() {
  // A non-global allocator (tests) gives its cache back; live blocks are the owner's leak.
  try {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->release_cache();
  } catch (...) {
  }
}

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes <= kMinClass) return kMinClass;
  const size_t p = std::bit_floor(bytes);
  const size_t step = p / 4;
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes) {
  if (bytes == 0) bytes = 1;
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  int device = 0;
  NNS_CUDA_CHECK(cudaGetDevice(&device));
  const size_t cls = size_class(bytes + (m.guards ? 2 * kGuard : 0));
  ++m.st.allocations;
  void* base = nullptr;
  if (m.caching) {
    auto it = m.free_lists.find({device, cls});
    if (it != m.free_lists.end() && !it->second.empty()) {
      base = it->second.back();
      it->second.pop_back();
      if (it->second.empty()) m.free_lists.erase(it);
      m.st.bytes_cached -= cls;
      ++m.st.cache_hits;
    }
  }
  if (!base) base = m.device_malloc(cls, device);
  Impl::Block b{base, cls, bytes, device};
  void* user = static_cast<char*>(base) + (m.guards ? kGuard : 0);
  if (m.guards) m.write_guards(b);
  m.live.emplace(user, b);
  m.st.bytes_in_use += bytes;
  if (m.st.bytes_in_use > m.st.peak_bytes_in_use) m.st.peak_bytes_in_use = m.st.bytes_in_use;
  return user;
}

void CachingAllocator::deallocate(void* p) {
  if (!p) return;
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  auto it = m.live.find(p);
  if (it == m.live.end())
    throw std::invalid_argument(
        "CUDA caching allocator: free of a pointer it did not allocate (or "
        "a double free)");
  const Impl::Block b = it->second;
  m.live.erase(it);
  m.st.bytes_in_use -= b.requested;
  if (m.guards) {
    const std::string what = m.damaged_guards(b);
    if (!what.empty()) {
      ++m.st.guard_violations;
      std::fprintf(stderr,
                   "nnsplitter: CUDA guard bytes damaged for the block of %zu bytes at %p: %s\n",
                   b.requested, p, what.c_str());
    }
  }
  if (m.caching) {
    m.free_lists[{b.device, b.class_bytes}].push_back(b.base);
    m.st.bytes_cached += b.class_bytes;
  } else {
    m.device_free(b.base, b.class_bytes);
  }
}

void CachingAllocator::empty_cache() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  m.release_cache();
  // The stream-ordered pool of op workspaces keeps memory too (stream_pools_ready).
  int device = 0;
  if (cudaGetDevice(&device) == cudaSuccess) {
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
  }
  cudaGetLastError();
}

void CachingAllocator::check_guards() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  if (!m.guards) return;
  for (const auto& [user, b] : m.live) {
    const std::string what = m.damaged_guards(b);
    if (!what.empty()) {
      ++m.st.guard_violations;
      char addr[32];
      std::snprintf(addr, sizeof addr, "%p", user);
      throw std::runtime_error("CUDA guard bytes damaged for the live block of " +
                               std::to_string(b.requested) + " bytes at " + addr + ": " + what);
    }
  }
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->st;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->st.peak_bytes_in_use = impl_->st.bytes_in_use;
}

namespace {

// Per device, once: whether it has stream-ordered memory pools, and if so a release threshold
// that keeps freed pool memory cached (by default the pool returns it to the driver at every
// synchronisation, and op workspaces are allocated and freed every call; empty_cache() trims it).
bool stream_pools_ready() {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> state[kMaxDevices] = {};  // 0 unknown, 1 pools, 2 no pools
  int device = 0;
  NNS_CUDA_CHECK(cudaGetDevice(&device));
  if (device < 0 || device >= kMaxDevices) return false;
  const int s = state[device].load(std::memory_order_acquire);
  if (s != 0) return s == 1;
  int supported = 0;
  NNS_CUDA_CHECK(cudaDeviceGetAttribute(&supported, cudaDevAttrMemoryPoolsSupported, device));
  if (supported) {
    cudaMemPool_t pool;
    NNS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    NNS_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  }
  state[device].store(supported ? 1 : 2, std::memory_order_release);
  return supported != 0;
}

}  // namespace

void* stream_alloc(size_t bytes, cudaStream_t stream) {
  void* p = nullptr;
  if (bytes == 0) bytes = 1;
  if (stream_pools_ready())
    NNS_CUDA_CHECK(cudaMallocAsync(&p, bytes, stream));
  else
    NNS_CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

void stream_free(void* p, cudaStream_t stream) noexcept {
  if (!p) return;
  try {
    if (stream_pools_ready()) {
      cudaFreeAsync(p, stream);
    } else {
      cudaStreamSynchronize(stream);
      cudaFree(p);
    }
  } catch (...) {
  }
}

}  // namespace nns::ops::cuda
