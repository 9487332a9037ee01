// The cuDNN engine of the convolutions (ops::conv_engine() == ConvEngine::Cudnn), a reference
// fast path next to the native kernels.
//
// - Descriptors are built once per (device, shape) and cached; the algorithm of each direction
//   is chosen once, on first use, from cuDNN's heuristics (no benchmarking): FP32 FMA kernels
//   only (CUDNN_FMA_MATH, so no TF32 tensor cores even on Ampere/Hopper), deterministic ones
//   preferred.
// - The workspace cuDNN asks for comes from the stream's growing buffer (handles.h).
// - The forward epilogue is applied by a small in-place kernel after cudnnConvolutionForward.
// - Filter subsets: cuDNN cannot restrict a weight gradient to some output filters, so with a
//   list dW is computed in full into scratch memory (the cost of the whole layer) and the listed
//   rows are copied out; the other rows of dw stay untouched as the contract requires.
#include <stdexcept>
#include <string>

#include "kernels/cuda/conv2d_internal.h"

#if defined(NNS_HAVE_CUDNN)
#include <cudnn.h>

#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cudnn_check.h"
#include "kernels/cuda/gemm_aux.h"
#include "kernels/cuda/gemm_problems.h"
#include "kernels/cuda/handles.h"
#endif

namespace nns::ops::cuda {

#if defined(NNS_HAVE_CUDNN)

namespace {

std::string describe(const Conv2dShape& s) {
  return "n=" + std::to_string(s.n) + " c_in=" + std::to_string(s.c_in) + " " +
         std::to_string(s.h) + "x" + std::to_string(s.w) + " c_out=" + std::to_string(s.c_out) +
         " k=" + std::to_string(s.kh) + "x" + std::to_string(s.kw) +
         " stride=" + std::to_string(s.stride_h) + "," + std::to_string(s.stride_w) +
         " pad=" + std::to_string(s.pad_h) + "," + std::to_string(s.pad_w) +
         " groups=" + std::to_string(s.groups);
}

class TensorDesc {
 public:
  TensorDesc(int n, int c, int h, int w) {
    NNS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d_));
    NNS_CUDNN_CHECK(
        cudnnSetTensor4dDescriptor(d_, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w));
  }
  ~TensorDesc() {
    if (d_) cudnnDestroyTensorDescriptor(d_);
  }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  cudnnTensorDescriptor_t get() const { return d_; }

 private:
  cudnnTensorDescriptor_t d_ = nullptr;
};

class FilterDesc {
 public:
  FilterDesc(int k, int c, int h, int w) {
    NNS_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d_));
    NNS_CUDNN_CHECK(
        cudnnSetFilter4dDescriptor(d_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, k, c, h, w));
  }
  ~FilterDesc() {
    if (d_) cudnnDestroyFilterDescriptor(d_);
  }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
  cudnnFilterDescriptor_t get() const { return d_; }

 private:
  cudnnFilterDescriptor_t d_ = nullptr;
};

class ConvDesc {
 public:
  explicit ConvDesc(const Conv2dShape& s) {
    NNS_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d_));
    NNS_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d_, s.pad_h, s.pad_w, s.stride_h, s.stride_w, 1,
                                                    1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    NNS_CUDNN_CHECK(cudnnSetConvolutionGroupCount(d_, s.groups));
    // CUDNN_DEFAULT_MATH still permits TF32 on A100 and later; FMA_MATH keeps full FP32.
    NNS_CUDNN_CHECK(cudnnSetConvolutionMathType(d_, CUDNN_FMA_MATH));
  }
  ~ConvDesc() {
    if (d_) cudnnDestroyConvolutionDescriptor(d_);
  }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
  cudnnConvolutionDescriptor_t get() const { return d_; }

 private:
  cudnnConvolutionDescriptor_t d_ = nullptr;
};

template <class Algo>
struct AlgoChoice {
  Algo algo;
  size_t workspace_bytes;
};

// Descriptors of one convolution shape, and the algorithm of each direction once chosen.
struct ConvPlan {
  explicit ConvPlan(const Conv2dShape& s)
      : x(s.n, s.c_in, s.h, s.w),
        y(s.n, s.c_out, s.out_h(), s.out_w()),
        w(s.c_out, s.c_in / s.groups, s.kh, s.kw),
        conv(s) {
    int n = 0, c = 0, h = 0, wd = 0;
    NNS_CUDNN_CHECK(
        cudnnGetConvolution2dForwardOutputDim(conv.get(), x.get(), w.get(), &n, &c, &h, &wd));
    if (n != s.n || c != s.c_out || h != s.out_h() || wd != s.out_w())
      throw std::logic_error("cuDNN disagrees on the output shape of " + describe(s));
  }
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  std::optional<AlgoChoice<cudnnConvolutionFwdAlgo_t>> fwd;
  std::optional<AlgoChoice<cudnnConvolutionBwdDataAlgo_t>> bwd_data;
  std::optional<AlgoChoice<cudnnConvolutionBwdFilterAlgo_t>> bwd_filter;
};

