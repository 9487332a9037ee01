#include "core/models/zoo.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "core/engine/plan.h"
#include "core/graph/graph.h"
#include "core/graph/lower.h"
#include "core/graph/graph_net.h"
#include "core/nn/blocks.h"

namespace nns::models {

using nn::Activation;
using nn::BasicBlock;
using nn::BatchNorm2d;
using nn::Conv2d;
using nn::Linear;
using nn::Sequential;
using std::make_unique;

namespace {

int scaled(int c, float wm) { return std::max(1, int(c * wm)); }

// torchvision's _make_divisible.
int make_divisible(double v, int divisor) {
  int new_v = std::max(divisor, int(v + divisor / 2.0) / divisor * divisor);
  if (new_v < 0.9 * v) new_v += divisor;
  return new_v;
}

std::unique_ptr<nn::Module> build_lenet5(const ModelSpec& s) {
  auto net = make_unique<Sequential>();
  net->add("conv1", make_unique<Conv2d>(s.in_channels, 6, 5, 1, 2));
  net->add("relu1", make_unique<Activation>(ops::Activation::ReLU));
  net->add("pool1", make_unique<nn::MaxPool2d>(2, 2));
  net->add("conv2", make_unique<Conv2d>(6, 16, 5, 1, 0));
  net->add("relu2", make_unique<Activation>(ops::Activation::ReLU));
  net->add("pool2", make_unique<nn::MaxPool2d>(2, 2));
  net->add("flatten", make_unique<nn::Flatten>());
  int side = ((s.input_size / 2) - 4) / 2;
  if (side <= 0) throw std::invalid_argument("lenet5: input size too small");
  net->add("fc1", make_unique<Linear>(16 * side * side, 120));
  net->add("relu3", make_unique<Activation>(ops::Activation::ReLU));
  net->add("fc2", make_unique<Linear>(120, 84));
  net->add("relu4", make_unique<Activation>(ops::Activation::ReLU));
  net->add("fc3", make_unique<Linear>(84, s.num_classes));
  return net;
}

// CIFAR ResNet-20 (He et al.) with torchvision names: no max-pool, 3 stages of 3 blocks.
std::unique_ptr<nn::Module> build_resnet20(const ModelSpec& s) {
  auto net = make_unique<Sequential>();
  int w[3] = {scaled(16, s.width_mult), scaled(32, s.width_mult), scaled(64, s.width_mult)};
  net->add("conv1", make_unique<Conv2d>(s.in_channels, w[0], 3, 1, 1, 1, false));
  net->add("bn1", make_unique<BatchNorm2d>(w[0]));
  net->add("relu", make_unique<Activation>(ops::Activation::ReLU));
  int in = w[0];
  for (int stage = 0; stage < 3; ++stage) {
    auto layer = make_unique<Sequential>();
    for (int b = 0; b < 3; ++b) {
      int stride = (stage > 0 && b == 0) ? 2 : 1;
      layer->add(std::to_string(b), make_unique<BasicBlock>(in, w[stage], stride));
      in = w[stage];
    }
    net->add("layer" + std::to_string(stage + 1), std::move(layer));
  }
  net->add("avgpool", make_unique<nn::GlobalAvgPoolFlatten>());
  net->add("fc", make_unique<Linear>(in, s.num_classes));
  return net;
}

// CIFAR ResNet-18/34 of huyvnphan/PyTorch_CIFAR10: 3x3 stem, max-pool kept.
std::unique_ptr<nn::Module> build_resnet(const ModelSpec& s, const int blocks[4]) {
  auto net = make_unique<Sequential>();
  int base = scaled(64, s.width_mult);
  net->add("conv1", make_unique<Conv2d>(s.in_channels, base, 3, 1, 1, 1, false));
  net->add("bn1", make_unique<BatchNorm2d>(base));
  net->add("relu", make_unique<Activation>(ops::Activation::ReLU));
  net->add("maxpool", make_unique<nn::MaxPool2d>(3, 2, 1));
  int in = base;
  for (int stage = 0; stage < 4; ++stage) {
    int planes = scaled(64 << stage, s.width_mult);
    auto layer = make_unique<Sequential>();
    for (int b = 0; b < blocks[stage]; ++b) {
      int stride = (stage > 0 && b == 0) ? 2 : 1;
      layer->add(std::to_string(b), make_unique<BasicBlock>(in, planes, stride));
      in = planes;
    }
    net->add("layer" + std::to_string(stage + 1), std::move(layer));
  }
  net->add("avgpool", make_unique<nn::GlobalAvgPoolFlatten>());
  net->add("fc", make_unique<Linear>(in, s.num_classes));
  return net;
}

std::unique_ptr<nn::Module> build_vgg(const ModelSpec& s, const std::vector<int>& cfg) {
  auto net = make_unique<Sequential>();
  auto features = make_unique<Sequential>();
  int idx = 0, in = s.in_channels;
  for (int v : cfg) {
    if (v == 0) {
      features->add(std::to_string(idx++), make_unique<nn::MaxPool2d>(2, 2));
    } else {
      int c = scaled(v, s.width_mult);
      features->add(std::to_string(idx++), make_unique<Conv2d>(in, c, 3, 1, 1));
      features->add(std::to_string(idx++), make_unique<BatchNorm2d>(c));
      features->add(std::to_string(idx++), make_unique<Activation>(ops::Activation::ReLU));
      in = c;
    }
  }
  net->add("features", std::move(features));
  net->add("avgpool", make_unique<nn::GlobalAvgPoolFlatten>());
  int hidden = scaled(4096, s.width_mult);
  auto cls = make_unique<Sequential>();
  cls->add("0", make_unique<Linear>(in, hidden));
  cls->add("1", make_unique<Activation>(ops::Activation::ReLU));
  cls->add("2", make_unique<nn::Dropout>(0.5f, 0xd0));
  cls->add("3", make_unique<Linear>(hidden, hidden));
  cls->add("4", make_unique<Activation>(ops::Activation::ReLU));
  cls->add("5", make_unique<nn::Dropout>(0.5f, 0xd1));
  cls->add("6", make_unique<Linear>(hidden, s.num_classes));
  net->add("classifier", std::move(cls));
  return net;
}

std::unique_ptr<nn::Module> build_mobilenet_v2(const ModelSpec& s) {
  // t, c, n, s with CIFAR strides (first conv stride 1, second stage stride 1).
  const int setting[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 4, 2},
                             {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  auto net = make_unique<Sequential>();
  auto features = make_unique<Sequential>();
  int input_channel = make_divisible(32 * s.width_mult, 8);
  int last_channel = make_divisible(1280 * std::max(1.0f, s.width_mult), 8);
  int idx = 0;
  features->add(std::to_string(idx++), nn::conv_bn_relu6(s.in_channels, input_channel, 3, 1, 1));
  for (const auto& row : setting) {
    int out = make_divisible(row[1] * s.width_mult, 8);
    for (int i = 0; i < row[2]; ++i) {
      features->add(std::to_string(idx++), make_unique<nn::InvertedResidual>(
                                                input_channel, out, i == 0 ? row[3] : 1, row[0]));
      input_channel = out;
    }
  }
  features->add(std::to_string(idx++), nn::conv_bn_relu6(input_channel, last_channel, 1, 1, 1));
  net->add("features", std::move(features));
  net->add("pool", make_unique<nn::GlobalAvgPoolFlatten>());
  auto cls = make_unique<Sequential>();
  cls->add("0", make_unique<nn::Dropout>(0.2f, 0xd2));
  cls->add("1", make_unique<Linear>(last_channel, s.num_classes));
  net->add("classifier", std::move(cls));
  return net;
}

const std::vector<int> kVggA = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
const std::vector<int> kVggB = {64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
const std::vector<int> kVggD = {64,  64,  0,   128, 128, 0,   256, 256, 256,
                                0,   512, 512, 512, 0,   512, 512, 512, 0};
const std::vector<int> kVggE = {64,  64,  0,   128, 128, 0,   256, 256, 256, 256, 0,
                                512, 512, 512, 512, 0,   512, 512, 512, 512, 0};

// Initialisation: PyTorch defaults for lenet5 and resnet20 (MODELS.md); torchvision's scheme
// (kaiming_normal fan_out for convs, BN 1/0, default Linear) for the torchvision family.
void initialise(nn::Module& net, bool torchvision_style, Rng& rng) {
  std::vector<std::pair<std::string, nn::Module*>> mods;
  net.collect_modules("", mods);
  for (auto& [name, m] : mods) {
    if (auto* c = dynamic_cast<Conv2d*>(m)) {
      if (torchvision_style)
        c->init_kaiming_fan_out(rng);
      else
        c->init_default(rng);
    } else if (auto* l = dynamic_cast<Linear*>(m)) {
      l->init_default(rng);
    }
  }
}

}  // namespace

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {
      "lenet5",   "resnet20", "resnet18", "resnet34",    "vgg11_bn",
      "vgg13_bn", "vgg16_bn", "vgg19_bn", "mobilenet_v2"};
  return names;
}

bool is_known_model(const std::string& arch) {
  const auto& n = model_names();
  return std::find(n.begin(), n.end(), arch) != n.end();
}

int model_input_size(const std::string& arch, int data_size) {
  if (arch.rfind("vgg", 0) == 0 && data_size < 32) return 32;
  return data_size;
}

std::string spec_bounds_error(const ModelSpec& s) {
  auto range = [](const char* key, int v, int hi) {
    if (v >= 1 && v <= hi) return std::string();
    return std::string(key) + " = " + std::to_string(v) + " is out of range [1, " +
           std::to_string(hi) + "]";
  };
  for (const std::string& e : {range("in_channels", s.in_channels, kMaxInChannels),
                               range("input_size", s.input_size, kMaxInputSize),
                               range("num_classes", s.num_classes, kMaxNumClasses)})
    if (!e.empty()) return e;
  if (!(s.width_mult >= kMinWidthMult && s.width_mult <= kMaxWidthMult)) {
    std::ostringstream o;
    o << "width_mult = " << s.width_mult << " is out of range [" << kMinWidthMult << ", "
      << kMaxWidthMult << "]";
    return o.str();
  }
  return "";
}

std::unique_ptr<Model> build_model(const ModelSpec& spec, uint64_t seed) {
  if (spec.graph) {
    auto net = std::make_unique<graph::GraphNet>(spec.graph);
    Rng rng(seed);
    initialise(*net, false, rng);
    auto model = std::make_unique<Model>(spec, std::move(net));
    model->set_input_grad(false);
    return model;
  }
  if (!is_known_model(spec.arch)) {
    std::string all;
    for (const auto& n : model_names()) all += (all.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown model '" + spec.arch + "' (known: " + all + ")");
  }
  if (std::string e = spec_bounds_error(spec); !e.empty())
    throw std::invalid_argument("model " + spec.arch + ": " + e);
  std::unique_ptr<nn::Module> net;
  bool tv = true;
  const std::string& a = spec.arch;
  static const int r18[4] = {2, 2, 2, 2}, r34[4] = {3, 4, 6, 3};
  if (a == "lenet5") {
    net = build_lenet5(spec);
    tv = false;
  } else if (a == "resnet20") {
    net = build_resnet20(spec);
    tv = false;
  } else if (a == "resnet18") {
    net = build_resnet(spec, r18);
  } else if (a == "resnet34") {
    net = build_resnet(spec, r34);
  } else if (a == "vgg11_bn") {
    net = build_vgg(spec, kVggA);
  } else if (a == "vgg13_bn") {
    net = build_vgg(spec, kVggB);
  } else if (a == "vgg16_bn") {
    net = build_vgg(spec, kVggD);
  } else if (a == "vgg19_bn") {
    net = build_vgg(spec, kVggE);
  } else {
    net = build_mobilenet_v2(spec);
  }
  Rng rng(seed);
  initialise(*net, tv, rng);
  auto model = std::make_unique<Model>(spec, std::move(net));
  model->set_input_grad(false);
  return model;
}

std::unique_ptr<Model> clone_model(Model& m) {
  auto c = build_model(m.spec());
  c->to(m.device());
  auto& src = m.state();
  auto& dst = c->state();
  for (size_t i = 0; i < src.size(); ++i) dst[i].tensor->copy_from(*src[i].tensor);
  return c;
}

Model::Model(ModelSpec spec, std::unique_ptr<nn::Module> net)
    : spec_(std::move(spec)), net_(std::move(net)) {}

Model::~Model() = default;

const graph::Graph& Model::graph() {
  if (!graph_)
    graph_ = std::make_unique<graph::Graph>(
        graph::lower_module_tree(*net_, spec_.in_channels, spec_.input_size));
  return *graph_;
}

bool Model::use_plan() {
  auto no = [&](std::string why) {
    last_reason_ = std::move(why);
    return false;
  };
  if (device() != Device::CPU) return no("not on the CPU");
  if (engine::cpu_engine() == engine::CpuEngine::Layers) return no("--cpu-engine layers");
  if (input_grad_enabled_) return no("the input gradient is wanted");
  if (!graph_checked_) {
    graph_checked_ = true;
    try {
      no_plan_reason_ = engine::Plan::unsupported(graph());
    } catch (const std::exception& e) {
      no_plan_reason_ = e.what();
    }
  }
  if (!no_plan_reason_.empty()) return no(no_plan_reason_);
  for (auto& [name, m] : modules()) {
    auto* c = dynamic_cast<nn::Conv2d*>(m);
    auto* l = dynamic_cast<nn::Linear*>(m);
    if ((c && c->post_forward) || (l && l->post_forward))
      return no("'" + name + "' has a post_forward hook (split inference)");
  }
  return true;
}

engine::Plan& Model::plan_for(int64_t batch) {
  const engine::CpuEngine e = engine::cpu_engine();
  const std::string key = engine::Plan::signature(graph(), batch, grad_enabled_, e);
  engine::Plan* plan = nullptr;
  for (size_t i = 0; i < plans_.size(); ++i) {
    if (plans_[i].first != key) continue;
    auto hit = std::move(plans_[i]);
    plans_.erase(plans_.begin() + std::ptrdiff_t(i));
    plans_.push_back(std::move(hit));
    plan = plans_.back().second.get();
    break;
  }
  if (!plan) {
    // Few plans live at once (training step, evaluation batch, its last partial batch): each
    // holds its arena.
    constexpr size_t kMaxPlans = 3;
    if (plans_.size() >= kMaxPlans) {
      if (last_used_ == plans_.front().second.get()) last_used_ = nullptr;
      plans_.erase(plans_.begin());
    }
    plans_.emplace_back(key, std::make_unique<engine::Plan>(graph(), batch, grad_enabled_, e));
    plan = plans_.back().second.get();
  } else if (plan != last_used_) {
    // Weights may have moved while another plan (or the modules) ran.
    plan->weights_changed();
  }
  last_used_ = plan;
  return *plan;
}

void Model::weights_changed() {
  for (auto& [k, p] : plans_) p->weights_changed();
}

std::string Model::engine_status() const {
  if (fwd_plan_) return "plan\n" + fwd_plan_->describe();
  return "layers: " + last_reason_;
}

const Tensor& Model::forward(const Tensor& x) {
  if (x.ndim() != 4 || x.dim(1) != spec_.in_channels || x.dim(2) != spec_.input_size ||
      x.dim(3) != spec_.input_size)
    throw std::invalid_argument(spec_.arch + ": expected input [N, " +
                                std::to_string(spec_.in_channels) + ", " +
                                std::to_string(spec_.input_size) + ", " +
                                std::to_string(spec_.input_size) + "], got " +
                                shape_str(x.shape()));
  if (use_plan()) {
    engine::Plan& p = plan_for(x.dim(0));
    fwd_plan_ = &p;
    return p.forward(x);
  }
  fwd_plan_ = nullptr;
  last_used_ = nullptr;
  return net_->forward(x);
}

void Model::backward(const Tensor& dlogits) {
  if (!grad_enabled_)
    throw std::logic_error(spec_.arch + ": backward with gradients turned off (NoGrad)");
  if (fwd_plan_) {
    fwd_plan_->backward(dlogits);
    return;
  }
  const Tensor& dx = net_->backward(dlogits);
  if (stem_ && input_grad_enabled_) input_grad_ = dx;
}

void Model::set_input_grad(bool enabled) {
  if (!stem_) {
    nn::Module* first = net_.get();
    while (auto* s = dynamic_cast<Sequential*>(first)) first = s->at(0);
    stem_ = first;
  }
  stem_->set_needs_input_grad(enabled);
  input_grad_enabled_ = enabled;
}

std::vector<nn::StateEntry>& Model::state() {
  if (!state_built_) {
    net_->collect_state("", state_);
    state_built_ = true;
  }
  return state_;
}

std::vector<std::pair<std::string, nn::Parameter*>> Model::parameters() {
  std::vector<std::pair<std::string, nn::Parameter*>> out;
  for (auto& e : state())
    if (e.param) out.emplace_back(e.key, e.param);
  return out;
}

int64_t Model::num_parameters() {
  int64_t n = 0;
  for (auto& [k, p] : parameters()) n += p->value.numel();
  return n;
}

std::vector<std::pair<std::string, nn::Module*>> Model::modules() {
  std::vector<std::pair<std::string, nn::Module*>> out;
  net_->collect_modules("", out);
  return out;
}

nn::Module* Model::module_for(const std::string& param_key) {
  if (auto* g = dynamic_cast<graph::GraphNet*>(net_.get())) return g->module_for(param_key);
  auto dot = param_key.rfind('.');
  if (dot == std::string::npos) return nullptr;
  std::string path = param_key.substr(0, dot);
  for (auto& [name, m] : modules())
    if (name == path) return m;
  return nullptr;
}

void Model::set_dropout_enabled(bool enabled) {
  for (auto& [name, m] : modules())
    if (auto* d = dynamic_cast<nn::Dropout*>(m)) d->set_enabled(enabled);
}

std::vector<std::string> eligible_layers(Model& model, const std::string& rule) {
  if (rule != "spatial" && rule != "all")
    throw std::invalid_argument("unknown eligibility rule '" + rule +
                                "' (expected spatial or all)");
  std::vector<std::string> out;
  for (auto& [key, p] : model.parameters()) {
    const Shape& s = p->value.shape();
    if (s.size() < 2) continue;
    if (rule == "spatial" && s.back() <= 1) continue;
    out.push_back(key);
  }
  return out;
}

}  // namespace nns::models
