#include "experiments/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace nns::exp {

namespace {

Tensor* find_f32(models::Model& m, const std::string& key, const char* which) {
  for (auto& e : m.state())
    if (e.key == key) {
      if (e.tensor->dtype() != DType::F32)
        throw std::invalid_argument(std::string("stealth_metrics: ") + which + " model: '" + key +
                                    "' is not an F32 tensor");
      return e.tensor;
    }
  throw std::invalid_argument(std::string("stealth_metrics: ") + which + " model " +
                              m.spec().arch + " has no tensor '" + key + "'");
}

bool same_bits(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

}  // namespace

double ks_distance(std::vector<float> a, std::vector<float> b) {
  auto drop_nan = [](std::vector<float>& v) {
    v.erase(std::remove_if(v.begin(), v.end(), [](float x) { return std::isnan(x); }), v.end());
  };
  drop_nan(a);
  drop_nan(b);
  if (a.empty() || b.empty()) return 0.0;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const double n = double(a.size()), m = double(b.size());
  size_t i = 0, j = 0;
  double d = 0;
  while (i < a.size() && j < b.size()) {
    const float v = std::min(a[i], b[j]);
    while (i < a.size() && a[i] == v) ++i;  // -0.0 == +0.0: one value, as for a CDF
    while (j < b.size() && b[j] == v) ++j;
    d = std::max(d, std::fabs(double(i) / n - double(j) / m));
  }
  // Once one sample is exhausted its CDF is 1; the other only rises towards 1, so the gap
  // after this point never exceeds the last one measured.
  return d;
}

std::vector<double> histogram_edges(double lo, double hi, int bins) {
  if (bins < 1) throw std::invalid_argument("histogram: bins must be at least 1");
  if (!std::isfinite(lo) || !std::isfinite(hi))
    throw std::invalid_argument("histogram: range is not finite");
  if (!(hi > lo)) {
    lo -= 0.5;
    hi = lo + 1.0;
  }
  std::vector<double> e(size_t(bins) + 1);
  const double w = (hi - lo) / bins;
  for (int i = 0; i < bins; ++i) e[i] = lo + w * i;
  e[bins] = hi;
  return e;
}

Histogram make_histogram(const std::vector<float>& values, const std::vector<double>& edges) {
  if (edges.size() < 2) throw std::invalid_argument("histogram: need at least two edges");
  Histogram h;
  h.edges = edges;
  const int64_t bins = int64_t(edges.size()) - 1;
  h.counts.assign(size_t(bins), 0);
  const double lo = edges.front(), hi = edges.back(), w = (hi - lo) / double(bins);
  for (float f : values) {
    const double v = f;
    if (!(v >= lo && v <= hi)) continue;  // also drops NaN
    int64_t k = w > 0 ? int64_t(std::floor((v - lo) / w)) : 0;
    k = std::clamp<int64_t>(k, 0, bins - 1);
    while (k > 0 && v < edges[k]) --k;              // rounding of (v - lo) / w
    while (k < bins - 1 && v >= edges[k + 1]) ++k;
    ++h.counts[k];
  }
  return h;
}

StealthMetrics stealth_metrics(models::Model& original, models::Model& obfuscated,
                               const std::vector<std::string>& layer_keys, double clamp_lo,
                               double clamp_hi, int bins) {
  if (bins < 1) throw std::invalid_argument("stealth_metrics: bins must be at least 1");
  StealthMetrics s;
  s.layers = layer_keys;
  std::vector<float> all_orig, all_obf, masked_orig, masked_obf;
  int64_t at_bounds_total = 0;
  for (const auto& key : layer_keys) {
    Tensor* to = find_f32(original, key, "original");
    Tensor* tb = find_f32(obfuscated, key, "obfuscated");
    if (to->shape() != tb->shape())
      throw std::invalid_argument("stealth_metrics: '" + key + "' has shape " +
                                  shape_str(to->shape()) + " in the original model and " +
                                  shape_str(tb->shape()) + " in the obfuscated one");
    std::vector<float> o = to->to_vector(), b = tb->to_vector();
    int64_t changed = 0, at_bounds = 0;
    for (size_t i = 0; i < o.size(); ++i) {
      if (same_bits(o[i], b[i])) continue;
      ++changed;
      const double v = b[i];
      if (std::fabs(v - clamp_lo) <= kAtBoundsTolerance ||
          std::fabs(v - clamp_hi) <= kAtBoundsTolerance)
        ++at_bounds;
      masked_orig.push_back(o[i]);
      masked_obf.push_back(b[i]);
    }
    s.obfuscated_per_layer.push_back(changed);
    s.obfuscated_total += changed;
    at_bounds_total += at_bounds;
    s.at_bounds_per_layer.push_back(changed ? double(at_bounds) / double(changed) : 0.0);
    s.ks_per_layer.push_back(ks_distance(o, b));
    all_orig.insert(all_orig.end(), o.begin(), o.end());
    all_obf.insert(all_obf.end(), b.begin(), b.end());
  }
  s.at_bounds_fraction = s.obfuscated_total ? double(at_bounds_total) / double(s.obfuscated_total)
                                            : 0.0;
  s.ks_distance = ks_distance(all_orig, all_obf);

  double lo = std::min(clamp_lo, clamp_hi), hi = std::max(clamp_lo, clamp_hi);
  if (!std::isfinite(lo) || !std::isfinite(hi)) {
    lo = std::numeric_limits<double>::infinity();
    hi = -lo;
  }
  for (const auto* v : {&all_orig, &all_obf})
    for (float f : *v)
      if (std::isfinite(f)) {
        lo = std::min(lo, double(f));
        hi = std::max(hi, double(f));
      }
  if (!std::isfinite(lo) || !std::isfinite(hi)) lo = hi = 0;  // no finite weight at all
  const auto edges = histogram_edges(lo, hi, bins);
  s.original = make_histogram(all_orig, edges);
  s.obfuscated = make_histogram(all_obf, edges);
  s.masked_original = make_histogram(masked_orig, edges);
  s.masked_obfuscated = make_histogram(masked_obf, edges);
  return s;
}

}  // namespace nns::exp
