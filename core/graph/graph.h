// The graph of ops that every network lowers into: the zoo's module trees (lower.h) and models
// read from outside (ONNX). One representation for the two consumers of a whole network:
//   - the execution plan of the CPU engine (core/engine/), built once per (graph, batch, mode);
//   - the graph interpreter (GraphNet), which runs any graph op by op through kernels/ops.h on
//     either backend.
//
// A graph is a list of nodes in topological order over numbered values. Every node's
// attributes describe it completely (shapes follow from them); nodes whose op has parameters
// or state (Conv, Linear, BatchNorm, Dropout) also point at the leaf module that holds them
// (nn::Conv2d, nn::Linear, nn::BatchNorm2d, nn::Dropout), so that the weights, the running
// statistics and the modes the splitter sets on modules (training, frozen BN, which weight
// gradients are wanted) are read from one place. The graph does not own its modules.
//
// Shapes: a value's dims may contain kBatch, the batch size, bound when a plan is built
// (infer_shapes). Layout is NCHW (PyTorch's) for every 4-d value; a plan may choose another
// internally, but the graph's semantics are NCHW.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace nns::nn {
class Module;
}

namespace nns::graph {

// A dim that stands for the batch size.
inline constexpr int64_t kBatch = -2;

enum class OpKind : uint8_t {
  // With parameters or state (Node::module is set).
  Conv,       // x [N, C_in, H, W] -> [N, C_out, OH, OW]; module nn::Conv2d
  Linear,     // x [N, in] -> [N, out]; module nn::Linear (weight [out, in], PyTorch's)
  BatchNorm,  // x [N, C, H, W] or [N, C] -> same; module nn::BatchNorm2d
  Dropout,    // identity in eval mode; module nn::Dropout
  // Element-wise, one input.
  Relu,
  Relu6,
  Clip,         // min(max(x, attr.lo), attr.hi)
  Sigmoid,
  HardSigmoid,  // max(0, min(1, attr.alpha * x + attr.beta))
  Tanh,
  Identity,
  // Element-wise, two inputs, NumPy broadcasting (dims aligned from the right).
  Add,
  Mul,
  // Pooling (4-d).
  MaxPool,        // attr.pool; padding is -inf
  AvgPool,        // attr.pool; attr.pool.count_include_pad
  GlobalAvgPool,  // [N, C, H, W] -> [N, C, 1, 1]
  ReduceMean,     // over attr.axes, attr.keepdims
  // Data movement.
  Flatten,    // dims [0, axis) kept... as ONNX: [prod(d[0:axis]), prod(d[axis:])]
  Reshape,    // to attr.dims: entries > 0 literal, kBatch the batch, -1 inferred (one at most)
  Transpose,  // attr.perm
  Concat,     // along attr.axis, any number of inputs
  Split,      // along attr.axis into outputs of attr.sizes
  Slice,      // along attr.axis: [attr.start, attr.end) with attr.step (> 0), clamped to the dim
  Pad,        // constant attr.lo over attr.pads (ONNX order: begins of every dim, then ends)
  // A tensor of the model that is not a layer's parameter (a scale multiplied in, say): no
  // inputs; output dims attr.dims; module graph::ConstantTensor (core/graph/graph_net.h) holds
  // the value. Never the batch: its dims are literals.
  Constant,
};

// Short ONNX-like name ("Conv", "Relu", ...).
const char* op_name(OpKind op);

struct ConvAttr {
  int c_in = 0, c_out = 0;
  int kh = 1, kw = 1, stride_h = 1, stride_w = 1;
  int pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int dil_h = 1, dil_w = 1, groups = 1;
  bool bias = false;
};

struct PoolAttr {
  int kh = 1, kw = 1, stride_h = 1, stride_w = 1;
  int pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  bool ceil_mode = false;
  bool count_include_pad = true;  // AvgPool only (PyTorch's default)
};

struct Attr {
  ConvAttr conv;          // Conv
  PoolAttr pool;          // MaxPool, AvgPool
  int in = 0, out = 0;    // Linear
  bool bias = false;      // Linear
  int channels = 0;                        // BatchNorm (of its module)
  float eps = 1e-5f, momentum = 0.1f;      // BatchNorm (PyTorch's momentum: 1 - ONNX's)
  float lo = 0, hi = 0;   // Clip bounds; Pad value in lo
  float alpha = 0.2f, beta = 0.5f;  // HardSigmoid
  float p = 0;            // Dropout
  int axis = 1;           // Flatten, Concat, Split, Slice
  int64_t start = 0, end = 0, step = 1;  // Slice
  bool keepdims = true;                  // ReduceMean
  std::vector<int64_t> dims;   // Reshape target; Constant's dims
  std::vector<int64_t> perm;   // Transpose
  std::vector<int64_t> axes;   // ReduceMean
  std::vector<int64_t> sizes;  // Split
  std::vector<int64_t> pads;   // Pad
};

using ValueId = int;

struct Value {
  std::string name;
  std::vector<int64_t> dims;  // kBatch for the batch; set by the builder for the graph input,
                              // by infer_dims for the others
};

struct Node {
  OpKind op = OpKind::Identity;
  std::string name;  // the module path for a lowered zoo model ("layer1.0.conv1"), the ONNX
                     // node name for an imported one
  std::vector<ValueId> inputs, outputs;
  Attr attr;
  nn::Module* module = nullptr;  // Conv, Linear, BatchNorm, Dropout: the holder of the state
};

class Graph {
 public:
  // Building: values are created by add_input and add_node; nodes must be added in an order in
  // which every input already exists (topological).
  ValueId add_input(const std::string& name, std::vector<int64_t> dims);
  // Appends a node; creates its n_outputs output values (named after the node, or `out_names`
  // when given) and returns the index of the node.
  int add_node(OpKind op, const std::string& name, std::vector<ValueId> inputs, Attr attr = {},
               nn::Module* module = nullptr, int n_outputs = 1,
               std::vector<std::string> out_names = {});
  void set_output(ValueId v) { output_ = v; }

