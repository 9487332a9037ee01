// Every cuDNN call goes through NNS_CUDNN_CHECK: a failure throws with the file, the line, the
// failing expression and cuDNN's own description of the status.
#pragma once

#if defined(NNS_HAVE_CUDNN)
#include <cudnn.h>

#include <stdexcept>
#include <string>

#define NNS_CUDNN_CHECK(expr)                                                              \
  do {                                                                                     \
    cudnnStatus_t nns_status_ = (expr);                                                    \
    if (nns_status_ != CUDNN_STATUS_SUCCESS) {                                             \
      throw std::runtime_error(std::string(__FILE__) + ":" + std::to_string(__LINE__) +    \
                               ": " #expr " failed: " + cudnnGetErrorString(nns_status_)); \
    }                                                                                      \
  } while (0)
#endif
