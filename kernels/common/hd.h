// NNS_HD marks the element functions of kernels/common/ as callable from both host code and
// CUDA device code, so the CPU backend (and its tests) run the exact math of the GPU kernels.
#pragma once

#ifdef __CUDACC__
#define NNS_HD __host__ __device__
#else
#define NNS_HD
#endif
