#include "experiments/groupcover.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "experiments/attacks.h"
#include "experiments/trainer.h"

namespace nns::exp {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The values at both ends GroupCover takes from the sorted weights (see the header).
std::pair<double, double> percentile_ends(std::vector<float> v, double percentile) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  const auto lower = size_t(double(n) * (percentile / 100.0));
  const auto upper = size_t(double(n) * (1.0 - percentile / 100.0));
  return {v[lower > 0 ? lower - 1 : 0], v[upper < n ? upper : n - 1]};
}

std::vector<float> finite_values(const std::vector<float>& v) {
  std::vector<float> out;
  out.reserve(v.size());
  for (float x : v)
    if (std::isfinite(x)) out.push_back(x);
  return out;
}

}  // namespace

std::vector<std::string> trainable_keys(models::Model& m) { return scanned_keys(m, "trainable"); }

const std::vector<std::string>& detector_scopes() {
  static const std::vector<std::string> s = {"trainable", "weights"};
  return s;
}

std::vector<std::string> scanned_keys(models::Model& m, const std::string& scope) {
  if (scope != "trainable" && scope != "weights")
    throw std::invalid_argument("detector scope '" + scope + "': expected trainable or weights");
  std::vector<std::string> keys;
  for (auto& [key, p] : m.parameters())
    if (p->value.dtype() == DType::F32 && (scope == "trainable" || p->value.ndim() >= 2))
      keys.push_back(key);
  return keys;
}

// ---------------------------------------------------------------- detectors

ExtremePercentileDetector::ExtremePercentileDetector(double percentile, double eps,
                                                     bool per_layer)
    : percentile_(percentile), eps_(eps), per_layer_(per_layer) {}

std::string ExtremePercentileDetector::name() const {
  return per_layer_ ? "extreme_percentile_layer" : "extreme_percentile";
}

WeightSet ExtremePercentileDetector::detect(models::Model& model,
                                            const std::vector<std::string>& keys) const {
  std::vector<std::vector<float>> values;
  for (const auto& k : keys) values.push_back(f32_state_tensor(model, k, "detector").to_vector());
  std::pair<double, double> global{0, 0};
  if (!per_layer_) {
    std::vector<float> all;
    for (const auto& v : values) {
      auto f = finite_values(v);
      all.insert(all.end(), f.begin(), f.end());
    }
    if (all.empty()) return {};
    global = percentile_ends(std::move(all), percentile_);
  }
  const double tol = 2 * eps_;
  WeightSet out;
  for (size_t l = 0; l < keys.size(); ++l) {
    auto ends = global;
    if (per_layer_) {
      auto f = finite_values(values[l]);
      if (f.empty()) continue;
      ends = percentile_ends(std::move(f), percentile_);
    }
    std::vector<int64_t> idx;
    for (size_t i = 0; i < values[l].size(); ++i) {
      const double w = values[l][i];
      if (std::abs(w - ends.first) <= tol || std::abs(w - ends.second) <= tol)
        idx.push_back(int64_t(i));
    }
    if (!idx.empty()) out[keys[l]] = std::move(idx);
  }
  return out;
}

CvBinDetector::CvBinDetector(double bin_fraction, int64_t min_count, int bins)
    : bin_fraction_(bin_fraction), min_count_(min_count), bins_(bins) {}

std::string CvBinDetector::name() const { return "cv_bins"; }

