// The caching device allocator (kernels/cuda/allocator.h): size classes, reuse, statistics,
// empty_cache, guard bytes, thread safety. Private allocator instances are used so the global
// one (behind every tensor) is not disturbed. Size classes need no device; the rest skips
// without one.
#if defined(NNS_HAVE_CUDA)

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/cuda/allocator.h"
#include "kernels/device.h"
#include "parity.h"  // NNS_REQUIRE_CUDA

namespace nns::ops::cuda {
namespace {

TEST(CudaAllocatorSizeClass, RoundsUpByAtMostAQuarter) {
  EXPECT_EQ(CachingAllocator::size_class(0), 512u);
  EXPECT_EQ(CachingAllocator::size_class(1), 512u);
  EXPECT_EQ(CachingAllocator::size_class(512), 512u);
  EXPECT_EQ(CachingAllocator::size_class(513), 640u);
  EXPECT_EQ(CachingAllocator::size_class(1024), 1024u);
  EXPECT_EQ(CachingAllocator::size_class(1025), 1280u);
  EXPECT_EQ(CachingAllocator::size_class(size_t(3) << 20), size_t(3) << 20);
  size_t prev = 0;
  for (size_t b = 1; b < (size_t(1) << 24); b = b * 9 / 8 + 1) {
    const size_t c = CachingAllocator::size_class(b);
    EXPECT_GE(c, b);
    EXPECT_LE(double(c), std::max(512.0, 1.25 * double(b))) << b;
    EXPECT_GE(c, prev) << "size classes must grow with the request";
    EXPECT_EQ(c % 128, 0u) << b;
    prev = c;
  }
}

TEST(CudaAllocator, ReusesFreedBlocksOfTheSameClass) {
  NNS_REQUIRE_CUDA();
  CachingAllocator a(/*guards=*/false, /*caching=*/true);
  void* p = a.allocate(1000);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 256, 0u);
  AllocatorStats s = a.stats();
  EXPECT_EQ(s.bytes_in_use, 1000u);
  EXPECT_EQ(s.device_mallocs, 1);
  a.deallocate(p);
  s = a.stats();
  EXPECT_EQ(s.bytes_in_use, 0u);
  EXPECT_EQ(s.bytes_cached, CachingAllocator::size_class(1000));
  void* q = a.allocate(900);  // same class (1024)
  EXPECT_EQ(q, p);
  s = a.stats();
  EXPECT_EQ(s.cache_hits, 1);
  EXPECT_EQ(s.device_mallocs, 1);
  EXPECT_EQ(s.bytes_cached, 0u);
  void* r = a.allocate(5000);  // another class: a new block
  EXPECT_NE(r, q);
  EXPECT_EQ(a.stats().peak_bytes_in_use, 5900u);
  a.deallocate(q);
  a.deallocate(r);
  a.reset_peak();
  EXPECT_EQ(a.stats().peak_bytes_in_use, 0u);
  a.empty_cache();
  s = a.stats();
  EXPECT_EQ(s.bytes_cached, 0u);
  EXPECT_EQ(s.bytes_reserved, 0u);
  EXPECT_EQ(s.device_frees, 2);
}

TEST(CudaAllocator, MemoryIsUsable) {
  NNS_REQUIRE_CUDA();
  CachingAllocator a(true, true);
  std::vector<float> host(1000);
  for (size_t i = 0; i < host.size(); ++i) host[i] = float(i) * 0.5f;
  void* p = a.allocate(host.size() * sizeof(float));
  ASSERT_EQ(cudaMemcpy(p, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  std::vector<float> back(host.size());
  ASSERT_EQ(cudaMemcpy(back.data(), p, back.size() * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  EXPECT_EQ(back, host);
  EXPECT_NO_THROW(a.check_guards());
  a.deallocate(p);
  EXPECT_EQ(a.stats().guard_violations, 0);
}

TEST(CudaAllocator, GuardsCatchOverrunAndUnderrun) {
  NNS_REQUIRE_CUDA();
  CachingAllocator a(/*guards=*/true, /*caching=*/true);
  char* p = static_cast<char*>(a.allocate(100));
  ASSERT_EQ(cudaMemset(p + 100, 0, 1), cudaSuccess);  // one byte past the end
  EXPECT_THROW(a.check_guards(), std::runtime_error);
  a.deallocate(p);
  EXPECT_GE(a.stats().guard_violations, 2);  // check_guards, then the free
  // The recycled block gets fresh guards.
  char* q = static_cast<char*>(a.allocate(100));
  EXPECT_NO_THROW(a.check_guards());
  ASSERT_EQ(cudaMemset(q - 1, 0, 1), cudaSuccess);  // one byte before the start
  const int64_t before = a.stats().guard_violations;
  a.deallocate(q);
  EXPECT_EQ(a.stats().guard_violations, before + 1);
}

TEST(CudaAllocator, RejectsForeignPointersAndDoubleFree) {
  NNS_REQUIRE_CUDA();
  CachingAllocator a(false, true);
  void* p = a.allocate(64);
  a.deallocate(p);
  EXPECT_THROW(a.deallocate(p), std::invalid_argument);
  int on_stack = 0;
  EXPECT_THROW(a.deallocate(&on_stack), std::invalid_argument);
  a.deallocate(nullptr);  // ignored
}

TEST(CudaAllocator, NoCacheModeReturnsMemoryAtOnce) {
  NNS_REQUIRE_CUDA();
  CachingAllocator a(false, /*caching=*/false);
  void* p = a.allocate(1 << 20);
  a.deallocate(p);
  const AllocatorStats s = a.stats();
  EXPECT_EQ(s.device_mallocs, 1);
  EXPECT_EQ(s.device_frees, 1);
  EXPECT_EQ(s.bytes_reserved, 0u);
  EXPECT_EQ(s.bytes_cached, 0u);
}

TEST(CudaAllocator, ThreadSafe) {
  NNS_REQUIRE_CUDA();
  CachingAllocator a(false, true);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&a, t] {
      std::mt19937 rng(t);
      std::uniform_int_distribution<size_t> size(1, 1 << 16);
      std::vector<void*> live;
      for (int i = 0; i < 500; ++i) {
        if (!live.empty() && (rng() % 2)) {
          a.deallocate(live.back());
          live.pop_back();
        } else {
          live.push_back(a.allocate(size(rng)));
        }
      }
      for (void* p : live) a.deallocate(p);
    });
  }
  for (auto& th : threads) th.join();
  const AllocatorStats s = a.stats();
  EXPECT_EQ(s.bytes_in_use, 0u);
  EXPECT_EQ(s.bytes_cached, s.bytes_reserved);
  EXPECT_EQ(s.allocations, s.cache_hits + s.device_mallocs);
  a.empty_cache();
  EXPECT_EQ(a.stats().bytes_reserved, 0u);
}

}  // namespace
}  // namespace nns::ops::cuda

#endif  // NNS_HAVE_CUDA
