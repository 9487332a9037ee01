// Dispatch of every op in kernels/ops.h to its backend: a plain switch on the device.
#include "kernels/ops.h"

#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_ops.h"

namespace nns::ops {

namespace {
[[noreturn]] void cuda_missing(const char* op) {
  throw std::runtime_error(std::string("op ") + op +
                           " has no CUDA implementation in this build (CUDA backend: issue 5)");
}
}  // namespace

#define NNS_DISPATCH(op, ...)                        \
  switch (ctx.device) {                              \
    case Device::CPU: return cpu::op(__VA_ARGS__);   \
    case Device::CUDA: cuda_missing(#op);            \
  }                                                  \
  throw std::logic_error("bad device in " #op)

void conv2d_forward(const Context& ctx, const Conv2dShape& s, const float* x, const float* w, const Epilogue& epi, float* y) {
  NNS_DISPATCH(conv2d_forward, s, x, w, epi, y);
}

void conv2d_backward_data(const Context& ctx, const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  NNS_DISPATCH(conv2d_backward_data, s, dy, w, dx);
}

void conv2d_backward_filter(const Context& ctx, const Conv2dShape& s, const float* x, const float* dy, float* dw, float* db, const int32_t* filters, int n_filters) {
  NNS_DISPATCH(conv2d_backward_filter, s, x, dy, dw, db, filters, n_filters);
}

void linear_forward(const Context& ctx, int n, int in, int out, const float* x, const float* w, const Epilogue& epi, float* y) {
  NNS_DISPATCH(linear_forward, n, in, out, x, w, epi, y);
}

void linear_backward_data(const Context& ctx, int n, int in, int out, const float* dy, const float* w, float* dx) {
  NNS_DISPATCH(linear_backward_data, n, in, out, dy, w, dx);
}

void linear_backward_weight(const Context& ctx, int n, int in, int out, const float* x, const float* dy, float* dw, float* db, const int32_t* rows, int n_rows) {
  NNS_DISPATCH(linear_backward_weight, n, in, out, x, dy, dw, db, rows, n_rows);
}

void batchnorm_forward_train(const Context& ctx, int n, int c, int hw, const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float momentum, float eps, float* y, float* save_mean, float* save_invstd) {
  NNS_DISPATCH(batchnorm_forward_train, n, c, hw, x, gamma, beta, running_mean, running_var, momentum, eps, y, save_mean, save_invstd);
}

void batchnorm_forward_eval(const Context& ctx, int n, int c, int hw, const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var, float eps, float* y) {
  NNS_DISPATCH(batchnorm_forward_eval, n, c, hw, x, gamma, beta, running_mean, running_var, eps, y);
}

void batchnorm_backward(const Context& ctx, int n, int c, int hw, const float* x, const float* dy, const float* gamma, const float* save_mean, const float* save_invstd, float* dx, float* dgamma, float* dbeta) {
  NNS_DISPATCH(batchnorm_backward, n, c, hw, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

void batchnorm_backward_eval(const Context& ctx, int n, int c, int hw, const float* x, const float* dy, const float* gamma, const float* running_mean, const float* running_var, float eps, float* dx, float* dgamma, float* dbeta) {
  NNS_DISPATCH(batchnorm_backward_eval, n, c, hw, x, dy, gamma, running_mean, running_var, eps, dx, dgamma, dbeta);
}

void batchnorm_fold(const Context& ctx, int c, const float* gamma, const float* beta, const float* running_mean, const float* running_var, float eps, float* scale, float* shift) {
  NNS_DISPATCH(batchnorm_fold, c, gamma, beta, running_mean, running_var, eps, scale, shift);
}

void activation_forward(const Context& ctx, Activation act, int64_t count, const float* x, float* y) {
  NNS_DISPATCH(activation_forward, act, count, x, y);
}

void activation_backward(const Context& ctx, Activation act, int64_t count, const float* y, const float* dy, float* dx) {
  NNS_DISPATCH(activation_backward, act, count, y, dy, dx);
}

void epilogue_backward(const Context& ctx, int n, int c, int hw, Activation act, const float* y, const float* dy, const float* scale, float* dacc) {
  NNS_DISPATCH(epilogue_backward, n, c, hw, act, y, dy, scale, dacc);
}

void add(const Context& ctx, int64_t count, const float* a, const float* b, float* y) {
  NNS_DISPATCH(add, count, a, b, y);
}

void axpy(const Context& ctx, int64_t count, float alpha, const float* x, float* y) {
  NNS_DISPATCH(axpy, count, alpha, x, y);
}

void fill(const Context& ctx, int64_t count, float value, float* y) {
  NNS_DISPATCH(fill, count, value, y);
}

void channel_sum(const Context& ctx, int n, int c, int hw, const float* x, float* out) {
  NNS_DISPATCH(channel_sum, n, c, hw, x, out);
}

void dropout_forward(const Context& ctx, int64_t count, float p, uint64_t seed, const float* x, float* y, uint8_t* mask) {
  NNS_DISPATCH(dropout_forward, count, p, seed, x, y, mask);
}

void dropout_backward(const Context& ctx, int64_t count, float p, const uint8_t* mask, const float* dy, float* dx) {
  NNS_DISPATCH(dropout_backward, count, p, mask, dy, dx);
}

void maxpool2d_forward(const Context& ctx, const Pool2dShape& s, const float* x, float* y, int32_t* argmax) {
  NNS_DISPATCH(maxpool2d_forward, s, x, y, argmax);
}

void maxpool2d_backward(const Context& ctx, const Pool2dShape& s, const float* dy, const int32_t* argmax, float* dx) {
  NNS_DISPATCH(maxpool2d_backward, s, dy, argmax, dx);
}

void avgpool2d_forward(const Context& ctx, const Pool2dShape& s, const float* x, float* y) {
  NNS_DISPATCH(avgpool2d_forward, s, x, y);
}

void avgpool2d_backward(const Context& ctx, const Pool2dShape& s, const float* dy, float* dx) {
  NNS_DISPATCH(avgpool2d_backward, s, dy, dx);
}

void global_avgpool_forward(const Context& ctx, int n, int c, int hw, const float* x, float* y) {
  NNS_DISPATCH(global_avgpool_forward, n, c, hw, x, y);
}

void global_avgpool_backward(const Context& ctx, int n, int c, int hw, const float* dy, float* dx) {
  NNS_DISPATCH(global_avgpool_backward, n, c, hw, dy, dx);
}

void softmax_cross_entropy_forward(const Context& ctx, int n, int k, const float* logits, const int32_t* labels, float* probs, float* loss) {
  NNS_DISPATCH(softmax_cross_entropy_forward, n, k, logits, labels, probs, loss);
}

void softmax_cross_entropy_backward(const Context& ctx, int n, int k, const float* probs, const int32_t* labels, float scale, float* dlogits) {
  NNS_DISPATCH(softmax_cross_entropy_backward, n, k, probs, labels, scale, dlogits);
}

int64_t argmax_accuracy(const Context& ctx, int n, int k, const float* logits, const int32_t* labels, int32_t* pred) {
  NNS_DISPATCH(argmax_accuracy, n, k, logits, labels, pred);
}

void sgd_update(const Context& ctx, int64_t count, float* w, const float* g, float* buf, float lr, float momentum, float weight_decay, bool nesterov, bool first_step) {
  NNS_DISPATCH(sgd_update, count, w, g, buf, lr, momentum, weight_decay, nesterov, first_step);
}

void adam_update(const Context& ctx, int64_t count, float* w, const float* g, float* m, float* v, float lr, float beta1, float beta2, float eps, float weight_decay, int64_t t) {
  NNS_DISPATCH(adam_update, count, w, g, m, v, lr, beta1, beta2, eps, weight_decay, t);
}

void synchronize(const Context& ctx) { (void)ctx; }

}  // namespace nns::ops