WeightSet CvBinDetector::detect(models::Model& model, const std::vector<std::string>& keys) const {
  std::vector<std::vector<float>> values;
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& k : keys) {
    values.push_back(f32_state_tensor(model, k, "detector").to_vector());
    for (float x : values.back())
      if (std::isfinite(x)) {
        lo = std::min(lo, double(x));
        hi = std::max(hi, double(x));
      }
  }
  if (!(hi > lo)) return {};
  const auto nbins = int64_t(std::ceil(1.0 / bin_fraction_));
  const double width = (hi - lo) / double(nbins);
  auto bin_of = [&](double x) { return std::min<int64_t>(int64_t((x - lo) / width), nbins - 1); };
  std::vector<int64_t> count(size_t(nbins), 0);
  std::vector<double> sum(size_t(nbins), 0), sq(size_t(nbins), 0);
  for (const auto& v : values)
    for (float x : v)
      if (std::isfinite(x)) {
        const auto b = size_t(bin_of(x));
        ++count[b];
        sum[b] += x;
      }
  for (const auto& v : values)  // second pass: squared deviations from the bin mean (stable)
    for (float x : v)
      if (std::isfinite(x)) {
        const auto b = size_t(bin_of(x));
        const double d = x - sum[b] / double(count[b]);
        sq[b] += d * d;
      }
  std::vector<std::pair<double, int64_t>> cv;  // (cv, bin)
  for (int64_t b = 0; b < nbins; ++b) {
    const auto c = count[size_t(b)];
    if (c < min_count_) continue;
    const double mean = sum[size_t(b)] / double(c);
    const double sd = std::sqrt(sq[size_t(b)] / double(c));
    cv.emplace_back(mean != 0 ? sd / std::abs(mean) : INFINITY, b);
  }
  std::sort(cv.begin(), cv.end());
  std::vector<bool> flag(size_t(nbins), false);
  for (size_t i = 0; i < cv.size() && i < size_t(bins_); ++i) flag[size_t(cv[i].second)] = true;
  WeightSet out;
  for (size_t l = 0; l < keys.size(); ++l) {
    std::vector<int64_t> idx;
    for (size_t i = 0; i < values[l].size(); ++i)
      if (std::isfinite(values[l][i]) && flag[size_t(bin_of(values[l][i]))])
        idx.push_back(int64_t(i));
    if (!idx.empty()) out[keys[l]] = std::move(idx);
  }
  return out;
}

const std::vector<std::string>& detector_names() {
  static const std::vector<std::string> names = {"extreme_percentile", "extreme_percentile_layer",
                                                 "cv_bins"};
  return names;
}

std::unique_ptr<Detector> make_detector(const std::string& name, const DetectorParams& p) {
  if (name == "extreme_percentile" || name == "extreme_percentile_layer") {
    if (!(p.percentile > 0 && p.percentile < 50))
      throw std::invalid_argument("detector " + name + ": percentile must be in (0, 50)");
    if (!(p.eps >= 0) || !std::isfinite(p.eps))
      throw std::invalid_argument("detector " + name + ": eps must be >= 0");
    return std::make_unique<ExtremePercentileDetector>(p.percentile, p.eps,
                                                       name == "extreme_percentile_layer");
  }
  if (name == "cv_bins") {
    if (!(p.bin_fraction > 0 && p.bin_fraction < 1))
      throw std::invalid_argument("detector cv_bins: bin_fraction must be in (0, 1)");
    if (p.min_count < 1 || p.bins < 1)
      throw std::invalid_argument("detector cv_bins: min_count and bins must be >= 1");
    return std::make_unique<CvBinDetector>(p.bin_fraction, p.min_count, p.bins);
  }
  std::string known;
  for (const auto& n : detector_names()) known += (known.empty() ? "" : ", ") + n;
  throw std::invalid_argument("unknown detector '" + name + "' (" + known + ")");
}

DetectionScore score_detection(const std::string& detector, const WeightSet& flagged,
                               const splitter::Secrets& secrets) {
  DetectionScore s;
  s.detector = detector;
  s.flagged = weight_count(flagged);
  s.secrets = secrets.total();
  for (const auto& st : secrets.tensors) {
    auto it = flagged.find(st.key);
    if (it == flagged.end()) continue;
    std::vector<int64_t> sec = st.index;
    std::sort(sec.begin(), sec.end());
    std::vector<int64_t> both;
    std::set_intersection(it->second.begin(), it->second.end(), sec.begin(), sec.end(),
                          std::back_inserter(both));
    s.true_positives += int64_t(both.size());
  }
  s.precision = s.flagged ? double(s.true_positives) / double(s.flagged) : kNaN;
  s.recall = s.secrets ? double(s.true_positives) / double(s.secrets) : kNaN;
  return s;
}

// ---------------------------------------------------------------- knockoff

const std::vector<std::string>& query_sources() {
  static const std::vector<std::string> s = {"test", "train"};
  return s;
}

QuerySplit split_queries(const data::Splits& s, const std::string& source, int64_t n,
                         uint64_t seed) {
  if (source != "test" && source != "train")
    throw std::invalid_argument("queries: unknown source '" + source + "' (test or train)");
  const data::Dataset& from = source == "test" ? s.test : s.train;
  if (n < 1 || n > from.size() - (source == "test" ? 1 : 0))
    throw std::invalid_argument("queries: " + std::to_string(n) + " queries from the " + source +
                                " split of " + std::to_string(from.size()) + " samples" +
                                (source == "test" ? " (some must remain for evaluation)" : ""));
  auto perm = data::seeded_permutation(from.size(), seed);
  std::vector<int64_t> pool(perm.begin(), perm.begin() + n);
  QuerySplit q;
  q.pool = data::subset(from, pool);
  if (source == "test") {
    std::vector<int64_t> rest(perm.begin() + n, perm.end());
    std::sort(rest.begin(), rest.end());
    q.eval = data::subset(from, rest);
  } else {
    q.eval = s.test;
  }
  return q;
}

