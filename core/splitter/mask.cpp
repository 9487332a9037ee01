#include "core/splitter/mask.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

#include "kernels/ops.h"

namespace nns::splitter {

std::vector<EligibleLayer> eligible(models::Model& model, const std::string& rule) {
  std::vector<EligibleLayer> out;
  auto keys = models::eligible_layers(model, rule);
  auto params = model.parameters();
  for (const auto& key : keys) {
    for (auto& [k, p] : params) {
      if (k != key) continue;
      EligibleLayer l;
      l.key = k;
      l.param = p;
      l.filters = int(p->value.dim(0));
      l.filter_size = p->value.numel() / p->value.dim(0);
      out.push_back(l);
    }
  }
  return out;
}

std::vector<LayerMask> select_mask(const std::vector<EligibleLayer>& layers,
                                   const std::vector<std::vector<int32_t>>& filters, float c,
                                   float eps) {
  if (filters.size() != layers.size())
    throw std::invalid_argument("select_mask: " + std::to_string(filters.size()) +
                                " filter lists for " + std::to_string(layers.size()) + " layers");
  if (!(eps > 0)) throw std::invalid_argument("select_mask: eps must be positive");
  std::vector<LayerMask> out(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    LayerMask& m = out[l];
    m.layer = int(l);
    m.filters = filters[l];
    std::sort(m.filters.begin(), m.filters.end());
    m.filters.erase(std::unique(m.filters.begin(), m.filters.end()), m.filters.end());
    for (int32_t f : m.filters)
      if (f < 0 || f >= layers[l].filters)
        throw std::out_of_range("select_mask: filter " + std::to_string(f) + " of layer " +
                                layers[l].key + " outside [0, " +
                                std::to_string(layers[l].filters) + ")");
    if (m.filters.empty()) continue;
    const Tensor& w = layers[l].param->value;
    Device dev = w.device();
    ops::Context ctx{dev, nullptr};
    int64_t cap = int64_t(m.filters.size()) * layers[l].filter_size;
    Tensor rows({int64_t(m.filters.size())}, DType::I32);
    std::copy(m.filters.begin(), m.filters.end(), rows.i32());
    Tensor rows_d = rows.to(dev);
    Tensor idx({cap}, DType::I64, dev);
    int64_t n = ops::mask_select(ctx, w.f32(), layers[l].filter_size, rows_d.i32(),
                                 int(m.filters.size()), c, eps, idx.i64(), cap);
    Tensor idx_h = idx.to(Device::CPU);
    m.index.assign(idx_h.i64(), idx_h.i64() + n);
  }
  return out;
}

WeightStats eligible_stats(const std::vector<EligibleLayer>& layers) {
  WeightStats s;
  double sum = 0;
  s.min = INFINITY;
  s.max = -INFINITY;
  for (const auto& l : layers) {
    Tensor w = l.param->value.to(Device::CPU);
    const float* p = w.f32();
    for (int64_t i = 0; i < w.numel(); ++i) {
      sum += p[i];
      s.min = std::min(s.min, p[i]);
      s.max = std::max(s.max, p[i]);
    }
    s.count += w.numel();
  }
  if (s.count == 0) throw std::runtime_error("no eligible weights");
  s.mean = sum / double(s.count);
  return s;
}

float auto_eps(const std::vector<EligibleLayer>& layers, float c, int k, double target_per_layer) {
  if (layers.empty()) throw std::runtime_error("auto eps: no eligible layers");
  if (!(target_per_layer > 0)) throw std::invalid_argument("auto eps: target must be positive");
  // Per layer, sorted distances |w - c|; expected count(eps) = k/F * #{d < eps}.
  std::vector<std::vector<float>> dist(layers.size());
  std::vector<double> weight(layers.size());
  for (size_t l = 0; l < layers.size(); ++l) {
    Tensor w = layers[l].param->value.to(Device::CPU);
    dist[l].resize(w.numel());
    for (int64_t i = 0; i < w.numel(); ++i) dist[l][i] = std::fabs(w.f32()[i] - c);
    std::sort(dist[l].begin(), dist[l].end());
    weight[l] = double(std::min(k, layers[l].filters)) / double(layers[l].filters);
  }
  auto expected = [&](float eps) {
    double total = 0;
    for (size_t l = 0; l < layers.size(); ++l) {
      auto it = std::lower_bound(dist[l].begin(), dist[l].end(), eps);  // count of d < eps
      total += weight[l] * double(it - dist[l].begin());
    }
    return total / double(layers.size());
  };
  // Candidates: the next float above each distance (the smallest eps that admits it).
  std::vector<float> cand;
  for (auto& d : dist) cand.insert(cand.end(), d.begin(), d.end());
  std::sort(cand.begin(), cand.end());
  cand.erase(std::unique(cand.begin(), cand.end()), cand.end());
  if (expected(std::nextafter(cand.back(), INFINITY)) < target_per_layer)
    throw std::runtime_error("auto eps: even the whole weight range selects fewer than " +
                             std::to_string(target_per_layer) + " weights per layer on average");
  size_t lo = 0, hi = cand.size() - 1;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (expected(std::nextafter(cand[mid], INFINITY)) >= target_per_layer)
      hi = mid;
    else
      lo = mid + 1;
  }
  float eps = std::nextafter(cand[lo], INFINITY);
  return eps > 0 ? eps : std::nextafter(0.0f, 1.0f);
}

}  // namespace nns::splitter
