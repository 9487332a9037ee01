// Dispatch of every op in kernels/ops.h to its backend: a plain switch on the device. The
// per-op functions are generated (kernels/ops_dispatch.inc, by tools/gen_op_dispatch.py).
#include "kernels/ops.h"

#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_ops.h"
#if defined(NNS_HAVE_CUDA) && defined(NNS_CUDA_OPS)
#include "kernels/cuda/cuda_ops.h"
#endif

namespace nns::ops {

#if defined(NNS_HAVE_CUDA)
void cuda_synchronize(void* stream);  // kernels/cuda/memory.cu
#endif

namespace {
[[maybe_unused]] [[noreturn]] void cuda_missing(const char* op) {
  throw std::runtime_error(std::string("op ") + op +
                           " needs the CUDA backend, which this build does not have");
}
ConvEngine g_conv_engine = ConvEngine::Native;
GemmEngine g_gemm_engine = GemmEngine::Native;
}  // namespace

void set_conv_engine(ConvEngine e) { g_conv_engine = e; }
ConvEngine conv_engine() { return g_conv_engine; }
void set_gemm_engine(GemmEngine e) { g_gemm_engine = e; }
GemmEngine gemm_engine() { return g_gemm_engine; }

#if defined(NNS_HAVE_CUDA) && defined(NNS_CUDA_OPS)
#define NNS_CUDA_CALL(op, ...) return cuda::op(ctx.stream, __VA_ARGS__)
#else
#define NNS_CUDA_CALL(op, ...) cuda_missing(#op)
#endif

#define NNS_DISPATCH(op, ...)                      \
  switch (ctx.device) {                            \
    case Device::CPU: return cpu::op(__VA_ARGS__); \
    case Device::CUDA: NNS_CUDA_CALL(op, __VA_ARGS__); \
  }                                                \
  throw std::logic_error("bad device in " #op)

#include "kernels/ops_dispatch.inc"

void synchronize(const Context& ctx) {
#if defined(NNS_HAVE_CUDA)
  if (ctx.device == Device::CUDA) cuda_synchronize(ctx.stream);
#else
  (void)ctx;
#endif
}

}  // namespace nns::ops
