// Every cuBLAS call goes through NNS_CUBLAS_CHECK: a failure throws with the file, the line, the
// failing expression and cuBLAS's own description of the status.
#pragma once

#include <cublas_v2.h>

#include <stdexcept>
#include <string>

#define NNS_CUBLAS_CHECK(expr)                                                               \
  do {                                                                                       \
    cublasStatus_t nns_status_ = (expr);                                                     \
    if (nns_status_ != CUBLAS_STATUS_SUCCESS) {                                              \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) +      \
                               ": " #expr " failed: " + cublasGetStatusString(nns_status_)); \
    }                                                                                        \
  } while (0)
