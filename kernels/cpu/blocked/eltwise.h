// The non-convolution ops of the CPU engine on the blocked channel layout, fused the way a
// planned network needs them: BatchNorm with its residual add and activation in one pass,
// their backward in one pass, pooling, the global average pool that leaves the blocked layout,
// and the reorders at the network's edges.
//
// Layout nChw{L}c (L = lanes: 16 with AVX-512, 8 with AVX2): element (n, c, p) of a [N, C, HW]
// tensor lives at ((n * CB + c / L) * HW + p) * L + c % L, CB = ceil(C / L). Lanes c >= C of
// the last block are zero in every tensor these ops write (and are assumed zero in inputs).
// Element math comes from kernels/common/ (the same formulas as the NCHW ops and CUDA).
//
// No op allocates: the per-channel ones take `partial`, caller-owned scratch of
// partial_doubles() doubles.
#pragma once

#include <cstdint>

#include "kernels/ops.h"

namespace nns::ops::cpu::blocked {

struct Dims {
  int n = 1, c = 1, hw = 1, lanes = 16;
  int cb() const { return (c + lanes - 1) / lanes; }
  int cpad() const { return cb() * lanes; }
  int64_t size() const { return int64_t(n) * cb() * hw * lanes; }  // floats, padding included
};

// Scratch for the per-channel ops below, for `threads` OpenMP threads.
int64_t partial_doubles(const Dims& d, int threads);

// nchw [N, C, HW] -> blocked, and back.
void to_blocked(const Dims& d, const float* nchw, float* blk);
void from_blocked(const Dims& d, const float* blk, float* nchw);

// BatchNorm with batch statistics (two passes: mean, then squared deviations, as
// ops::batchnorm_forward_train), then y = act(bn(x) + residual). Writes save_mean and
// save_invstd [C]; when running_mean/var are not null, updates them (momentum, unbiased
// variance). residual (same dims) may be null. act: None, ReLU or ReLU6.
void bn_train_forward(const Dims& d, const float* x, const float* gamma, const float* beta,
                      const float* residual, Activation act, float momentum, float eps,
                      float* running_mean, float* running_var, float* save_mean,
                      float* save_invstd, float* y, double* partial);

// y = act(scale[c] * x + shift[c] + residual): an eval-mode BatchNorm that stays a separate
// step (its parameters' gradients are wanted), or any per-channel affine. residual may be null.
void affine_forward(const Dims& d, const float* x, const float* scale, const float* shift,
                    const float* residual, Activation act, float* y, double* partial);

// Backward of bn_train_forward from its output y: g = dy * act'(y); dresidual = g (when not
// null; add_to_dresidual: dresidual += g); dx = the batch-statistics BatchNorm backward of g
// (ops::batchnorm_backward's formula); dgamma, dbeta [C] (may be null). x is the BN input.
void bn_train_backward(const Dims& d, const float* x, const float* y, const float* dy,
                       Activation act, const float* gamma, const float* save_mean,
                       const float* save_invstd, float* dx, float* dresidual,
                       bool add_to_dresidual, float* dgamma, float* dbeta, double* partial);

// Backward of affine_forward from its output y: g = dy * act'(y); dresidual = g (or += g);
// dx = g * scale[c] (dx may be null); when dgamma/dbeta are not null (an eval-mode BN with
// mean/invstd given): dgamma = sum(g * (x - mean) * invstd), dbeta = sum(g).
void affine_backward(const Dims& d, const float* x, const float* y, const float* dy,
                     Activation act, const float* scale, const float* mean, const float* invstd,
                     float* dx, float* dresidual, bool add_to_dresidual, float* dgamma,
                     float* dbeta, double* partial);

// Element-wise over count floats (any layout, the same for every operand).
// y = act(a + b) (b may be null: y = act(a)); y may alias a or b.
void add_act(int64_t count, const float* a, const float* b, Activation act, float* y);
// dx = dy * act'(y) (+= when accumulate); dx may alias dy when not accumulating.
void act_backward(int64_t count, Activation act, const float* y, const float* dy, float* dx,
                  bool accumulate);
// y += x.
void accumulate(int64_t count, const float* x, float* y);

// Pooling over blocked [N, C, H, W] -> [N, C, OH, OW], PyTorch semantics (floor mode;
// max: padding is -inf, first maximum wins; avg: count_include_pad).
struct Pool {
  int h = 1, w = 1, kh = 1, kw = 1, stride_h = 1, stride_w = 1, pad_t = 0, pad_l = 0;
  int out_h = 1, out_w = 1;
};
// argmax (one int32 per output element, padding lanes included) holds the flat h*W+w index.
void maxpool_forward(const Dims& d, const Pool& p, const float* x, float* y, int32_t* argmax);
// Overwrites dx (or adds to it when accumulate).
void maxpool_backward(const Dims& d, const Pool& p, const float* dy, const int32_t* argmax,
                      float* dx, bool accumulate);
void avgpool_forward(const Dims& d, const Pool& p, const float* x, float* y);
void avgpool_backward(const Dims& d, const Pool& p, const float* dy, float* dx, bool accumulate);

// Global average pool leaving the blocked layout: y [N, C] (plain) = mean over HW.
void global_avgpool_forward(const Dims& d, const float* x, float* y);
// dx (blocked) = dy[n, c] / HW everywhere (+= when accumulate); padding lanes zero.
void global_avgpool_backward(const Dims& d, const float* dy, float* dx, bool accumulate);

}  // namespace nns::ops::cpu::blocked
