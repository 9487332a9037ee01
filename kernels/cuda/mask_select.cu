// mask_select on CUDA: stream compaction with Thrust. The listed rows form a virtual sequence
// q in [0, n_rows * row_size) mapped to flat weight indexes j = rows[q / row_size] * row_size
// + q % row_size, ascending because rows are sorted; thrust::copy_if keeps the order, so the
// output is the CPU's (ascending). Thrust runs on the op's stream, its temporary storage comes
// from the stream-ordered pool (thrust_allocator), and copy_if/count_if return their count to
// the host (they synchronise the stream).
#include <thrust/copy.h>
#include <thrust/count.h>
#include <thrust/execution_policy.h>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <cstddef>
#include <string>

#include "kernels/common/method.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

// q -> flat index of the q-th element of the listed rows.
struct RowElement {
  const int32_t* rows;
  int64_t row_size;
  __host__ __device__ int64_t operator()(int64_t q) const {
    const int64_t r = q / row_size;
    return int64_t(rows[r]) * row_size + (q - r * row_size);
  }
};

struct MaskHit {
  const float* w;
  float c;
  float eps;
  __host__ __device__ bool operator()(int64_t j) const { return common::mask_hit(w[j], c, eps); }
};

// Thrust's temporary storage, stream-ordered on the op's stream.
struct StreamAllocator {
  using value_type = char;
  cudaStream_t stream;
  char* allocate(std::ptrdiff_t n) {
    return static_cast<char*>(stream_alloc(static_cast<size_t>(n > 0 ? n : 1), stream));
  }
  void deallocate(char* p, size_t) { stream_free(p, stream); }
};

}  // namespace

int64_t mask_select(void* stream, const float* w, int64_t row_size, const int32_t* rows, int n_rows,
                    float c, float eps, int64_t* out, int64_t max_out) {
  if (row_size < 0 || n_rows < 0)
    invalid("mask_select", "negative size (row_size=" + std::to_string(row_size) +
                               " n_rows=" + std::to_string(n_rows) + ")");
  const int64_t total = row_size * n_rows;
  if (total == 0) return 0;
  cudaStream_t s = as_stream(stream);
  StreamAllocator alloc{s};
  const auto policy = thrust::cuda::par(alloc).on(s);
  const auto first = thrust::make_transform_iterator(thrust::counting_iterator<int64_t>(0),
                                                     RowElement{rows, row_size});
  const auto last = first + total;
  const MaskHit hit{w, c, eps};
  // Every match fits: one pass straight into out.
  if (out && total <= max_out) return thrust::copy_if(policy, first, last, out, hit) - out;
  const int64_t count = thrust::count_if(policy, first, last, hit);
  if (!out || max_out <= 0) return count;
  if (count <= max_out) {
    thrust::copy_if(policy, first, last, out, hit);
  } else {
    // Only the first max_out matches are written: compact into a workspace, copy the prefix.
    Scratch<int64_t> all(static_cast<size_t>(count), s);
    thrust::copy_if(policy, first, last, all.get(), hit);
    NNS_CUDA_CHECK(
        cudaMemcpyAsync(out, all.get(), sizeof(int64_t) * max_out, cudaMemcpyDeviceToDevice, s));
    NNS_CUDA_CHECK(cudaStreamSynchronize(s));
  }
  return count;
}

}  // namespace nns::ops::cuda
