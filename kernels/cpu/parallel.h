// Thresholds for spreading the CPU backend's cheap loops over OpenMP threads: below them the
// fork/join costs more than the loop.
#pragma once

#include <cstdint>

namespace nns::ops::cpu {

// Element-wise loops: elements per call.
constexpr int64_t kParallelElements = int64_t(1) << 15;

}  // namespace nns::ops::cpu
