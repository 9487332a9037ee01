#include "core/splitter/method.h"

#include <cstdlib>
#include <stdexcept>

#include "core/splitter/method_common.h"
#include "kernels/ops.h"

namespace nns::splitter {

// Each method's table entry, defined beside its class.
MethodInfo nnsplitter_method_info();
MethodInfo quantile_method_info();
MethodInfo permute_method_info();
MethodInfo swap_method_info();
MethodInfo spread_method_info();
MethodInfo bn_secret_method_info();
MethodInfo attack_aware_method_info();
MethodInfo critical_method_info();

const std::vector<MethodInfo>& method_table() {
  static const std::vector<MethodInfo> table = {
      nnsplitter_method_info(), quantile_method_info(), permute_method_info(),
      swap_method_info(),       spread_method_info(),   bn_secret_method_info(),
      attack_aware_method_info(), critical_method_info()};
  return table;
}

const MethodInfo* find_method(const std::string& name) {
  for (const auto& m : method_table())
    if (m.name == name) return &m;
  return nullptr;
}

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const auto& m : method_table()) names.push_back(m.name);
  return names;
}

// ---- MethodParams

namespace {

const MethodKey& declared_key(const std::string& method, const std::string& name) {
  const MethodInfo* info = find_method(method);
  if (!info) throw std::invalid_argument("unknown method '" + method + "'");
  for (const auto& k : info->keys)
    if (k.name == name) return k;
  throw std::invalid_argument("method " + method + " has no parameter '" + name + "'");
}

}  // namespace

std::string MethodParams::text(const std::string& method, const std::string& name) const {
  const MethodKey& k = declared_key(method, name);
  auto it = values_.find(name);
  std::string v = it == values_.end() ? k.default_value : it->second;
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front())
    v = v.substr(1, v.size() - 2);
  return v;
}

double MethodParams::number(const std::string& method, const std::string& name) const {
  const std::string v = text(method, name);
  char* end = nullptr;
  const double d = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0')
    throw std::invalid_argument("splitter." + method + "." + name + ": '" + v + "' is not a number");
  return d;
}

int64_t MethodParams::integer(const std::string& method, const std::string& name) const {
  const double d = number(method, name);
  if (d != double(int64_t(d)))
    throw std::invalid_argument("splitter." + method + "." + name + ": not an integer");
  return int64_t(d);
}

bool MethodParams::flag(const std::string& method, const std::string& name) const {
  const std::string v = text(method, name);
  if (v == "true") return true;
  if (v == "false") return false;
  throw std::invalid_argument("splitter." + method + "." + name + ": '" + v + "' is not a boolean");
}

// ---- MaskSet

MaskSet::MaskSet(const std::vector<EligibleLayer>& layers, std::vector<LayerMask> masks)
    : layers_(&layers), masks_(std::move(masks)) {
  for (const auto& m : masks_) {
    const int64_t n = int64_t(m.index.size());
    if (n == 0) {
      index_.emplace_back();
      original_.emplace_back();
      value_.emplace_back();
      continue;
    }
    const Tensor& w = layers.at(m.layer).param->value;
    const Device dev = w.device();
    Tensor ih({n}, DType::I64);
    std::copy(m.index.begin(), m.index.end(), ih.i64());
    index_.push_back(ih.to(dev));
    original_.emplace_back(Shape{n}, DType::F32, dev);
    value_.emplace_back(Shape{n}, DType::F32, dev);
    ops::gather(ops::Context{dev, nullptr}, n, index_.back().i64(), w.f32(), original_.back().f32());
  }
}

namespace {
// Writes or reads the entries of each mask: scatter src into the weights, or gather them.
void scatter_all(const std::vector<EligibleLayer>& layers, const std::vector<LayerMask>& masks,
                 const std::vector<Tensor>& index, const std::vector<Tensor>& src) {
  for (size_t l = 0; l < masks.size(); ++l) {
    if (masks[l].index.empty()) continue;
    Tensor& w = layers.at(masks[l].layer).param->value;
    ops::scatter(ops::Context{w.device(), nullptr}, index[l].numel(), index[l].i64(), src[l].f32(),
                 w.f32());
  }
}
}  // namespace

void MaskSet::put_original() const {
  if (layers_) scatter_all(*layers_, masks_, index_, original_);
}

void MaskSet::put_values() const {
  if (layers_) scatter_all(*layers_, masks_, index_, value_);
}

void MaskSet::capture() {
  for (size_t l = 0; l < masks_.size(); ++l) {
    if (masks_[l].index.empty()) continue;
    const Tensor& w = layers_->at(masks_[l].layer).param->value;
    ops::gather(ops::Context{w.device(), nullptr}, index_[l].numel(), index_[l].i64(), w.f32(),
                value_[l].f32());
  }
}

std::vector<int64_t> MaskSet::counts() const {
  std::vector<int64_t> c;
  for (const auto& m : masks_) c.push_back(int64_t(m.index.size()));
  return c;
}

int64_t MaskSet::total() const {
  int64_t t = 0;
  for (const auto& m : masks_) t += int64_t(m.index.size());
  return t;
}

