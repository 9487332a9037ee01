// Per-thread scratch buffers for the CPU backend. A buffer grows to the largest request it has
// seen and is reused by later calls: large per-call allocations would be returned to the
// kernel by glibc on free, and the page faults of touching them again cost more than the op.
#pragma once

#include <cstddef>

namespace nns::ops::cpu {

// Independent buffers one thread may hold at the same time.
enum class Scratch : int {
  Cols = 0,
  GemmOut = 1,
  Gather = 2,
  Partial = 3,
  Mask = 4,     // per-call tables shared read-only by the threads of one op
  Weights = 5,  // per-call repacked weights, shared read-only
  Padded = 6,   // conv_direct's zero-padded input image (nothing else may write it)
  Count = 7
};

// A 64-byte aligned buffer of at least `count` floats owned by the calling thread; its contents
// are unspecified. Valid until the same thread asks for the same slot again.
float* thread_scratch(Scratch slot, size_t count);

}  // namespace nns::ops::cpu
