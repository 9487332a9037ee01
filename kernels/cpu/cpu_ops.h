// CPU backend: the ops of kernels/ops.h without the Context (OpenMP + OpenBLAS).
// Same semantics and shapes as documented in kernels/ops.h.
#pragma once

#include "kernels/ops.h"

namespace nns::ops::cpu {

void conv2d_forward(const Conv2dShape& s, const float* x, const float* w, const Epilogue& epi, float* y);
void conv2d_backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx);
void conv2d_backward_filter(const Conv2dShape& s, const float* x, const float* dy, float* dw, float* db, const int32_t* filters, int n_filters);
void linear_forward(int n, int in, int out, const float* x, const float* w, const Epilogue& epi, float* y);
void linear_backward_data(int n, int in, int out, const float* dy, const float* w, float* dx);
void linear_backward_weight(int n, int in, int out, const float* x, const float* dy, float* dw, float* db, const int32_t* rows, int n_rows);
void batchnorm_forward_train(int n, int c, int hw, const float* x, const float* gamma, const float* beta, float* running_mean, float* running_var, float momentum, float eps, float* y, float* save_mean, float* save_invstd);
void batchnorm_forward_eval(int n, int c, int hw, const float* x, const float* gamma, const float* beta, const float* running_mean, const float* running_var, float eps, float* y);
void batchnorm_backward(int n, int c, int hw, const float* x, const float* dy, const float* gamma, const float* save_mean, const float* save_invstd, float* dx, float* dgamma, float* dbeta);
void batchnorm_backward_eval(int n, int c, int hw, const float* x, const float* dy, const float* gamma, const float* running_mean, const float* running_var, float eps, float* dx, float* dgamma, float* dbeta);
void batchnorm_fold(int c, const float* gamma, const float* beta, const float* running_mean, const float* running_var, float eps, float* scale, float* shift);
void activation_forward(Activation act, int64_t count, const float* x, float* y);
void activation_backward(Activation act, int64_t count, const float* y, const float* dy, float* dx);
void epilogue_backward(int n, int c, int hw, Activation act, const float* y, const float* dy, const float* scale, float* dacc);
void add(int64_t count, const float* a, const float* b, float* y);
void axpy(int64_t count, float alpha, const float* x, float* y);
void fill(int64_t count, float value, float* y);
void channel_sum(int n, int c, int hw, const float* x, float* out);
void dropout_forward(int64_t count, float p, uint64_t seed, const float* x, float* y, uint8_t* mask);
void dropout_backward(int64_t count, float p, const uint8_t* mask, const float* dy, float* dx);
void maxpool2d_forward(const Pool2dShape& s, const float* x, float* y, int32_t* argmax);
void maxpool2d_backward(const Pool2dShape& s, const float* dy, const int32_t* argmax, float* dx);
void avgpool2d_forward(const Pool2dShape& s, const float* x, float* y);
void avgpool2d_backward(const Pool2dShape& s, const float* dy, float* dx);
void global_avgpool_forward(int n, int c, int hw, const float* x, float* y);
void global_avgpool_backward(int n, int c, int hw, const float* dy, float* dx);
void softmax_cross_entropy_forward(int n, int k, const float* logits, const int32_t* labels, float* probs, float* loss);
void softmax_cross_entropy_backward(int n, int k, const float* probs, const int32_t* labels, float scale, float* dlogits);
int64_t argmax_accuracy(int n, int k, const float* logits, const int32_t* labels, int32_t* pred);
void sgd_update(int64_t count, float* w, const float* g, float* buf, float lr, float momentum, float weight_decay, bool nesterov, bool first_step);
void adam_update(int64_t count, float* w, const float* g, float* m, float* v, float lr, float beta1, float beta2, float eps, float weight_decay, int64_t t);

}  // namespace nns::ops::cpu
