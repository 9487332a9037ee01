// Every CUDA runtime call goes through NNS_CUDA_CHECK: a failure throws with the file, the line
// and the failing expression.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#define NNS_CUDA_CHECK(expr)                                                              \
  do {                                                                                    \
    cudaError_t nns_err_ = (expr);                                                        \
    if (nns_err_ != cudaSuccess) {                                                        \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) +   \
                               ": " #expr " failed: " + cudaGetErrorString(nns_err_));    \
    }                                                                                     \
  } while (0)
