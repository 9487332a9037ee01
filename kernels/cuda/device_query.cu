// CUDA device discovery. The CUDA backend proper (kernels for every op) is built in
// kernels/cuda/; this file only answers "is there a usable device".
#include <cuda_runtime.h>

#include <string>

namespace nns::cuda {

int device_count_or_reason(std::string* reason) {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (reason) *reason = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  if (n == 0 && reason) *reason = "no CUDA device found";
  return n;
}

}  // namespace nns::cuda
