#include "kernels/device.h"

#include <stdexcept>

namespace nns {

#if defined(NNS_HAVE_CUDA)
namespace cuda {
int device_count_or_reason(std::string* reason);  // kernels/cuda/device_query.cu
}
#endif

const char* device_name(Device d) {
  switch (d) {
    case Device::CPU: return "cpu";
    case Device::CUDA: return "cuda";
  }
  return "?";
}

bool cuda_compiled() {
#if defined(NNS_HAVE_CUDA)
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#if defined(NNS_HAVE_CUDA)
  std::string reason;
  return cuda::device_count_or_reason(&reason);
#else
  return 0;
#endif
}

std::string cuda_unavailable_reason() {
#if defined(NNS_HAVE_CUDA)
  std::string reason;
  int n = cuda::device_count_or_reason(&reason);
  if (n > 0) return "";
  return reason.empty() ? "no CUDA device found" : reason;
#else
  return "this nnsplitter was built without the CUDA backend (configure with nvcc available and "
         "-DNNS_CUDA=ON)";
#endif
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::CPU;
  if (name == "auto") return cuda_device_count() > 0 ? Device::CUDA : Device::CPU;
  if (name == "cuda") {
    std::string why = cuda_unavailable_reason();
    if (!why.empty()) throw std::runtime_error("--device cuda requested but " + why);
    return Device::CUDA;
  }
  throw std::invalid_argument("unknown device '" + name + "' (expected cpu, cuda or auto)");
}

}  // namespace nns
