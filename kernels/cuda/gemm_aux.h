// Small kernels around the GEMMs and convolutions: the epilogue pass after a cuBLAS / cuDNN
// call, bias gradients over a channel subset, and the copy of selected weight-gradient rows.
// Every function queues work on `stream` and returns.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/ops.h"

namespace nns::ops::cuda {

// y[i] = epilogue of channel (i / inner) % channels applied to y[i], for i < count (in place).
void epilogue_inplace(cudaStream_t stream, int64_t count, int channels, int64_t inner,
                      const Epilogue& epi, float* y);

// out[ch] = sum over img < n, pix < hw of x[(img * c + ch) * hw + pix], for ch = sel[j],
// j < n_sel (every channel, n_sel = c, when sel == nullptr). Entries of sel outside [0, c) are
// skipped; the other entries of out are left untouched. Cost proportional to n_sel; split
// partial sums are added in a fixed order (deterministic). n * hw must be < 2^31.
void channel_subset_sum(cudaStream_t stream, const float* x, int n, int c, int hw,
                        const int32_t* sel, int n_sel, float* out);

// For r = rows[j], j < n_rows (every row, n_rows = total_rows, when rows == nullptr), r in
// [0, total_rows): dst[r, :] = src[src_compact ? j : r, :], rows of row_size floats. Other rows
// of dst are left untouched.
void copy_selected_rows(cudaStream_t stream, const float* src, bool src_compact, int64_t row_size,
                        const int32_t* rows, int n_rows, int total_rows, float* dst);

}  // namespace nns::ops::cuda
