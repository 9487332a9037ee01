#include "core/splitter/split_inference.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <stdexcept>

#include "kernels/ops.h"

namespace nns::splitter {

namespace {

// A scratch tensor with room for at least `count` elements of `dt` on `dev`.
float* scratch_f32(Tensor& t, int64_t count, Device dev) {
  if (!t.defined() || t.device() != dev || t.dtype() != DType::F32 || t.numel() < count)
    t = Tensor({std::max<int64_t>(count, 1)}, DType::F32, dev);
  return t.f32();
}

}  // namespace

struct SplitInference::Layer {
  std::string module_name;
  nn::Conv2d* conv = nullptr;
  nn::Linear* lin = nullptr;
  std::vector<int32_t> filters;  // affected output channels, ascending
  struct Group {
    int g;      // convolution group
    int first;  // position of its first affected filter in `filters`
    int count;  // affected filters in this group
  };
  std::vector<Group> groups;
  int64_t row = 0;   // elements per filter
  Tensor dw_host;    // [n_aff, row] ΔW′ of the affected filters
  Tensor db_host;    // [n_aff] Δb (undefined when the bias has no secrets)
  Tensor dw, db;     // on the model's device
  Tensor os, xg, tmp, idx;
  int64_t idx_n = -1, idx_hw = -1;
  std::function<void(const Tensor&, Tensor&)> prev;
  int64_t macs = 0;

  int c_out() const { return conv ? conv->c_out : lin->out; }
  std::function<void(const Tensor&, Tensor&)>& hook() {
    return conv ? conv->post_forward : lin->post_forward;
  }

  void build_index(int64_t n, int64_t hw, Device dev) {
    int64_t n_aff = int64_t(filters.size());
    Tensor h({n * n_aff * hw}, DType::I64);
    int64_t* p = h.i64();
    for (const auto& G : groups) {
      int64_t base = n * G.first * hw;
      for (int64_t b = 0; b < n; ++b)
        for (int64_t i = 0; i < G.count; ++i) {
          int64_t src = base + (b * G.count + i) * hw;
          int64_t dst = (b * c_out() + filters[size_t(G.first + i)]) * hw;
          for (int64_t q = 0; q < hw; ++q) p[src + q] = dst + q;
        }
    }
    idx = h.to(dev);
    idx_n = n;
    idx_hw = hw;
  }

