// Softmax cross-entropy and accuracy on CUDA: one warp per row (K is the number of classes),
// max and sum reduced with warp shuffles (sum in double, as on the CPU), the per-row losses
// reduced by a single block in a fixed order, and the mean loss copied to the host pointer.
// The row math matches kernels/cpu/loss.cpp; the gradient element is
// kernels/common/softmax_ce.h.
#include <climits>
#include <stdexcept>
#include <string>

#include "kernels/common/softmax_ce.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/launch.cuh"

namespace nns::ops::cuda {

namespace {

void check_sizes(const char* op, int n, int k) {
  if (n < 1 || k < 1)
    invalid(op, "sizes must be positive (n=" + std::to_string(n) + " k=" + std::to_string(k) + ")");
}

// Rows handled by warps of kThreads-thread blocks.
int warp_blocks(int64_t rows) { return blocks_for(rows * kWarp); }

// probs [N, K] = softmax(logits), row_loss[i] = -log softmax(z)[label] in double (0 for an
// invalid label, which the reduction reports).
__global__ void softmax_ce_rows_kernel(int n, int k, const float* logits, const int32_t* labels,
                                       float* probs, double* row_loss) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int64_t n_warps = int64_t(gridDim.x) * blockDim.x / kWarp;
  for (int64_t i = warp; i < n; i += n_warps) {  // warp-uniform
    const float* z = logits + i * k;
    float* p = probs + i * k;
    // zmax = fmax over the row starting from z[0] (NaNs are skipped unless all are NaN).
    float zmax = z[0];
    for (int j = lane; j < k; j += kWarp) zmax = fmaxf(zmax, z[j]);
    zmax = warp_fmax(zmax);
    double sum = 0.0;
    for (int j = lane; j < k; j += kWarp) {
      const float e = expf(z[j] - zmax);
      p[j] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    const float inv = static_cast<float>(1.0 / sum);
    for (int j = lane; j < k; j += kWarp) p[j] *= inv;
    if (lane == 0) {
      const int y = labels[i];
      // -log softmax(z)[y] = log(sum exp(z - zmax)) - (z[y] - zmax): stable when probs[y]
      // underflows.
      row_loss[i] = common::label_valid(y, k) ? log(sum) - (double(z[y]) - double(zmax)) : 0.0;
    }
  }
}

struct LossResult {
  double total;
  int bad_labels;
  int first_bad;  // INT_MAX when none
};

// One block: the sum of the row losses in a fixed order, and the invalid labels.
__global__ void softmax_ce_total_kernel(int n, int k, const int32_t* labels, const double* row_loss,
                                        LossResult* out) {
  __shared__ int first_bad;
  if (threadIdx.x == 0) first_bad = INT_MAX;
  __syncthreads();
  double total = 0.0;
  int bad = 0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    total += row_loss[i];
    if (!common::label_valid(labels[i], k)) {
      ++bad;
      atomicMin(&first_bad, i);
    }
  }
  total = block_sum(total);
  bad = block_sum(bad);
  __syncthreads();
  if (threadIdx.x == 0) {
    out->total = total;
    out->bad_labels = bad;
    out->first_bad = first_bad;
  }
}

__global__ void softmax_ce_backward_kernel(int64_t count, int k, const float* probs,
                                           const int32_t* labels, float scale, float inv_n,
                                           float* dlogits) {
  NNS_GRID_STRIDE(e, count) {
    const int64_t i = e / k;
    const int j = static_cast<int>(e - i * k);
    dlogits[e] = common::softmax_ce_grad(probs[e], j == labels[i], scale, inv_n);
  }
}

// pred[i] = first index of the row maximum (a NaN at index 0 wins, other NaNs never do: the
// CPU's sequential scan with a strict comparison); correct += (pred == label).
__global__ void argmax_rows_kernel(int n, int k, const float* logits, const int32_t* labels,
                                   int32_t* pred, unsigned long long* correct) {
  constexpr int kNone = INT_MAX;
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const int64_t n_warps = int64_t(gridDim.x) * blockDim.x / kWarp;
  for (int64_t i = warp; i < n; i += n_warps) {  // warp-uniform
    const float* z = logits + i * k;
    float bv = 0.0f;
    int bj = kNone;
    for (int j = lane; j < k; j += kWarp) {
      const float v = z[j];
      if (!isnan(v) && (bj == kNone || v > bv)) {
        bv = v;
        bj = j;
      }
    }
    // Butterfly merge: the larger value wins, the smaller index on equal values; every lane
    // ends with the same winner.
    for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, offset);
      const int oj = __shfl_xor_sync(0xffffffffu, bj, offset);
      if (oj != kNone && (bj == kNone || ov > bv || (ov == bv && oj < bj))) {
        bv = ov;
        bj = oj;
      }
    }
    if (lane == 0) {
      const int best = (isnan(z[0]) || bj == kNone) ? 0 : bj;
      if (pred) pred[i] = best;
      if (labels && labels[i] == best) atomicAdd(correct, 1ull);
    }
  }
}

}  // namespace