std::vector<std::pair<std::string, Tensor>> MaskSet::export_values(const std::string& prefix) const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t l = 0; l < masks_.size(); ++l) {
    const auto& m = masks_[l];
    const int64_t n = int64_t(m.index.size());
    Tensor idx({n}, DType::I64), val({n});
    std::copy(m.index.begin(), m.index.end(), idx.i64());
    if (n) {
      Tensor v = value_[l].to(Device::CPU);
      std::copy(v.f32(), v.f32() + n, val.f32());
    }
    const std::string& key = layers_->at(m.layer).key;
    out.emplace_back(prefix + key + ".index", idx);
    out.emplace_back(prefix + key + ".value", val);
  }
  return out;
}

MaskSet MaskSet::import_values(const std::vector<EligibleLayer>& layers, const FilterChoice& filters,
                               const std::map<std::string, const Tensor*>& tensors,
                               const std::string& prefix, const std::string& what) {
  // A method may own entries beyond the eligible layers (bn_secret: BatchNorm parameters): those
  // come without filters.
  if (filters.size() > layers.size())
    throw std::runtime_error(what + ": " + std::to_string(filters.size()) + " filter lists for " +
                             std::to_string(layers.size()) + " layers");
  std::vector<LayerMask> masks(layers.size());
  std::vector<const Tensor*> values;
  for (size_t l = 0; l < layers.size(); ++l) {
    auto idx = tensors.find(prefix + layers[l].key + ".index");
    auto val = tensors.find(prefix + layers[l].key + ".value");
    if (idx == tensors.end() || val == tensors.end())
      throw std::runtime_error(what + ": no saved entries for layer " + layers[l].key);
    const Tensor& it = *idx->second;
    const Tensor& vt = *val->second;
    if (it.dtype() != DType::I64 || vt.dtype() != DType::F32 || it.numel() != vt.numel())
      throw std::runtime_error(what + ": malformed saved entries for layer " + layers[l].key);
    masks[l].layer = int(l);
    if (l < filters.size()) masks[l].filters = filters[l];
    Tensor ih = it.to(Device::CPU);
    for (int64_t i = 0; i < ih.numel(); ++i) {
      const int64_t v = ih.i64()[i];
      if (v < 0 || v >= layers[l].param->value.numel() || (i && v <= ih.i64()[i - 1]))
        throw std::runtime_error(what + ": saved index " + std::to_string(v) + " of layer " +
                                 layers[l].key + " out of range or not ascending");
      masks[l].index.push_back(v);
    }
    values.push_back(&vt);
  }
  MaskSet s(layers, std::move(masks));
  for (size_t l = 0; l < values.size(); ++l)
    if (values[l]->numel()) s.value_[l] = values[l]->to(s.index_[l].device());
  return s;
}

// ---- Method

Method::Method(models::Model& model, std::vector<EligibleLayer> layers, MethodOptions opt)
    : model_(model), layers_(std::move(layers)), opt_(std::move(opt)) {}

EpisodeOutcome Method::run_episode(const FilterChoice& filters, ObfuscationData& data,
                                   uint64_t seed) {
  EpisodeOutcome out;
  current_ = obfuscate_episode(filters, data, seed, out);
  out.counts = current_.counts();
  return out;
}

void Method::undo_episode() { current_.put_original(); }

void Method::keep_episode_as_best() {
  current_.capture();
  best_ = current_;
}

void Method::apply_best() { best_.put_values(); }

std::vector<std::pair<std::string, Tensor>> Method::export_best() const {
  return best_.export_values("best.");
}

void Method::import_best(const FilterChoice& filters,
                         const std::map<std::string, const Tensor*>& tensors,
                         const std::string& what) {
  best_ = MaskSet::import_values(layers_, filters, tensors, "best.", what);
}

std::map<std::string, std::string> Method::metadata() const {
  std::map<std::string, std::string> m = {{"method", opt_.method}};
  if (const MethodInfo* info = find_method(opt_.method))
    for (const auto& k : info->keys) m[opt_.method + "_" + k.name] = opt_.text(k.name);
  return m;
}

std::vector<int> Method::choices_per_layer() const {
  std::vector<int> n;
  for (const auto& l : layers_) n.push_back(l.filters);
  return n;
}

int64_t Method::choice_size(size_t l) const { return layers_.at(l).filter_size; }

std::unique_ptr<Method> make_method(models::Model& model, std::vector<EligibleLayer> layers,
                                    MethodOptions opt) {
  const MethodInfo* info = find_method(opt.method);
  if (!info) throw std::invalid_argument("unknown method '" + opt.method + "'");
  return info->make(model, std::move(layers), std::move(opt));
}

// ---- nnsplitter: the paper

MethodInfo nnsplitter_method_info() {
  return {"nnsplitter",
          "the paper: Adam pushes the entries |w - c| < eps of the chosen filters to one shared "
          "clamp",
          "the reproduction",
          {},
          [](models::Model& m, std::vector<EligibleLayer> l, MethodOptions o) -> std::unique_ptr<Method> {
            return std::make_unique<NNSplitterMethod>(m, std::move(l), std::move(o));
          }};
}

MaskSet Method::adam_episode(MaskSet set, ObfuscationData& data, EpisodeOutcome& out) {
  auto r = obfuscate(model_, layers_, set.masks(), data, opt_.obfuscator);
  out.accuracy = r.best_accuracy;
  out.steps = r.steps;
  out.evaluations = r.evaluations;
  return set;
}

MaskSet NNSplitterMethod::obfuscate_episode(const FilterChoice& filters, ObfuscationData& data,
                                            uint64_t, EpisodeOutcome& out) {
  return adam_episode(MaskSet(layers_, select_mask(layers_, filters, opt_.c, opt_.eps)), data, out);
}

}  // namespace nns::splitter
