// Shared helpers of the kernel tests: seeded random data, comparison against double-precision
// references with a `atol + rtol*|ref|` tolerance, and central finite differences.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace nns::ops::test {

inline const Context kCpu{Device::CPU};

inline std::vector<float> random_vec(size_t n, std::mt19937& rng, float lo = -1.0f,
                                     float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Element-wise |got - ref| <= atol + rtol*|ref|; reports the count and the first mismatches.
template <class Got, class Ref>
::testing::AssertionResult all_close(const Got& got, const Ref& ref, double atol, double rtol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure()
           << "size mismatch: got " << got.size() << ", ref " << ref.size();
  size_t bad = 0;
  double worst = 0.0;
  std::ostringstream os;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], r = ref[i];
    const double err = std::fabs(g - r);
    if (!(err <= atol + rtol * std::fabs(r))) {
      if (bad < 5) os << "\n  [" << i << "] got " << g << " ref " << r << " (err " << err << ")";
      ++bad;
      worst = std::fmax(worst, err);
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size()
                                       << " elements outside atol " << atol << " + rtol " << rtol
                                       << " (worst err " << worst << "):" << os.str();
}

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// A NaN with a recognisable payload: a row that an op must leave untouched is filled with it
// and compared bit for bit afterwards.
inline float sentinel() {
  const uint32_t bits = 0x7fc0beefu;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Central finite difference of loss() with respect to v[i]: (L(v+h) - L(v-h)) / 2h; v[i] is
// restored afterwards.
inline double central_difference(std::vector<float>& v, size_t i, double h,
                                 const std::function<double()>& loss) {
  const float orig = v[i];
  v[i] = static_cast<float>(orig + h);
  const double lp = loss();
  v[i] = static_cast<float>(orig - h);
  const double lm = loss();
  v[i] = orig;
  // The perturbation actually applied (float rounding of orig +- h).
  const double step = double(static_cast<float>(orig + h)) - double(static_cast<float>(orig - h));
  return (lp - lm) / step;
}

// Up to `count` distinct indices in [0, n), always including the first and the last.
inline std::vector<size_t> sample_indices(size_t n, size_t count, std::mt19937& rng) {
  std::vector<size_t> idx;
  if (n == 0) return idx;
  if (n <= count) {
    for (size_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  idx.push_back(0);
  idx.push_back(n - 1);
  std::uniform_int_distribution<size_t> d(1, n - 2);
  while (idx.size() < count) idx.push_back(d(rng));
  return idx;
}

// sum(y * r) in double: the scalar loss whose gradient with respect to y is r.
inline double dot(const std::vector<float>& y, const std::vector<float>& r) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += double(y[i]) * double(r[i]);
  return s;
}

}  // namespace nns::ops::test
