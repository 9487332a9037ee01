// The caching device allocator behind every CUDA tensor (kernels/cuda/memory.cu).
//
// cudaMalloc/cudaFree are slow and cudaFree synchronises the device; a training step allocates
// and frees the same sizes every batch. Freed blocks therefore go to a free list per (device,
// size class) and are handed out again for the next request of that class; cudaFree is called
// only by empty_cache() (or when a cudaMalloc fails: the cache is emptied and the malloc
// retried once). Thread-safe (one mutex).
//
// Size classes: requests round up to 512 bytes, then to the next of four steps per power of two
// (2^k * {1, 1.25, 1.5, 1.75}), so a cached block wastes at most 25%. A block is reused only
// for its own class.
//
// Stream semantics: a freed block can be handed out at once. This is safe for work ordered on
// one stream (or on the legacy default stream, which the engine uses: Module::ctx() passes a
// null stream). Code that frees a tensor still read by another stream must synchronise first.
// Op-internal workspaces use stream-ordered allocation instead (kernels/cuda/launch.cuh).
//
// Debugging (read once, at the first allocation):
//   NNS_CUDA_GUARD=1     each block gets 256 guard bytes before and after it, filled with a
//                        pattern and checked when the block is freed (and by check_guards());
//                        an overwrite is reported on stderr and counted in stats().
//   NNS_CUDA_NO_CACHE=1  free returns memory to the driver at once (for compute-sanitizer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace nns::ops::cuda {

struct AllocatorStats {
  size_t bytes_in_use = 0;    // requested bytes of live allocations
  size_t bytes_reserved = 0;  // bytes held from cudaMalloc (live blocks + cache, by class size)
  size_t bytes_cached = 0;    // bytes of free blocks waiting in the cache
  size_t peak_bytes_in_use = 0;
  int64_t allocations = 0;     // allocate() calls
  int64_t cache_hits = 0;      // of which served from the cache
  int64_t device_mallocs = 0;  // cudaMalloc calls
  int64_t device_frees = 0;    // cudaFree calls
  int64_t guard_violations = 0;
  bool guards_enabled = false;
  bool caching_enabled = true;
};

class CachingAllocator {
 public:
  // The process-wide allocator (never destroyed: cached blocks are released by the driver at
  // exit, after which cudaFree must not be called).
  static CachingAllocator& global();

  CachingAllocator(bool guards, bool caching);
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // Device memory of at least `bytes` (256-byte aligned) on the current device. Throws
  // std::runtime_error (with the allocator's statistics) when the device is out of memory.
  void* allocate(size_t bytes);
  // Returns a block to the cache. p must come from allocate() (std::invalid_argument
  // otherwise); null is ignored. With guards on, checks them first.
  void deallocate(void* p);
  // cudaFree of every cached (free) block, on every device.
  void empty_cache();
  // Checks the guards of every live block; throws std::runtime_error naming the first damaged
  // one. A no-op when guards are off.
  void check_guards();

  AllocatorStats stats() const;
  void reset_peak();
  // The size a request of `bytes` is rounded up to.
  static size_t size_class(size_t bytes);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nns::ops::cuda
