// The model zoo (SPEC.md §3, MODELS.md) with PyTorch state_dict names.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/nn/layers.h"

namespace nns::graph {
class Graph;
struct GraphDef;
}
namespace nns::engine {
class Plan;
}

namespace nns::models {

// arch of a model read from a file that carries its own graph (ONNX): spec.graph says which.
inline constexpr const char* kGraphArch = "onnx";

struct ModelSpec {
  std::string arch;       // lenet5, resnet20, resnet18, resnet34, vgg11_bn..vgg19_bn, mobilenet_v2
  int in_channels = 1;
  int input_size = 28;    // square input (VGG needs 32: 28x28 data is zero-padded to 32)
  int num_classes = 10;
  float width_mult = 1.0f;  // channel multiplier (1 = the published widths); used by tests
  // A model read from ONNX (arch kGraphArch): its graph. build_model builds a graph::GraphNet
  // of it (fresh weights, PyTorch's default initialisation by seed), so clone_model and the
  // attacks' from-scratch baselines work as for the zoo.
  std::shared_ptr<const graph::GraphDef> graph = nullptr;
};

// Bounds on a ModelSpec (build_model refuses anything outside them; weights metadata and
// configs are checked against them with the file named). Far above any dataset we read (1 or 3
// channels, 28 or 32 pixels, 10 or 100 classes) yet low enough that no spec within them needs
// more than a few GB for its parameters: in_channels = 2^31 would ask for a 2^31 x 64 x 3 x 3
// stem convolution.
inline constexpr int kMaxInChannels = 256;
inline constexpr int kMaxInputSize = 1024;     // lenet5's first Linear grows with its square
inline constexpr int kMaxNumClasses = 50000;   // ImageNet-21k has 21,841
inline constexpr float kMinWidthMult = 0.01f;
inline constexpr float kMaxWidthMult = 4.0f;   // vgg19_bn at 4: ~2.5 GB of parameters

// "" when the spec is within the bounds above, else what is wrong ("in_channels = 0 is out of
// range [1, 256]"), naming the field as weights metadata and the CLI do.
std::string spec_bounds_error(const ModelSpec& spec);

// A whole network: the module tree plus what it was built for.
//
// On the CPU, forward and backward run through an execution plan of the CPU engine
// (core/engine/plan.h) built for the batch and the modes the modules are in, cached, and rebuilt
// when either changes; module by module (the reference path) where the engine is `layers`, on
// CUDA, and for what a plan does not run (input gradients, post_forward hooks, ops outside the
// engine: engine_status() says which).
class Model {
 public:
  Model(ModelSpec spec, std::unique_ptr<nn::Module> net);
  ~Model();
  const ModelSpec& spec() const { return spec_; }
  nn::Module& net() { return *net_; }

  // logits [N, classes] for x [N, C, H, W].
  const Tensor& forward(const Tensor& x);
  // Backward from dlogits; fills parameter gradients.
  void backward(const Tensor& dlogits);

  // Whether a backward may follow the next forwards (default true). Off, an inference plan
  // runs: BatchNorm folded, no activation kept, less memory; backward() then throws.
  // Evaluation loops turn it off (NoGrad).
  void set_grad_enabled(bool enabled) { grad_enabled_ = enabled; }
  bool grad_enabled() const { return grad_enabled_; }
  // "plan" (with the plan's summary) or "layers: <why>" for the last forward.
  std::string engine_status() const;
  // The plan that ran the last forward (null when the modules ran it).
  engine::Plan* last_plan() const { return fwd_plan_; }
  // The graph the engine runs (lowered from the module tree once).
  const graph::Graph& graph();
  // Tells the cached plans that weights or BatchNorm statistics changed (they re-pack at their
  // next forward). Needed between two no-grad forwards of the same batch and mode when the
  // weights changed in between (an inference plan packs once; core/engine/plan.h says when
  // plans re-read by themselves): evaluation loops call it first.
  void weights_changed();

  void set_training(bool t) { net_->set_training(t); }
  void to(Device d) { net_->to(d); }
  Device device() const { return net_->device(); }

  // Every state_dict entry in PyTorch order (parameters and buffers).
  std::vector<nn::StateEntry>& state();
  // Parameters only, in order.
  std::vector<std::pair<std::string, nn::Parameter*>> parameters();
  int64_t num_parameters();
  // Named modules (full dotted path), pre-order.
  std::vector<std::pair<std::string, nn::Module*>> modules();
  // The module owning a parameter key such as "layer1.0.conv1.weight" (nullptr if none); for a
  // model read from ONNX, the owner of an initializer ("onnx::Conv_123").
  nn::Module* module_for(const std::string& param_key);
  // Turns dropout off (or on) even in training mode (fixture comparisons).
  void set_dropout_enabled(bool enabled);
  // Whether backward computes the gradient w.r.t. the input image (off by default: the stem
  // skips it).
  void set_input_grad(bool enabled);
  // The gradient w.r.t. the input of the last backward (requires set_input_grad(true)).
  const Tensor& input_grad() const { return input_grad_; }

 private:
  ModelSpec spec_;
  std::unique_ptr<nn::Module> net_;
  std::vector<nn::StateEntry> state_;
  bool state_built_ = false;
  nn::Module* stem_ = nullptr;
  Tensor input_grad_;
  bool input_grad_enabled_ = false;

  // The CPU engine.
  bool use_plan();
  engine::Plan& plan_for(int64_t batch);
  bool grad_enabled_ = true;
  std::unique_ptr<graph::Graph> graph_;
  std::string no_plan_reason_;  // why the graph cannot run as a plan ("" = it can)
  bool graph_checked_ = false;
  std::vector<std::pair<std::string, std::unique_ptr<engine::Plan>>> plans_;  // most recent last
  engine::Plan* fwd_plan_ = nullptr;
  engine::Plan* last_used_ = nullptr;
  std::string last_reason_;
};

// Turns gradients off for a scope (evaluation loops): Model::set_grad_enabled(false).
class NoGrad {
 public:
  explicit NoGrad(Model& m) : m_(m), was_(m.grad_enabled()) { m.set_grad_enabled(false); }
  ~NoGrad() { m_.set_grad_enabled(was_); }
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  Model& m_;
  bool was_;
};

// Builds and initialises a model (deterministic by seed). Unknown arch → std::invalid_argument
// listing the known names; a spec outside the bounds → std::invalid_argument saying which.
std::unique_ptr<Model> build_model(const ModelSpec& spec, uint64_t seed = 0);
const std::vector<std::string>& model_names();
bool is_known_model(const std::string& arch);
// A deep copy (same spec, same state, same device).
std::unique_ptr<Model> clone_model(Model& m);

// The input size a model needs for data of the given size (VGG: 32 for 28x28 data).
int model_input_size(const std::string& arch, int data_size);

// NNSplitter's eligibility rules (SPEC §1): "spatial" = ndim >= 2 and last dim > 1;
// "all" = ndim >= 2. Returns the eligible parameter keys in model order.
std::vector<std::string> eligible_layers(Model& model, const std::string& rule);

}  // namespace nns::models