  ValueId input() const { return input_; }
  ValueId output() const { return output_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  std::vector<Node>& nodes() { return nodes_; }
  const std::vector<Value>& values() const { return values_; }
  const Value& value(ValueId v) const { return values_.at(size_t(v)); }
  // The node that writes v (-1 for the graph input) and the nodes that read it, in order.
  int producer(ValueId v) const;
  std::vector<int> consumers(ValueId v) const;

  // Fills every value's dims from the input's by the ops' shape rules (kBatch propagates
  // symbolically) and checks the graph: one input and one output, inputs defined before use,
  // ranks and sizes that fit each op, the modules' shapes agreeing with the attributes, every
  // value but the output read by some node. Throws std::invalid_argument naming the node.
  void infer_dims();
  // The shape rule of one node (its inputs' dims must be known): sets its outputs' dims. What
  // infer_dims does per node, without the whole-graph checks; importers call it as they add
  // nodes, to evaluate shape arithmetic (ONNX's Shape) against the dims so far.
  void infer_node_dims(int node);
  // Concrete shapes of every value for a batch size (after infer_dims).
  std::vector<Shape> shapes(int64_t batch) const;

  // One line per node: "name: Op(in...) -> out [dims]".
  std::string describe() const;

 private:
  void check_all_read() const;
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<int> producer_;
  std::vector<bool> known_;  // dims set (a rank-0 value has empty dims too)
  ValueId input_ = -1, output_ = -1;
};

// The value a Constant node's module holds (nullptr when it is not a graph::ConstantTensor).
const Tensor* constant_value(const nn::Module& m);

// Concrete dims for a batch size.
Shape bind_batch(const std::vector<int64_t>& dims, int64_t batch);
std::string dims_str(const std::vector<int64_t>& dims);

}  // namespace nns::graph
