// Small kernels around the GEMMs and convolutions (see gemm_aux.h).
#include <algorithm>

#include "kernels/cuda/check.h"
#include "kernels/cuda/fast_divmod.h"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/gemm_aux.h"
#include "kernels/cuda/gemm_problems.h"
#include "kernels/cuda/handles.h"
#include "kernels/cuda/reduce.cuh"

namespace nns::ops::cuda {

namespace {

constexpr int kThreads = 256;

// y [count] in place; channel of element i = (i / inner) % channels. Grid-stride.
__global__ void epilogue_inplace_kernel(int64_t count, int channels, int64_t inner, Epilogue epi,
                                        float* y) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step) {
    const int c = static_cast<int>((i / inner) % channels);
    y[i] = epilogue_at(epi, c, y[i]);
  }
}

// The selected channel of list entry j, or -1 when the entry is outside [0, c).
__device__ inline int selected(const int32_t* sel, int j, int c) {
  const int ch = sel ? sel[j] : j;
  return (ch >= 0 && ch < c) ? ch : -1;
}

// Block (j, s) sums chunk s of the n*hw elements of channel sel[j]:
// partial[j * splits + s]. Grid (n_sel, splits), kThreads threads.
__global__ void channel_subset_sum_partial_kernel(const float* x, int c, int hw, FastDivmod div_hw,
                                                  int count, const int32_t* sel, int splits,
                                                  int chunk, float* partial) {
  __shared__ float red[32];
  const int j = static_cast<int>(blockIdx.x), s = static_cast<int>(blockIdx.y);
  const int ch = selected(sel, j, c);
  float acc = 0.0f;
  if (ch >= 0) {
    const int64_t begin = int64_t(s) * chunk;
    const int64_t end = begin + chunk < count ? begin + chunk : int64_t(count);
    for (int64_t e = begin + int64_t(threadIdx.x); e < end; e += blockDim.x) {
      int img, pix;
      div_hw.divmod(static_cast<int>(e), img, pix);
      acc += x[(int64_t(img) * c + ch) * hw + pix];
    }
  }
  acc = block_reduce_sum(acc, red);
  if (threadIdx.x == 0) partial[int64_t(j) * splits + s] = acc;
}

// out[sel[j]] = sum over s of partial[j * splits + s], in order. Grid-stride over n_sel.
__global__ void channel_subset_sum_finalize_kernel(const float* partial, const int32_t* sel,
                                                   int n_sel, int c, int splits, float* out) {
  for (int j = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); j < n_sel;
       j += static_cast<int>(gridDim.x * blockDim.x)) {
    const int ch = selected(sel, j, c);
    if (ch < 0) continue;
    float acc = 0.0f;
    for (int s = 0; s < splits; ++s) acc += partial[int64_t(j) * splits + s];
    out[ch] = acc;
  }
}

// dst[r, :] = src[compact ? j : r, :] for the rows of the list. Grid-stride over
// n_rows * row_size.
__global__ void copy_selected_rows_kernel(int64_t count, const float* src, bool compact,
                                          int64_t row_size, const int32_t* rows, int total_rows,
                                          float* dst) {
  const int64_t step = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step) {
    const int j = static_cast<int>(i / row_size);
    const int64_t col = i - int64_t(j) * row_size;
    const int r = selected(rows, j, total_rows);
    if (r < 0) continue;
    dst[int64_t(r) * row_size + col] = src[(compact ? int64_t(j) : int64_t(r)) * row_size + col];
  }
}

}  // namespace

void epilogue_inplace(cudaStream_t stream, int64_t count, int channels, int64_t inner,
                      const Epilogue& epi, float* y) {
  if (count <= 0) return;
  epilogue_inplace_kernel<<<grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(
      count, channels, inner, epi, y);
  NNS_CUDA_CHECK(cudaGetLastError());
}

void channel_subset_sum(cudaStream_t stream, const float* x, int n, int c, int hw,
                        const int32_t* sel, int n_sel, float* out) {
  if (n_sel <= 0) return;
  const int count = n * hw;
  // Enough blocks to fill the device about four times, each summing >= 4096 elements.
  constexpr int kMinChunk = 4096;
  const int max_splits = std::max(1, (count + kMinChunk - 1) / kMinChunk);
  const int want = (4 * sm_count() + n_sel - 1) / n_sel;
  const int splits = std::clamp(want, 1, std::min(max_splits, 65535));
  const int chunk = (count + splits - 1) / splits;
  float* partial = static_cast<float*>(
      workspace(stream, WorkspaceSlot::Reduce, sizeof(float) * size_t(n_sel) * splits));
  const dim3 grid(static_cast<unsigned>(n_sel), static_cast<unsigned>(splits));
  channel_subset_sum_partial_kernel<<<grid, kThreads, 0, stream>>>(x, c, hw, FastDivmod(hw), count,
                                                                   sel, splits, chunk, partial);
  NNS_CUDA_CHECK(cudaGetLastError());
  channel_subset_sum_finalize_kernel<<<grid_stride_blocks(n_sel, kThreads), kThreads, 0, stream>>>(
      partial, sel, n_sel, c, splits, out);
  NNS_CUDA_CHECK(cudaGetLastError());
}

void copy_selected_rows(cudaStream_t stream, const float* src, bool src_compact, int64_t row_size,
                        const int32_t* rows, int n_rows, int total_rows, float* dst) {
  const int64_t count = int64_t(n_rows) * row_size;
  if (count <= 0) return;
  copy_selected_rows_kernel<<<grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(
      count, src, src_compact, row_size, rows, total_rows, dst);
  NNS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace nns::ops::cuda
