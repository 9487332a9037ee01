#include "kernels/cpu/scratch.h"

#include <cstdlib>
#include <new>

namespace nns::ops::cpu {

namespace {

struct ThreadBuffers {
  float* ptr[static_cast<int>(Scratch::Count)] = {};
  size_t cap[static_cast<int>(Scratch::Count)] = {};
  ~ThreadBuffers() {
    for (float* p : ptr) std::free(p);
  }
};

thread_local ThreadBuffers t_buffers;

}  // namespace

float* thread_scratch(Scratch slot, size_t count) {
  const int i = static_cast<int>(slot);
  if (count > t_buffers.cap[i]) {
    std::free(t_buffers.ptr[i]);
    t_buffers.ptr[i] = nullptr;
    t_buffers.cap[i] = 0;
    // The sizes a network asks for repeat every batch, so the largest is reached during the
    // first pass; round to whole pages (a multiple of aligned_alloc's 64 bytes).
    size_t bytes = (count * sizeof(float) + 4095) / 4096 * 4096;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    t_buffers.ptr[i] = static_cast<float*>(p);
    t_buffers.cap[i] = bytes / sizeof(float);
  }
  return t_buffers.ptr[i];
}

}  // namespace nns::ops::cpu