struct PlanCache {
  std::mutex mu;
  std::map<std::array<int, 14>, std::unique_ptr<ConvPlan>> plans;
};

PlanCache& plan_cache() {
  static PlanCache* c = new PlanCache();  // never destroyed: see kernels/cuda/handles.cu
  return *c;
}

// The plan of shape s on the current device; the caller holds plan_cache().mu.
ConvPlan& plan_locked(const Conv2dShape& s) {
  int dev = 0;
  NNS_CUDA_CHECK(cudaGetDevice(&dev));
  const std::array<int, 14> key{dev,  s.n,        s.c_in,     s.h,     s.w,     s.c_out,  s.kh,
                                s.kw, s.stride_h, s.stride_w, s.pad_h, s.pad_w, s.groups, 0};
  auto& plans = plan_cache().plans;
  auto it = plans.find(key);
  if (it == plans.end()) it = plans.emplace(key, std::make_unique<ConvPlan>(s)).first;
  return *it->second;
}

// Index of the algorithm to use among cuDNN's heuristic results: status OK and not a tensor-op
// (TF32) kernel; deterministic ones first, then any. -1 when none qualifies.
template <class Perf>
int pick_algo(const Perf* perf, int count) {
  for (int pass = 0; pass < 2; ++pass) {
    for (int i = 0; i < count; ++i) {
      const Perf& p = perf[i];
      if (p.status != CUDNN_STATUS_SUCCESS) continue;
      if (p.mathType == CUDNN_TENSOR_OP_MATH || p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
        continue;
      if (pass == 0 && p.determinism != CUDNN_DETERMINISTIC) continue;
      return i;
    }
  }
  return -1;
}

[[noreturn]] void no_algo(const char* op, const Conv2dShape& s) {
  throw std::runtime_error(std::string(op) +
                           " (cudnn): cuDNN offers no FP32 (non-TF32) "
                           "algorithm for " +
                           describe(s));
}

// The plan with the forward algorithm chosen (under the cache lock).
struct FwdSetup {
  const ConvPlan* plan;
  AlgoChoice<cudnnConvolutionFwdAlgo_t> algo;
};
FwdSetup forward_setup(cudnnHandle_t h, const Conv2dShape& s) {
  std::lock_guard<std::mutex> lock(plan_cache().mu);
  ConvPlan& p = plan_locked(s);
  if (!p.fwd) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    NNS_CUDNN_CHECK(
        cudnnGetConvolutionForwardAlgorithm_v7(h, p.x.get(), p.w.get(), p.conv.get(), p.y.get(),
                                               CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
    const int i = pick_algo(perf, n);
    if (i < 0) no_algo("conv2d_forward", s);
    size_t bytes = 0;
    NNS_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, p.x.get(), p.w.get(), p.conv.get(),
                                                            p.y.get(), perf[i].algo, &bytes));
    p.fwd = AlgoChoice<cudnnConvolutionFwdAlgo_t>{perf[i].algo, bytes};
  }
  return FwdSetup{&p, *p.fwd};
}

struct BwdDataSetup {
  const ConvPlan* plan;
  AlgoChoice<cudnnConvolutionBwdDataAlgo_t> algo;
};
BwdDataSetup backward_data_setup(cudnnHandle_t h, const Conv2dShape& s) {
  std::lock_guard<std::mutex> lock(plan_cache().mu);
  ConvPlan& p = plan_locked(s);
  if (!p.bwd_data) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0;
    NNS_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        h, p.w.get(), p.y.get(), p.conv.get(), p.x.get(), CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n,
        perf));
    const int i = pick_algo(perf, n);
    if (i < 0) no_algo("conv2d_backward_data", s);
    size_t bytes = 0;
    NNS_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
        h, p.w.get(), p.y.get(), p.conv.get(), p.x.get(), perf[i].algo, &bytes));
    p.bwd_data = AlgoChoice<cudnnConvolutionBwdDataAlgo_t>{perf[i].algo, bytes};
  }
  return BwdDataSetup{&p, *p.bwd_data};
}

