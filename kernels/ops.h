// The op list: every compute primitive the engine uses, as plain functions over raw pointers
// with the shapes spelled out. Each op dispatches on ctx.device to kernels/cpu/ or kernels/cuda/.
// All tensors are float32, NCHW, contiguous, row-major, and live on ctx.device.
//
// Conventions
// - "Overwrites" means the output is fully written (no need to zero it first).
// - Weight-gradient ops overwrite; callers accumulate when a parameter is shared (none in the
//   zoo is).
// - Index/label arrays are int32 and, like everything else, live on ctx.device: filter and row
//   lists of the weight-gradient ops too (nn::Conv2d / nn::Linear keep a device copy). Only
//   scalars, shapes and out-parameters documented as host values are on the host.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/device.h"

namespace nns::ops {

// Which backend runs an op, and on CUDA which stream (cudaStream_t, null = default stream).
struct Context {
  Device device = Device::CPU;
  void* stream = nullptr;
};

enum class Activation : uint8_t { None = 0, ReLU = 1, ReLU6 = 2, Tanh = 3, Sigmoid = 4 };

// Which implementation runs convolutions and GEMMs on CUDA (the CPU backend ignores these):
// our own kernels, or cuDNN / cuBLAS as a reference fast path.
enum class ConvEngine : uint8_t { Native = 0, Cudnn = 1 };
enum class GemmEngine : uint8_t { Native = 0, Cublas = 1 };
void set_conv_engine(ConvEngine e);
ConvEngine conv_engine();
void set_gemm_engine(GemmEngine e);
GemmEngine gemm_engine();

// ---------------------------------------------------------------------------------------------
// Convolution. x [N, C_in, H, W], w [C_out, C_in/groups, KH, KW], y [N, C_out, OH, OW].
struct Conv2dShape {
  int n = 1, c_in = 1, h = 1, w = 1;
  int c_out = 1, kh = 1, kw = 1;
  int stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, groups = 1;
  int out_h() const { return (h + 2 * pad_h - kh) / stride_h + 1; }
  int out_w() const { return (w + 2 * pad_w - kw) / stride_w + 1; }
  int64_t x_size() const { return int64_t(n) * c_in * h * w; }
  int64_t y_size() const { return int64_t(n) * c_out * out_h() * out_w(); }
  int64_t w_size() const { return int64_t(c_out) * (c_in / groups) * kh * kw; }
};

// Per-output-channel epilogue fused into conv2d_forward and linear_forward:
//   y = act(scale[c] * (acc + bias[c]) + shift[c])
// Any pointer may be null (bias 0, scale 1, shift 0). Used for the conv bias, and for a frozen
// (eval-mode) BatchNorm folded into the convolution: scale = gamma/sqrt(var+eps),
// shift = beta - mean*scale.
struct Epilogue {
  const float* bias = nullptr;
  const float* scale = nullptr;
  const float* shift = nullptr;
  Activation act = Activation::None;
};

// y = epilogue(conv(x, w)). Overwrites y.
void conv2d_forward(const Context& ctx, const Conv2dShape& s, const float* x, const float* w,
                    const Epilogue& epi, float* y);
// dx = conv_transpose(dy, w). Overwrites dx [N, C_in, H, W].
void conv2d_backward_data(const Context& ctx, const Conv2dShape& s, const float* dy,
                          const float* w, float* dx);
// dw[f] = sum over batch and positions of dy[:, f] * x-patches, for the output filters listed in
// `filters` (n_filters entries, each in [0, C_out)), or for every filter when filters == nullptr.
// Only the rows dw[f] of listed filters are written; the others are left untouched.
// db [C_out] (may be null): db[f] = sum of dy[:, f], same filter subset rule.
void conv2d_backward_filter(const Context& ctx, const Conv2dShape& s, const float* x,
                            const float* dy, float* dw, float* db, const int32_t* filters,
                            int n_filters);

// ---------------------------------------------------------------------------------------------
// Linear. x [N, IN], w [OUT, IN], y [N, OUT]: y = act(x w^T + b). Overwrites y.
void linear_forward(const Context& ctx, int n, int in, int out, const float* x, const float* w,
                    const Epilogue& epi, float* y);
// dx = dy w. Overwrites dx [N, IN].
void linear_backward_data(const Context& ctx, int n, int in, int out, const float* dy,
                          const float* w, float* dx);
// dw[r] = sum_n dy[n, r] x[n, :] and db[r] = sum_n dy[n, r] for the rows listed (all rows when
// rows == nullptr); other rows untouched. db may be null.
void linear_backward_weight(const Context& ctx, int n, int in, int out, const float* x,
                            const float* dy, float* dw, float* db, const int32_t* rows,
                            int n_rows);

// ---------------------------------------------------------------------------------------------
// BatchNorm2d over x [N, C, HW] (HW = H*W; also used with HW = 1 for 1-d batch norm).
// Training: normalise with the batch mean and biased batch variance; write save_mean and
// save_invstd [C] (1/sqrt(var_biased + eps)) for backward; update running statistics in place:
// running = (1 - momentum) * running + momentum * batch_stat (running_var uses the unbiased
// variance). Overwrites y.
void batchnorm_forward_train(const Context& ctx, int n, int c, int hw, const float* x,
                             const float* gamma, const float* beta, float* running_mean,
                             float* running_var, float momentum, float eps, float* y,
                             float* save_mean, float* save_invstd);
// Eval: y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta. Overwrites y.
void batchnorm_forward_eval(const Context& ctx, int n, int c, int hw, const float* x,
                            const float* gamma, const float* beta, const float* running_mean,
                            const float* running_var, float eps, float* y);
// Backward of the training-mode forward. Overwrites dx, dgamma, dbeta (dgamma/dbeta may be null).
void batchnorm_backward(const Context& ctx, int n, int c, int hw, const float* x, const float* dy,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        float* dx, float* dgamma, float* dbeta);
// Backward of the eval-mode forward (running statistics are constants):
// dx = dy * gamma / sqrt(var + eps); dgamma = sum(dy * xhat); dbeta = sum(dy).
// Overwrites; any of dx, dgamma, dbeta may be null (not computed).
void batchnorm_backward_eval(const Context& ctx, int n, int c, int hw, const float* x,
                             const float* dy, const float* gamma, const float* running_mean,
                             const float* running_var, float eps, float* dx, float* dgamma,
                             float* dbeta);
// Eval-mode scale/shift of a frozen BatchNorm: scale = gamma / sqrt(var + eps),
// shift = beta - mean * scale. Overwrites scale and shift [C].
void batchnorm_fold(const Context& ctx, int c, const float* gamma, const float* beta,
                    const float* running_mean, const float* running_var, float eps, float* scale,
                    float* shift);

// ---------------------------------------------------------------------------------------------
// Element-wise.
// y = act(x) over count elements (y may alias x).
void activation_forward(const Context& ctx, Activation act, int64_t count, const float* x,
                        float* y);
// dx = dy * act'(y), computed from the forward OUTPUT y (dx may alias dy).
void activation_backward(const Context& ctx, Activation act, int64_t count, const float* y,
                         const float* dy, float* dx);
// Backward of a fused epilogue, from the forward output y [N, C, HW]:
//   dacc = dy * act'(y) * scale[c]   (scale may be null = 1). dacc may alias dy.
void epilogue_backward(const Context& ctx, int n, int c, int hw, Activation act, const float* y,
                       const float* dy, const float* scale, float* dacc);
// y = a + b (y may alias a or b).
void add(const Context& ctx, int64_t count, const float* a, const float* b, float* y);
// y += alpha * x.
void axpy(const Context& ctx, int64_t count, float alpha, const float* x, float* y);
// y[i] = value.
void fill(const Context& ctx, int64_t count, float value, float* y);
// Per-channel sum over x [N, C, HW] -> out [C] (bias gradients). Overwrites out.
void channel_sum(const Context& ctx, int n, int c, int hw, const float* x, float* out);

// Dropout with a counter-based generator so that both backends draw the same mask for the same
// (seed, element index): keep[i] = hash(seed, i) >= p. y = x * keep / (1 - p).
// mask [count] receives keep as 0/1 bytes for backward.
void dropout_forward(const Context& ctx, int64_t count, float p, uint64_t seed, const float* x,
                     float* y, uint8_t* mask);
void dropout_backward(const Context& ctx, int64_t count, float p, const uint8_t* mask,
                      const float* dy, float* dx);

// ---------------------------------------------------------------------------------------------
// Pooling. x [N, C, H, W] -> y [N, C, OH, OW].
// Output size along an axis (PyTorch's rule): floor((in + 2 pad - k) / stride) + 1, or with
// ceil_mode the ceiling, less one when the last window would start past the input and its
// left padding. Windows are clipped to the input (ceil mode lets the last one hang over).
struct Pool2dShape {
  int n = 1, c = 1, h = 1, w = 1;
  int kh = 2, kw = 2, stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // average pooling's divisor (below)
  static int out_size(int in, int k, int stride, int pad, bool ceil) {
    const int span = in + 2 * pad - k;
    if (!ceil || span < 0) return span / stride + 1;
    int out = (span + stride - 1) / stride + 1;
    if ((out - 1) * stride >= in + pad) --out;
    return out;
  }
  int out_h() const { return out_size(h, kh, stride_h, pad_h, ceil_mode); }
  int out_w() const { return out_size(w, kw, stride_w, pad_w, ceil_mode); }
};
// Max pooling (PyTorch semantics: padding is -inf). argmax [N*C*OH*OW] receives the flat index
// within the (h, w) plane of the chosen input (first maximum on ties).
void maxpool2d_forward(const Context& ctx, const Pool2dShape& s, const float* x, float* y,
                       int32_t* argmax);
// Overwrites dx.
void maxpool2d_backward(const Context& ctx, const Pool2dShape& s, const float* dy,
                        const int32_t* argmax, float* dx);
// Average pooling (PyTorch semantics). The divisor of a window is, with count_include_pad, its
// size clipped to the padded input (KH*KW except where ceil mode lets it hang over the end),
// else the number of input elements it covers (kernels/common/pool.h). Overwrites y / dx.
void avgpool2d_forward(const Context& ctx, const Pool2dShape& s, const float* x, float* y);
void avgpool2d_backward(const Context& ctx, const Pool2dShape& s, const float* dy, float* dx);
// Adaptive average pool to 1x1: y [N, C] = mean over HW. Overwrites.
void global_avgpool_forward(const Context& ctx, int n, int c, int hw, const float* x, float* y);
void global_avgpool_backward(const Context& ctx, int n, int c, int hw, const float* dy, float* dx);

// ---------------------------------------------------------------------------------------------
// Ops of imported graphs (core/graph/graph_net.h). Element math in kernels/common/graph_ops.h.
// Clip: y = min(max(x, lo), hi). Backward with PyTorch's hardtanh rule: dx = dy where
// lo < x < hi, else 0 (computed from the forward INPUT x). Overwrites y / dx.
void clip_forward(const Context& ctx, int64_t count, float lo, float hi, const float* x,
                  float* y);
void clip_backward(const Context& ctx, int64_t count, float lo, float hi, const float* x,
                   const float* dy, float* dx);
// HardSigmoid: y = max(0, min(1, alpha x + beta)); dx = dy * alpha where 0 < alpha x + beta < 1,
// else 0 (from the forward INPUT x). Overwrites y / dx.
void hardsigmoid_forward(const Context& ctx, int64_t count, float alpha, float beta,
                         const float* x, float* y);
void hardsigmoid_backward(const Context& ctx, int64_t count, float alpha, float beta,
                          const float* x, const float* dy, float* dx);

// Binary ops with NumPy broadcasting. The dims are given aligned to one rank (at most
// kMaxDims): a[i] and b[i] are each 1 or out[i].
inline constexpr int kMaxDims = 6;
enum class Binary : uint8_t { Add = 0, Mul = 1 };
struct BroadcastShape {
  int rank = 0;
  int64_t out[kMaxDims] = {}, a[kMaxDims] = {}, b[kMaxDims] = {};
};
// y [out] = a op b. Overwrites y.
void broadcast_forward(const Context& ctx, Binary op, const BroadcastShape& s, const float* a,
                       const float* b, float* y);
// The gradients of y = a op b reduced onto the operands' shapes: da[j] = sum over the out
// elements that read a[j] of dy * (Mul: b, Add: 1), summed in ascending out order; db alike.
// Overwrites da [a] and db [b]; either may be null (not computed).
void broadcast_backward(const Context& ctx, Binary op, const BroadcastShape& s, const float* a,
                        const float* b, const float* dy, float* da, float* db);

// Strided copy, the data movement of Concat, Split, Slice, Pad, Transpose and their backward:
// for every index (i_0, ..., i_{rank-1}) with i_k < n[k],
//   dst[sum_k i_k dst_stride[k]] = src[sum_k i_k src_stride[k]]
// (strides in elements, non-negative; the caller offsets src/dst to the first element).
// Writes only those dst elements; the written elements must not overlap. rank <= kMaxDims.
struct StridedCopy {
  int rank = 0;
  int64_t n[kMaxDims] = {}, src_stride[kMaxDims] = {}, dst_stride[kMaxDims] = {};
};
void copy_strided(const Context& ctx, const StridedCopy& s, const float* src, float* dst);

// ---------------------------------------------------------------------------------------------
// Loss and metrics. logits [N, K], labels [N].
// Mean softmax cross-entropy. Writes probs [N, K] (softmax) and *loss (a host pointer on every
// backend). Labels out of [0, K) are an error (the CPU backend throws).
void softmax_cross_entropy_forward(const Context& ctx, int n, int k, const float* logits,
                                   const int32_t* labels, float* probs, float* loss);
// dlogits = scale * (probs - onehot(labels)) / N. Overwrites dlogits.
void softmax_cross_entropy_backward(const Context& ctx, int n, int k, const float* probs,
                                    const int32_t* labels, float scale, float* dlogits);
// pred [N] = argmax over K (first index on ties); returns the number with pred == label
// (labels may be null: returns 0).
int64_t argmax_accuracy(const Context& ctx, int n, int k, const float* logits,
                        const int32_t* labels, int32_t* pred);

// ---------------------------------------------------------------------------------------------
// Optimizer updates over dense parameter tensors (count elements).
// SGD (PyTorch semantics): g' = g + wd*w; buf = momentum*buf + g' (buf = g' on the first step,
// signalled by first_step); step = nesterov ? g' + momentum*buf : buf; w -= lr * step.
void sgd_update(const Context& ctx, int64_t count, float* w, const float* g, float* buf, float lr,
                float momentum, float weight_decay, bool nesterov, bool first_step);
// Adam (PyTorch semantics, L2 weight decay added to the gradient): step t >= 1.
void adam_update(const Context& ctx, int64_t count, float* w, const float* g, float* m, float* v,
                 float lr, float beta1, float beta2, float eps, float weight_decay, int64_t t);

// ---------------------------------------------------------------------------------------------
// Data: batch assembly from a uint8 dataset held on the device.
// out [B, C, S, S] = (float(images[idx[b]]) / 255 - mean[c]) / std[c], where the h x w image is
// zero-padded (raw value 0, before normalisation) to S x S, centred, the odd extra pixel going
// bottom/right (S >= h, w). images [N, C, H, W] uint8; idx [B]; mean, std [C].
void gather_normalize_u8(const Context& ctx, int batch, int c, int h, int w, int out_size,
                         const uint8_t* images, const int32_t* idx, const float* mean,
                         const float* std, float* out);

// ---------------------------------------------------------------------------------------------
// NNSplitter method.
// Mask generation: the flat indexes j of w with |w[j] - c| < eps (strict), restricted to the
// listed rows (filters; row f covers [f * row_size, (f + 1) * row_size)). rows must be sorted
// ascending and distinct; the indexes are written in ascending order to out (capacity max_out).
// Returns the number of matches (when it exceeds max_out only max_out are written).
int64_t mask_select(const Context& ctx, const float* w, int64_t row_size, const int32_t* rows,
                    int n_rows, float c, float eps, int64_t* out, int64_t max_out);
// The fused masked update of the obfuscator, over a sparse list of entries of one tensor:
// for i < count, j = idx[i]:
//   g = grad_scale * grad[j] + l1 * sign(w[j])           (sign(0) = 0)
//   m[i] = b1 m[i] + (1 - b1) g;  v[i] = b2 v[i] + (1 - b2) g^2
//   w[j] -= lr * (m[i] / (1 - b1^t)) / (sqrt(v[i] / (1 - b2^t)) + eps)
//   w[j] = min(max(w[j], lo), hi)
// m, v are sparse (count entries). Touches nothing but w[idx[i]], m, v. t >= 1.
void masked_adam_clamp(const Context& ctx, int64_t count, const int64_t* idx, float* w,
                       const float* grad, float* m, float* v, float lr, float beta1, float beta2,
                       float eps, int64_t t, float grad_scale, float l1, float lo, float hi);
// dst[i] = src[idx[i]]  /  dst[idx[i]] = src[i], for i < count.
void gather(const Context& ctx, int64_t count, const int64_t* idx, const float* src, float* dst);
void scatter(const Context& ctx, int64_t count, const int64_t* idx, const float* src, float* dst);

// ---------------------------------------------------------------------------------------------
// Controller (rl/): the pointwise part of an LSTM cell (PyTorch LSTMCell semantics). The gate
// pre-activations gates [B, 4H] = x W_ih^T + b_ih + h W_hh^T + b_hh come from linear ops, in
// PyTorch's order (i, f, g, o). Writes act [B, 4H] = (sigmoid i, sigmoid f, tanh g, sigmoid o)
// for backward, c = f * c_prev + i * g and h = o * tanh(c) [B, H].
void lstm_pointwise_forward(const Context& ctx, int batch, int hidden, const float* gates,
                            const float* c_prev, float* act, float* h, float* c);
// Given dh and dc (the gradient reaching h and c of this step, dc including the next step's
// contribution), writes dgates [B, 4H] (w.r.t. the pre-activations) and dc_prev [B, H].
void lstm_pointwise_backward(const Context& ctx, int batch, int hidden, const float* act,
                             const float* c_prev, const float* c, const float* dh,
                             const float* dc, float* dgates, float* dc_prev);

// ---------------------------------------------------------------------------------------------
// Memory: allocation and copies on either device (host pointers for Device::CPU).
void* device_alloc(Device dev, size_t bytes);
void device_free(Device dev, void* p);
void copy_bytes(Device dst_dev, void* dst, Device src_dev, const void* src, size_t bytes);
void zero_bytes(Device dev, void* p, size_t bytes);
// Blocks until every op queued on ctx has finished (no-op on the CPU).
void synchronize(const Context& ctx);

}  // namespace nns::ops
