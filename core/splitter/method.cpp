#include "core/splitter/method.h"

#include <stdexcept>

#include "kernels/ops.h"

namespace nns::splitter {

const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names = {"nnsplitter", "quantile", "permute", "swap"};
  return names;
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
  if (filters.size() != layers.size())
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
    masks[l].filters = filters[l];
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

std::map<std::string, std::string> Method::metadata() const { return {{"method", opt_.method}}; }

std::unique_ptr<Method> make_method(models::Model& model, std::vector<EligibleLayer> layers,
                                    MethodOptions opt) {
  if (opt.method == "nnsplitter")
    return std::make_unique<NNSplitterMethod>(model, std::move(layers), std::move(opt));
  if (opt.method == "quantile")
    return std::make_unique<QuantileMethod>(model, std::move(layers), std::move(opt));
  if (opt.method == "permute")
    return std::make_unique<PermuteMethod>(model, std::move(layers), std::move(opt));
  if (opt.method == "swap")
    return std::make_unique<SwapMethod>(model, std::move(layers), std::move(opt));
  throw std::invalid_argument("unknown method '" + opt.method + "'");
}

// ---- nnsplitter: the paper

MaskSet NNSplitterMethod::obfuscate_episode(const FilterChoice& filters, ObfuscationData& data,
                                            uint64_t, EpisodeOutcome& out) {
  MaskSet set(layers_, select_mask(layers_, filters, opt_.c, opt_.eps));
  auto r = obfuscate(model_, layers_, set.masks(), data, opt_.obfuscator);
  out.accuracy = r.best_accuracy;
  out.steps = r.steps;
  out.evaluations = r.evaluations;
  return set;
}

}  // namespace nns::splitter
