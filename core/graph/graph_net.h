// GraphNet: the network of a model read from outside (ONNX, core/io/onnx.h) as an nn::Module
// that runs its graph::Graph forward and backward op by op through kernels/ops.h, on the CPU
// or CUDA: the reference path for any graph (the CPU engine's plan, core/engine/, runs the same
// graph where it knows every node).
//
// It holds the model's leaf modules (nn::Conv2d, nn::Linear, nn::BatchNorm2d, nn::Dropout, and
// ConstantTensor for tensors no layer owns), and the graph's nodes point at them, so that the
// splitter's machinery works on it unchanged:
//   - state(): every tensor under the name the file gives it (ONNX initializer names, both
//     "layer1.0.conv1.weight" and "onnx::Conv_123"), in node order; BatchNorm's
//     num_batches_tracked is not listed (ONNX has none);
//   - module_for(key): the module owning a state key (masked mode of the obfuscator, split
//     inference's post_forward hooks);
//   - fold_batchnorm(): a Conv -> BatchNormalization pair folds (eval mode) where the conv's
//     output is read by the BN only, with a following Relu/Relu6 where the BN's output is read by
//     it only;
//   - training: backward accumulates the gradient of a value read by several nodes; a tensor
//     that several nodes use (the exporter deduplicates equal initializers) is one storage, and
//     its gradient is the sum over the users (owner's Parameter::grad). Running statistics
//     shared by several BatchNorms are then updated by each of them in turn.
//
// Buffers: every value has its own output buffer (reused across batches of one size); Flatten
// and Reshape are views; Identity, Dropout in eval mode and folded BatchNorms alias their input.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/graph/graph.h"
#include "core/nn/layers.h"

namespace nns::graph {

// A tensor of the model that no layer owns (OpKind::Constant). Not trainable (a buffer).
class ConstantTensor : public nn::Module {
 public:
  explicit ConstantTensor(Tensor v);
  const Tensor& forward(const Tensor&) override { return value; }
  const Tensor& backward(const Tensor& dy) override { return dy; }
  std::string describe() const override { return "Constant" + shape_str(value.shape()); }
  Tensor value;
};

// What a GraphNet is built from (an importer's result; shared by every copy of the model).
struct GraphDef {
  virtual ~GraphDef() = default;
  // infer_dims() done; every Node::module null. Conv nodes have symmetric pads (an importer
  // turns asymmetric ones into a Pad node). Input [N, C, S, S], output [N, classes].
  Graph graph;
  // Per node (same index): the state names of its module's tensors, in this order:
  //   Conv, Linear: weight[, bias]; BatchNorm: weight, bias, running_mean, running_var;
  //   Constant: its value ("" when it is a constant of the graph itself, not a state entry).
  // Equal names are one tensor shared by those nodes.
  std::vector<std::vector<std::string>> state_names;
  std::vector<Tensor> constants;  // per node: a Constant node's value (undefined otherwise)
  std::string source;             // the file, for messages
};

class GraphNet : public nn::Module {
 public:
  explicit GraphNet(std::shared_ptr<const GraphDef> def);
  const Tensor& forward(const Tensor& x) override;
  const Tensor& backward(const Tensor& dy) override;
  std::string describe() const override;
  void collect_state(const std::string& prefix, std::vector<nn::StateEntry>& out) override;
  void to(Device device) override;

  // The graph whose nodes point at this net's modules.
  const Graph& graph() const { return graph_; }
  const std::shared_ptr<const GraphDef>& def() const { return def_; }
  // The module owning state key `key` (nullptr when none).
  nn::Module* module_for(const std::string& key) const;
  // See the header comment; returns the number of folded convolutions.
  int fold_batchnorm();
  void unfold_batchnorm();

 private:
  struct Slot {
    Tensor* tensor;
    nn::Parameter* param;  // null for buffers
  };
  std::vector<Slot> slots(const Node& n) const;
  void relink();  // re-share tensors after a move
  void bind(int64_t batch);
  // Adds g to the gradient of value v (the first contribution is kept by handle).
  void accumulate(ValueId v, const Tensor& g);
  Tensor& buffer(ValueId v, const Shape& shape);
  Tensor& grad_buffer(int node, size_t slot, const Shape& shape);

  std::shared_ptr<const GraphDef> def_;
  Graph graph_;
  std::vector<std::unique_ptr<nn::Module>> owned_;
  std::map<std::string, nn::Module*> owner_of_;       // state key -> module
  std::vector<nn::StateEntry> state_;                 // without prefix
  struct Share {
    Tensor* owner;
    Tensor* user;
    nn::Parameter* owner_param;
    nn::Parameter* user_param;
  };
  std::vector<Share> shares_;
  std::vector<bool> bypass_;       // per node: an activation folded into the conv before it
  std::vector<bool> needs_grad_;   // per value: depends on the input
  std::vector<int> fanout_;        // per value: number of reading nodes
  int64_t batch_ = -1;
  std::vector<Shape> shapes_;      // per value, for batch_
  std::vector<Tensor> val_, buf_, grad_, acc_;
  std::vector<std::vector<Tensor>> gbuf_;  // per node, per input: gradient buffers
  std::vector<Tensor> argmax_;             // per node (MaxPool)
  Tensor dx_;                              // the gradient of the input (last backward)
};

}  // namespace nns::graph