struct BwdFilterSetup {
  const ConvPlan* plan;
  AlgoChoice<cudnnConvolutionBwdFilterAlgo_t> algo;
};
BwdFilterSetup backward_filter_setup(cudnnHandle_t h, const Conv2dShape& s) {
  std::lock_guard<std::mutex> lock(plan_cache().mu);
  ConvPlan& p = plan_locked(s);
  if (!p.bwd_filter) {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int n = 0;
    NNS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        h, p.x.get(), p.y.get(), p.conv.get(), p.w.get(), CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
        &n, perf));
    const int i = pick_algo(perf, n);
    if (i < 0) no_algo("conv2d_backward_filter", s);
    size_t bytes = 0;
    NNS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
        h, p.x.get(), p.y.get(), p.conv.get(), p.w.get(), perf[i].algo, &bytes));
    p.bwd_filter = AlgoChoice<cudnnConvolutionBwdFilterAlgo_t>{perf[i].algo, bytes};
  }
  return BwdFilterSetup{&p, *p.bwd_filter};
}

}  // namespace

void conv2d_forward_cudnn(cudaStream_t stream, const Conv2dShape& s, const float* x, const float* w,
                          const Epilogue& epi, float* y) {
  cudnnHandle_t h = cudnn_handle(stream);
  const FwdSetup st = forward_setup(h, s);
  const ConvPlan& p = *st.plan;
  void* ws = workspace(stream, WorkspaceSlot::Library, st.algo.workspace_bytes);
  const float one = 1.0f, zero = 0.0f;
  NNS_CUDNN_CHECK(cudnnConvolutionForward(h, &one, p.x.get(), x, p.w.get(), w, p.conv.get(),
                                          st.algo.algo, ws, st.algo.workspace_bytes, &zero,
                                          p.y.get(), y));
  if (!epilogue_is_identity(epi))
    epilogue_inplace(stream, s.y_size(), s.c_out, int64_t(s.out_h()) * s.out_w(), epi, y);
}

void conv2d_backward_data_cudnn(cudaStream_t stream, const Conv2dShape& s, const float* dy,
                                const float* w, float* dx) {
  cudnnHandle_t h = cudnn_handle(stream);
  const BwdDataSetup st = backward_data_setup(h, s);
  const ConvPlan& p = *st.plan;
  void* ws = workspace(stream, WorkspaceSlot::Library, st.algo.workspace_bytes);
  const float one = 1.0f, zero = 0.0f;
  NNS_CUDNN_CHECK(cudnnConvolutionBackwardData(h, &one, p.w.get(), w, p.y.get(), dy, p.conv.get(),
                                               st.algo.algo, ws, st.algo.workspace_bytes, &zero,
                                               p.x.get(), dx));
}

void conv2d_backward_filter_cudnn(cudaStream_t stream, const Conv2dShape& s, const float* x,
                                  const float* dy, float* dw, const int32_t* filters, int n_sel) {
  cudnnHandle_t h = cudnn_handle(stream);
  const BwdFilterSetup st = backward_filter_setup(h, s);
  const ConvPlan& p = *st.plan;
  void* ws = workspace(stream, WorkspaceSlot::Library, st.algo.workspace_bytes);
  // All filters: straight into dw. A list: the full dW into scratch, then the listed rows.
  float* full = filters ? static_cast<float*>(workspace(stream, WorkspaceSlot::Scratch,
                                                        sizeof(float) * size_t(s.w_size())))
                        : dw;
  const float one = 1.0f, zero = 0.0f;
  NNS_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, &one, p.x.get(), x, p.y.get(), dy, p.conv.get(),
                                                 st.algo.algo, ws, st.algo.workspace_bytes, &zero,
                                                 p.w.get(), full));
  if (filters)
    copy_selected_rows(stream, full, /*src_compact=*/false, s.w_size() / s.c_out, filters, n_sel,
                       s.c_out, dw);
}

#else  // no cuDNN in this build

namespace {
[[noreturn]] void no_cudnn(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": the cuDNN conv engine is selected (ops::set_conv_engine("
                           "ConvEngine::Cudnn)) but this build has no cuDNN (libcudnn was not "
                           "found when configuring); select ConvEngine::Native");
}
}  // namespace

void conv2d_forward_cudnn(cudaStream_t, const Conv2dShape&, const float*, const float*,
                          const Epilogue&, float*) {
  no_cudnn("conv2d_forward");
}
void conv2d_backward_data_cudnn(cudaStream_t, const Conv2dShape&, const float*, const float*,
                                float*) {
  no_cudnn("conv2d_backward_data");
}
void conv2d_backward_filter_cudnn(cudaStream_t, const Conv2dShape&, const float*, const float*,
                                  float*, const int32_t*, int) {
  no_cudnn("conv2d_backward_filter");
}

#endif

}  // namespace nns::ops::cuda
