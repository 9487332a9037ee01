// The CPU engine: an execution plan per (graph, batch, mode), built once and run many times.
//
// A plan turns a graph (core/graph/graph.h) into a fixed list of fused steps over one arena:
//   - layout: every 4-d activation in the blocked channel layout nChw{L}c (L = 16 lanes with
//     AVX-512, 8 with AVX2), converted at the network's input (or read in NCHW by a first
//     convolution with few channels) and left at the global pool or flatten;
//   - fusion, by mode: a frozen (eval-mode) BatchNorm whose parameters need no gradient is
//     folded into the preceding convolution's weights and bias, and a ReLU/ReLU6 and a residual
//     add after a convolution become its post-ops (inference and the obfuscation step); a
//     batch-statistics BatchNorm runs with its residual add and activation in one pass forward
//     and one backward (training); a ReLU after a Linear is its epilogue;
//   - memory: every activation, gradient, packed weight and scratch buffer is a region of one
//     arena, placed by lifetime (regions whose steps never overlap share memory), allocated and
//     touched when the plan is built: no allocation, no page fault while it runs;
//   - convolutions run on one of two engines behind one interface: oneDNN's primitives or our
//     blocked micro-kernels (kernels/cpu/blocked/), chosen per layer (--cpu-engine: native,
//     onednn, or auto: each shape timed once when the plan is built, cuDNN's benchmark mode).
//
// The plan reads what it needs from the graph's modules at every pass: weights, BatchNorm
// parameters and running statistics, and, when the plan is built, the modes (training, frozen
// BatchNorm, which weight gradients are wanted). Gradients land in the modules' Parameter::grad
// exactly as the module-by-module path writes them (the same filter-subset rule), running
// statistics and num_batches_tracked are updated the same way, dropout draws the same masks.
// Weights (and the folded BatchNorm constants) are re-read (re-packed) at the first forward of a
// plan and after weights_changed(); then at every forward of a training plan; in a plan whose
// convolutions compute gradients for a subset of filters only (the obfuscation step, and its
// evaluations) at every forward for the layers with a subset, the others being frozen by
// contract; in an inference plan (no gradients) not again: Model re-arms a plan whenever another
// plan or the layers ran in between, and evaluation loops call Model::weights_changed() first.
// Code that changes weights between two no-grad forwards of one plan must call it too.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/graph/graph.h"
#include "core/tensor.h"

namespace nns::engine {

// Which engine runs the zoo's passes on the CPU. Layers: module by module through
// kernels/ops.h (the reference path, and every pass a plan cannot run). Native, Onednn: a plan
// with every convolution on that engine. Auto: a plan choosing per convolution by measurement.
enum class CpuEngine : uint8_t { Layers, Native, Onednn, Auto };
void set_cpu_engine(CpuEngine e);
CpuEngine cpu_engine();  // default Auto (NNS_CPU_ENGINE=layers|native|onednn|auto overrides)
const char* cpu_engine_name(CpuEngine e);
// "layers", "native", "onednn", "auto"; anything else throws std::invalid_argument.
CpuEngine parse_cpu_engine(const std::string& s);

// The precision of the search's steps (splitter.precision). Bf16: the convolutions of a plan
// that computes gradients for a subset of filters (the obfuscation step: forward, backward data
// and the masked filters' weight gradient) read bf16 operands and accumulate and write fp32;
// weights stay fp32 in the model (the master copy the optimizer updates) and are rounded when
// packed. Every other plan (evaluations, whose accuracies are reported; training) stays fp32.
enum class Precision : uint8_t { Fp32, Bf16 };
// Throws std::invalid_argument for Bf16 where bf16_unavailable() is not empty.
void set_search_precision(Precision p);
Precision search_precision();  // default Fp32
const char* precision_name(Precision p);
// "fp32" or "bf16"; anything else throws std::invalid_argument.
Precision parse_precision(const std::string& s);
// "" when bf16 steps run natively here on `dev`, else why not: the run must be on the CPU, the
// CPU engine onednn or auto (our blocked kernels have no bf16 path), the CPU must have
// avx512_bf16, and oneDNN must not be limited to AVX2 (NNS_CPU_ISA=avx2).
std::string bf16_unavailable(Device dev = Device::CPU);

// What a plan decided for one convolution.
struct ConvChoice {
  std::string node;    // graph node name
  std::string engine;  // "native" or "onednn"
  std::string impl;    // oneDNN's implementation names, or the native kernel's
  double native_ms = -1, onednn_ms = -1;  // auto's measurements (-1: not measured)
};

class Plan {
 public:
  // Builds the plan of `g` (after infer_dims) for this batch, in the modes its modules are in
  // now; `grad`: whether backward() will be called. Throws std::invalid_argument when the graph
  // holds something a plan cannot run (see unsupported()).
  Plan(const graph::Graph& g, int64_t batch, bool grad, CpuEngine engine);
  ~Plan();
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;

  // Everything a plan is built for: batch, grad, engine, ISA, and per module the modes that
  // shape it. Two calls return the same string exactly when the same plan serves both.
  static std::string signature(const graph::Graph& g, int64_t batch, bool grad, CpuEngine engine);
  // "" when a plan can run g, else why not ("node 'x' (Mul): op not in the CPU engine").
  static std::string unsupported(const graph::Graph& g);

  // x: [batch, C, H, W] NCHW on the CPU. Returns the graph output (plain, owned by the plan,
  // valid until the next forward).
  const Tensor& forward(const Tensor& x);
  // dy: the gradient of the output. Fills the modules' gradients as their backward would.
  void backward(const Tensor& dy);

  // Re-pack every layer's weights at the next forward (a masked plan otherwise re-packs only
  // the layers whose weights may move).
  void weights_changed();

  // The activation (or, after backward, the gradient) of a graph value in NCHW order; empty when
  // the plan holds none (a value fused inside a step). For tests and debugging.
  std::vector<float> value(graph::ValueId v, bool grad) const;

  int64_t batch() const;
  size_t arena_bytes() const;
  const std::vector<ConvChoice>& conv_choices() const;
  // One line per step, then the arena size and the per-convolution choices.
  std::string describe() const;

  struct Impl;  // the plan's state and its steps (plan.cpp)

 private:
  std::unique_ptr<Impl> p_;
};

}  // namespace nns::engine
