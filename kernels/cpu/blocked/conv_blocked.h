// Native convolutions on the blocked channel layout nChw{L}c (issue 15): the engine the
// execution plan runs beside oneDNN on the same layout.
//
// Layout: L = lanes (16 with AVX-512, 8 with AVX2); element (n, c, h, w) of a tensor with C
// channels lives at (((n*CB + c/L)*H + h)*W + w)*L + c%L, CB = ceil(C/L). Lanes c >= C of the
// last block are zero in every tensor these functions read, and are written zero in every
// tensor they write.
//
// The kernels (kernels/cpu/blocked/blocked_micro_impl.h) follow oneDNN's jit convolutions:
// - forward: a register tile of UR consecutive output pixels x NOC output-channel blocks;
//   per input channel, NOC weight vectors are loaded, UR input values broadcast, UR*NOC FMAs;
// - backward data: the same kernel on dy with the transposed weights, one call per stride
//   phase of dx (so stride 2 reads no zero-stuffed dy);
// - backward weights, many filters: a tile [NCI input lanes] x [NOC output blocks] summed over
//   pixels (broadcast x, load dy); few filters (the obfuscation step's 1-5): a tile
//   [KW taps x NCB input blocks] x [NF filters] (load x, broadcast dy), so one filter costs
//   1/16 of a block of 16.
// Every function takes the ISA from desc.lanes (16: AVX-512 kernels, which must be usable;
// 8: AVX2), so both paths run in one process; lanes() says which one the active cpu_isa() uses.
//
// Threads: OpenMP over omp_get_max_threads(), which must not exceed the `threads` given to
// scratch_floats for the scratch passed in. Work is handed out dynamically in pieces of about
// an image, so a descheduled thread delays an op by one piece. Nothing allocates memory: all
// temporaries live in the caller's scratch (64-byte aligned is best, 4-byte suffices).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"

namespace nns::ops::cpu::blocked {

// A 2-D convolution. out_h = (h + pad_t + pad_b - kh)/stride_h + 1, out_w likewise.
struct ConvDesc {
  int n, c_in, h, w, c_out, kh, kw, stride_h, stride_w, pad_t, pad_l, pad_b, pad_r, groups;
  int lanes;
};

inline int conv_out_h(const ConvDesc& d) { return (d.h + d.pad_t + d.pad_b - d.kh) / d.stride_h + 1; }
inline int conv_out_w(const ConvDesc& d) { return (d.w + d.pad_l + d.pad_r - d.kw) / d.stride_w + 1; }
inline bool conv_is_depthwise(const ConvDesc& d) {
  return d.groups > 1 && d.groups == d.c_in && d.groups == d.c_out;
}

enum class Pass { Forward, BackwardData, BackwardWeights };

// Lanes of the blocked layout for the active instruction set (cpu_isa()): 16 or 8.
int lanes();

// Floats of a blocked tensor [n, c, h, w] with `lanes` lanes.
inline size_t blocked_floats(int n, int c, int h, int w, int lanes) {
  return size_t(n) * size_t((c + lanes - 1) / lanes) * size_t(h) * size_t(w) * size_t(lanes);
}

// Whether these kernels run the pass: groups == 1 or depthwise, any kernel, stride and padding,
// lanes 16 (where AVX-512 is usable) or 8. The plan runs oneDNN where this is false.
bool conv_supported(const ConvDesc& d, Pass pass);

// Packed weights. Forward: [CBo][CBi][KH][KW][L ci][L co] (depthwise: [CB][KH][KW][L]);
// BackwardData: [CBi][CBo][KH][KW][L co][L ci] (depthwise: as forward). BackwardWeights: none.
size_t packed_weights_floats(const ConvDesc& d, Pass pass);

// Packs PyTorch weights oihw [C_out, C_in/groups, KH, KW], output channel f multiplied by
// oc_scale[f] when oc_scale is not null (a folded BatchNorm), into `packed` (lanes past the
// channels zero). With a filter list (n_filters entries in [0, C_out)), only those output
// filters' parts of an already packed buffer are rewritten; the rest is left as it was.
void pack_weights(const ConvDesc& d, Pass pass, const float* oihw, const float* oc_scale,
                  float* packed, const int32_t* filters = nullptr, int n_filters = 0);

// Floats of scratch a pass needs when run with up to `threads` OpenMP threads.
size_t scratch_floats(const ConvDesc& d, Pass pass, int threads);

// y = act(conv(x, w) + bias[c] + residual): x, y, residual blocked; bias [C_out] and residual
// (y's shape) may be null; act None, ReLU or ReLU6. Overwrites y.
void conv_forward(const ConvDesc& d, const float* x, const float* packed, const float* bias,
                  const float* residual, Activation act, float* y, float* scratch);

// dx = conv_transpose(dy, w), from weights packed for Pass::BackwardData. Overwrites dx.
void conv_backward_data(const ConvDesc& d, const float* dy, const float* packed_bwd, float* dx,
                        float* scratch);

// dw [C_out, C_in/groups, KH, KW] (PyTorch's plain layout) and db [C_out] (nullable) for the
// listed output filters (all when filters is null): only their rows are written. A short list
// costs in proportion to its length.
void conv_backward_weights(const ConvDesc& d, const float* x, const float* dy, float* dw,
                           float* db, const int32_t* filters, int n_filters, float* scratch);

// The network's first convolution may read its input in NCHW (no reorder at the input, and a
// 1-3 channel image is 16/C times smaller than blocked): forward and weight gradient (its
// backward data is never needed), for groups 1 and c_in <= 4. Weights, bias, residual, y and
// dy as in the blocked functions; the same scratch_floats.
bool nchw_input_supported(const ConvDesc& d);
void conv_forward_nchw_input(const ConvDesc& d, const float* x_nchw, const float* packed,
                             const float* bias, const float* residual, Activation act, float* y,
                             float* scratch);
void conv_backward_weights_nchw_input(const ConvDesc& d, const float* x_nchw, const float* dy,
                                      float* dw, float* db, const int32_t* filters,
                                      int n_filters, float* scratch);

// NCHW <-> nChw{lanes}c. to_blocked writes the pad lanes zero.
void to_blocked(int n, int c, int h, int w, int lanes, const float* nchw, float* blocked);
void from_blocked(int n, int c, int h, int w, int lanes, const float* blocked, float* nchw);

}  // namespace nns::ops::cpu::blocked