void softmax_cross_entropy_forward(void* stream, int n, int k, const float* logits,
                                   const int32_t* labels, float* probs, float* loss) {
  const char* op = "softmax_cross_entropy_forward";
  check_sizes(op, n, k);
  if (!labels) invalid(op, "labels is null");
  if (!loss) invalid(op, "loss (a host pointer) is null");
  cudaStream_t s = as_stream(stream);
  Scratch<double> row_loss(n, s);
  Scratch<LossResult> result(1, s);
  NNS_LAUNCH(softmax_ce_rows_kernel, dim3(warp_blocks(n)), dim3(kThreads), 0, s, n, k, logits,
             labels, probs, row_loss.get());
  NNS_LAUNCH(softmax_ce_total_kernel, dim3(1), dim3(kThreads), 0, s, n, k, labels, row_loss.get(),
             result.get());
  LossResult r;
  NNS_CUDA_CHECK(cudaMemcpyAsync(&r, result.get(), sizeof r, cudaMemcpyDeviceToHost, s));
  NNS_CUDA_CHECK(cudaStreamSynchronize(s));
  if (r.bad_labels > 0) {
    int32_t label = 0;
    NNS_CUDA_CHECK(cudaMemcpy(&label, labels + r.first_bad, sizeof label, cudaMemcpyDeviceToHost));
    throw std::out_of_range(std::string(op) + ": label " + std::to_string(label) + " of sample " +
                            std::to_string(r.first_bad) + " outside [0, " + std::to_string(k) +
                            ") (" + std::to_string(r.bad_labels) + " invalid labels)");
  }
  *loss = static_cast<float>(r.total / n);
}

// Labels are not checked here (that would need a synchronisation): an invalid label gets no
// one-hot term. The forward, which always runs first, throws on them.
void softmax_cross_entropy_backward(void* stream, int n, int k, const float* probs,
                                    const int32_t* labels, float scale, float* dlogits) {
  const char* op = "softmax_cross_entropy_backward";
  check_sizes(op, n, k);
  if (!labels) invalid(op, "labels is null");
  NNS_LAUNCH_LINEAR(softmax_ce_backward_kernel, int64_t(n) * k, as_stream(stream), k, probs, labels,
                    scale, 1.0f / float(n), dlogits);
}

int64_t argmax_accuracy(void* stream, int n, int k, const float* logits, const int32_t* labels,
                        int32_t* pred) {
  check_sizes("argmax_accuracy", n, k);
  if (!labels && !pred) return 0;
  cudaStream_t s = as_stream(stream);
  Scratch<unsigned long long> correct(1, s);
  NNS_CUDA_CHECK(cudaMemsetAsync(correct.get(), 0, sizeof(unsigned long long), s));
  NNS_LAUNCH(argmax_rows_kernel, dim3(warp_blocks(n)), dim3(kThreads), 0, s, n, k, logits, labels,
             pred, correct.get());
  if (!labels) return 0;
  unsigned long long host = 0;
  NNS_CUDA_CHECK(cudaMemcpyAsync(&host, correct.get(), sizeof host, cudaMemcpyDeviceToHost, s));
  NNS_CUDA_CHECK(cudaStreamSynchronize(s));
  return static_cast<int64_t>(host);
}

}  // namespace nns::ops::cuda
