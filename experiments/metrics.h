// Stealthiness of an obfuscation (SPEC §2 "Stealthiness"): how many obfuscated weights sit at
// the clamp bounds, how far the weight distribution moved (two-sample Kolmogorov–Smirnov
// distance), and histograms before and after for plots. The lead maps StealthMetrics into the
// `stealth/` group of the result file (docs/results-format.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/models/zoo.h"

namespace nns::exp {

// counts[i] = number of values in [edges[i], edges[i+1]) (the last bin also holds edges[B]).
struct Histogram {
  std::vector<double> edges;    // B + 1 ascending edges
  std::vector<int64_t> counts;  // B
};

struct StealthMetrics {
  std::vector<std::string> layers;          // eligible layer keys, as given
  double at_bounds_fraction = 0;            // obfuscated weights within 1e-6 of clamp lo or hi,
                                            // over all obfuscated entries (0 when none)
  std::vector<double> at_bounds_per_layer;  // per layer (0 when a layer has none obfuscated)
  double ks_distance = 0;                   // all eligible weights, original vs obfuscated
  std::vector<double> ks_per_layer;
  std::vector<int64_t> obfuscated_per_layer;  // entries that differ bitwise, per layer
  int64_t obfuscated_total = 0;
  Histogram original, obfuscated;                // all eligible weights, common edges
  Histogram masked_original, masked_obfuscated;  // the obfuscated entries only, same edges
};

// Tolerance of "at the clamp bounds".
inline constexpr double kAtBoundsTolerance = 1e-6;

// original and obfuscated: same architecture (every key in layer_keys must be an F32 tensor of
// the same shape in both, else std::invalid_argument). Obfuscated entries = elements whose bit
// patterns differ. Histogram edges: `bins` equal bins spanning the minimum and maximum of both
// models' eligible weights and of clamp_lo/clamp_hi. bins < 1 → std::invalid_argument.
// Neither model is modified (CUDA tensors are copied to the host).
StealthMetrics stealth_metrics(models::Model& original, models::Model& obfuscated,
                               const std::vector<std::string>& layer_keys, double clamp_lo,
                               double clamp_hi, int bins = 100);

// Exact two-sample Kolmogorov–Smirnov statistic sup_x |F_a(x) − F_b(x)| (both samples sorted,
// then merged; ties are stepped over together). NaNs are dropped; 0 when either sample is
// empty.
double ks_distance(std::vector<float> a, std::vector<float> b);

// `bins` equal bins over [lo, hi] (hi > lo; when hi <= lo the range is widened to
// [lo - 0.5, lo + 0.5]).
std::vector<double> histogram_edges(double lo, double hi, int bins);
// Counts values into the given edges; values outside [edges.front(), edges.back()] (and NaNs)
// are not counted.
Histogram make_histogram(const std::vector<float>& values, const std::vector<double>& edges);

}  // namespace nns::exp