  // out -= O_s on the affected channels, O_s = ΔW′ * x (+ Δb).
  void correct(const Tensor& x, Tensor& out) {
    Device dev = out.device();
    if (!dw.defined() || dw.device() != dev) {
      dw = dw_host.to(dev);
      db = db_host.defined() ? db_host.to(dev) : Tensor();
      idx = Tensor();
      idx_n = idx_hw = -1;
    }
    ops::Context ctx{dev, nullptr};
    int64_t n = out.dim(0);
    int64_t hw = conv ? out.dim(2) * out.dim(3) : 1;
    int64_t n_aff = int64_t(filters.size());
    int64_t total = n * n_aff * hw;
    float* os_p = scratch_f32(os, total, dev);
    if (conv) {
      int cin_g = conv->c_in / conv->groups;
      int h = int(x.dim(2)), w = int(x.dim(3));
      for (const auto& G : groups) {
        ops::Conv2dShape s;
        s.n = int(n);
        s.c_in = cin_g;
        s.h = h;
        s.w = w;
        s.c_out = G.count;
        s.kh = conv->kh;
        s.kw = conv->kw;
        s.stride_h = conv->stride_h;
        s.stride_w = conv->stride_w;
        s.pad_h = conv->pad_h;
        s.pad_w = conv->pad_w;
        s.groups = 1;
        const float* xin = x.f32();
        if (conv->groups > 1) {
          int64_t plane = int64_t(cin_g) * h * w;
          float* g_p = scratch_f32(xg, n * plane, dev);
          for (int64_t b = 0; b < n; ++b)
            ops::copy_bytes(dev, g_p + b * plane, dev,
                            x.f32() + (b * conv->c_in + int64_t(G.g) * cin_g) * int64_t(h) * w,
                            size_t(plane) * sizeof(float));
          xin = g_p;
        }
        ops::Epilogue epi;
        if (db.defined()) epi.bias = db.f32() + G.first;
        ops::conv2d_forward(ctx, s, xin, dw.f32() + int64_t(G.first) * row, epi,
                            os_p + n * G.first * hw);
      }
    } else {
      ops::Epilogue epi;
      if (db.defined()) epi.bias = db.f32();
      ops::linear_forward(ctx, int(n), lin->in, int(n_aff), x.f32(), dw.f32(), epi, os_p);
    }
    if (idx_n != n || idx_hw != hw) build_index(n, hw, dev);
    float* t_p = scratch_f32(tmp, total, dev);
    ops::gather(ctx, total, idx.i64(), out.f32(), t_p);
    ops::axpy(ctx, total, -1.0f, os_p, t_p);
    ops::scatter(ctx, total, idx.i64(), t_p, out.f32());
  }
};

SplitInference::SplitInference(models::Model& m, const Secrets& s) {
  check_secrets_for_model(m, s);
  // Group the secret tensors by module.
  struct Pending {
    nn::Conv2d* conv = nullptr;
    nn::Linear* lin = nullptr;
    const SecretTensor* weight = nullptr;
    const SecretTensor* bias = nullptr;
  };
  // Grouped by module, not by key prefix: a model read from ONNX names its tensors by
  // initializer ("onnx::Conv_12"), so which tensor of its layer a key is comes from the module.
  std::map<const nn::Module*, Pending> pending;
  std::vector<std::pair<std::string, const nn::Module*>> order;
  std::map<std::string, const Tensor*> state;
  for (auto& e : m.state()) state[e.key] = e.tensor;
  std::map<const nn::Module*, std::string> names;
  for (auto& [name, mod] : m.modules()) names[mod] = name;
  for (const auto& t : s.tensors) {
    if (t.index.empty()) continue;
    nn::Module* mod = m.module_for(t.key);
    auto* conv = dynamic_cast<nn::Conv2d*>(mod);
    auto* lin = dynamic_cast<nn::Linear*>(mod);
    if (conv && conv->dilated())
      throw std::runtime_error("split inference: secrets on '" + t.key + "' (" + conv->describe() +
                               "): dilated convolutions are not supported on the secure side; "
                               "restore the model exactly instead (nnsplitter restore)");
    auto held = state.find(t.key);
    const Tensor* tensor = held == state.end() ? nullptr : held->second;
    const bool is_weight = tensor && ((conv && tensor == &conv->weight.value) ||
                                      (lin && tensor == &lin->weight.value));
    const bool is_bias = tensor && ((conv && conv->has_bias && tensor == &conv->bias.value) ||
                                    (lin && lin->has_bias && tensor == &lin->bias.value));
    if (!(conv || lin) || !(is_weight || is_bias)) {
      std::string what = mod ? mod->describe() : "no module";
      throw std::runtime_error(
          "split inference: secrets on '" + t.key + "' (" + what +
          ") cannot be corrected on the secure side: O_n - O_s = W * X holds only for the "
          "weights and biases of convolution and linear layers; restore the model exactly "
          "instead (nnsplitter restore)");
    }
    auto [it, fresh] = pending.try_emplace(mod);
    if (fresh) order.emplace_back(names.count(mod) ? names[mod] : t.key, mod);
    it->second.conv = conv;
    it->second.lin = lin;
    (is_weight ? it->second.weight : it->second.bias) = &t;
  }
  for (const auto& [path, key] : order) {
    const Pending& p = pending.at(key);
    auto L = std::make_unique<Layer>();
    L->module_name = path;
    L->conv = p.conv;
    L->lin = p.lin;
    const Tensor& W = p.conv ? p.conv->weight.value : p.lin->weight.value;
    Tensor wh = W.to(Device::CPU);
    int co = L->c_out();
    L->row = W.numel() / co;
    std::vector<int32_t> f;
    if (p.weight)
      for (int64_t j : p.weight->index) f.push_back(int32_t(j / L->row));
    if (p.bias)
      for (int64_t j : p.bias->index) f.push_back(int32_t(j));
    std::sort(f.begin(), f.end());
    f.erase(std::unique(f.begin(), f.end()), f.end());
    L->filters = f;
    int64_t n_aff = int64_t(f.size());
    std::map<int32_t, int64_t> pos;
    for (int64_t i = 0; i < n_aff; ++i) pos[f[size_t(i)]] = i;
    L->dw_host = Tensor({n_aff, L->row});
    float* dwp = L->dw_host.f32();
    if (p.weight) {
      const float* wp = wh.f32();
      for (size_t k = 0; k < p.weight->index.size(); ++k) {
        int64_t j = p.weight->index[k];
        int64_t i = pos.at(int32_t(j / L->row));
        dwp[i * L->row + j % L->row] = wp[j] - p.weight->original[k];
      }
    }
    if (p.bias) {
      const Tensor& B = p.conv ? p.conv->bias.value : p.lin->bias.value;
      Tensor bh = B.to(Device::CPU);
      L->db_host = Tensor({n_aff});
      for (size_t k = 0; k < p.bias->index.size(); ++k) {
        int64_t j = p.bias->index[k];
        L->db_host.f32()[pos.at(int32_t(j))] = bh.f32()[j] - p.bias->original[k];
      }
    }
    // Per-group runs of affected filters (one group for ordinary convolutions and linears).
    int groups = p.conv ? p.conv->groups : 1;
    int per_group = co / groups;
    for (int64_t i = 0; i < n_aff; ++i) {
      int g = f[size_t(i)] / per_group;
      if (L->groups.empty() || L->groups.back().g != g)
        L->groups.push_back({g, int(i), 0});
      L->groups.back().count++;
    }
    layers_.push_back(std::move(L));
  }

  // Probe: one zero image through the model to learn each hooked layer's output size.
  if (!layers_.empty()) {
    const auto& spec = m.spec();
    std::vector<std::function<void(const Tensor&, Tensor&)>> saved;
    for (auto& L : layers_) {
      saved.push_back(L->hook());
      Layer* raw = L.get();
      L->hook() = [raw](const Tensor& x, Tensor& out) {
        if (raw->conv) {
          int cin_g = raw->conv->c_in / raw->conv->groups;
          raw->macs = int64_t(raw->filters.size()) * cin_g * raw->conv->kh * raw->conv->kw *
                      out.dim(2) * out.dim(3);
        } else {
          raw->macs = int64_t(raw->filters.size()) * (x.numel() / x.dim(0));
        }
      };
    }
    bool was_training = m.net().training();
    m.set_training(false);
    try {
      Tensor probe({1, spec.in_channels, spec.input_size, spec.input_size}, DType::F32,
                   m.device());
      models::NoGrad no_grad(m);
      m.forward(probe);
    } catch (...) {
      for (size_t i = 0; i < layers_.size(); ++i) layers_[i]->hook() = saved[i];
      m.set_training(was_training);
      throw;
    }
    for (size_t i = 0; i < layers_.size(); ++i) layers_[i]->hook() = saved[i];
    m.set_training(was_training);
  }
}

SplitInference::~SplitInference() {
  try {
    remove();
  } catch (...) {
  }
}

void SplitInference::install() {
  if (installed_) return;
  for (auto& L : layers_) {
    L->prev = L->hook();
    Layer* raw = L.get();
    auto prev = L->prev;
    L->hook() = [raw, prev](const Tensor& x, Tensor& out) {
      if (prev) prev(x, out);
      raw->correct(x, out);
    };
  }
  installed_ = true;
}

void SplitInference::remove() {
  if (!installed_) return;
  for (auto& L : layers_) {
    L->hook() = L->prev;
    L->prev = nullptr;
  }
  installed_ = false;
}

int64_t SplitInference::secure_macs_per_image() const {
  int64_t t = 0;
  for (const auto& L : layers_) t += L->macs;
  return t;
}

int64_t SplitInference::affected_filters() const {
  int64_t t = 0;
  for (const auto& L : layers_) t += int64_t(L->filters.size());
  return t;
}

std::vector<SplitLayerInfo> SplitInference::layers() const {
  std::vector<SplitLayerInfo> out;
  for (const auto& L : layers_)
    out.push_back({L->module_name, L->conv ? "conv" : "linear", L->filters, L->macs});
  return out;
}

}  // namespace nns::splitter