data::Dataset label_queries(const data::Dataset& pool, models::Model* victim,
                            const data::Normalization& norm, int pad_to) {
  data::Dataset d = pool;
  if (!victim) return d;
  victim->set_training(false);
  auto r = evaluate(*victim, pool, norm, 256, pad_to, /*keep_predictions=*/true);
  if (int64_t(r.predictions.size()) != pool.size())
    throw std::runtime_error("label_queries: the victim answered " +
                             std::to_string(r.predictions.size()) + " of " +
                             std::to_string(pool.size()) + " queries");
  d.labels.assign(r.predictions.begin(), r.predictions.end());
  return d;
}

std::vector<double> knockoff_train(models::Model& start, const data::Dataset& transfer,
                                   const data::Normalization& norm, const KnockoffOptions& o,
                                   const AccuracyFn& acc) {
  if (!acc) throw std::invalid_argument("knockoff: no accuracy oracle");
  if (o.epochs < 0 || o.batch < 1 || !(o.lr > 0))
    throw std::invalid_argument("knockoff: epochs >= 0, batch >= 1 and lr > 0 required");
  TrainOptions t;
  t.epochs = o.epochs;
  t.batch = o.batch;
  t.lr = o.lr;
  t.optimizer = "sgd";
  t.schedule = "constant";
  t.momentum = o.momentum;
  t.weight_decay = o.weight_decay;
  t.nesterov = false;
  t.seed = o.seed;
  t.pad_to = o.pad_to;
  t.progress = false;
  std::vector<double> out;
  for (int64_t b : o.budgets) {
    if (b < 1 || b > transfer.size())
      throw std::invalid_argument("knockoff: budget " + std::to_string(b) + " not in [1, " +
                                  std::to_string(transfer.size()) + "] (the transfer set)");
    const data::Dataset part = first_samples(transfer, b);
    auto copy = models::clone_model(start);
    double a = kNaN;
    try {
      if (t.epochs > 0) train_model(*copy, part, nullptr, norm, t);
      copy->set_training(false);
      a = acc(*copy);
    } catch (const std::runtime_error& e) {
      if (std::string(e.what()).rfind("training diverged", 0) != 0) throw;
      std::fprintf(stderr, "warning: knockoff with %lld queries: %s; recorded as NaN\n",
                   (long long)b, e.what());
    }
    out.push_back(a);
  }
  return out;
}

// ---------------------------------------------------------------- the protocol

GroupCoverResult groupcover_attack(models::Model& obfuscated, const splitter::Secrets* secrets,
                                   models::Model* donor, const data::Dataset& transfer,
                                   const data::Normalization& norm, const GroupCoverOptions& o,
                                   const AccuracyFn& acc) {
  if (!acc) throw std::invalid_argument("groupcover: no accuracy oracle");
  for (const auto& r : o.resets) {
    if (std::find(reset_modes().begin(), reset_modes().end(), r) == reset_modes().end())
      throw std::invalid_argument("groupcover: unknown reset '" + r + "' (zero, mean or donor)");
    if (r == "donor" && !donor)
      throw std::invalid_argument("groupcover: reset donor needs a donor model");
  }
  GroupCoverResult res;
  res.budgets = o.knockoff.budgets;
  const auto keys = scanned_keys(obfuscated, o.scope);
  res.flagged = make_detector(o.detector, o.params)->detect(obfuscated, keys);
  if (secrets)
    for (const auto& name : o.scored) {
      auto flagged = name == o.detector ? res.flagged
                                        : make_detector(name, o.params)->detect(obfuscated, keys);
      res.scores.push_back(score_detection(name, flagged, *secrets));
    }
  for (const auto& mode : o.resets) {
    auto copy = models::clone_model(obfuscated);
    reset_weights(*copy, res.flagged, mode, donor);
    copy->set_training(false);
    res.resets.push_back(mode);
    res.accuracy_reset.push_back(acc(*copy));
    res.recovered.push_back(knockoff_train(*copy, transfer, norm, o.knockoff, acc));
  }
  return res;
}

}  // namespace nns::exp
