// The CUDA-versus-CPU parity harness, shaped like ggml's test-backend-ops.
//
// A Case is one op call on host-described buffers: inputs (random data), outputs (size only)
// and in/out buffers (initial data, then compared), an error metric and threshold per compared
// buffer, and a `run` function that calls the op through an Exec. The same Case runs on both
// backends:
//   - the CPU twin (nns::ops::cpu::X) is the oracle; the CUDA op (nns::ops::cuda::X) runs twice;
//   - every buffer is allocated on the backend's device with guard bytes before and after it
//     (filled with a sentinel pattern and checked after the op), outputs are poisoned with a
//     NaN sentinel first (an element the op should write but does not shows up as a NaN
//     mismatch), and inputs are checked bit for bit to be unchanged;
//   - compared buffers: NaN and inf positions must agree exactly (a NaN on one side only is a
//     failure), the finite rest is measured with the case's metric: normalised MSE
//     (sum (a-b)^2 / sum b^2, ggml's), max |a-b| / max |b|, or exact (bitwise; integer buffers
//     are always exact);
//   - the two CUDA runs must agree bit for bit (the kernels are deterministic by design); the
//     first runs on the legacy default stream, the second on a non-blocking stream of its own,
//     so an op that ignores its stream argument shows up as a race or a mismatch.
// NNS_PARITY_CALL(ex, op, args...) calls cuda::op(stream, args...) or cpu::op(args...).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/device.h"
#include "kernels/ops.h"

// Every CUDA test starts with this: a visible skip on machines without a usable device.
#define NNS_REQUIRE_CUDA()                                                    \
  do {                                                                        \
    if (::nns::cuda_device_count() == 0)                                      \
      GTEST_SKIP() << "no CUDA device: " << ::nns::cuda_unavailable_reason(); \
  } while (0)

#define NNS_PARITY_CALL(ex, op, ...)                              \
  ((ex).cuda() ? ::nns::ops::cuda::op((ex).stream(), __VA_ARGS__) \
               : ::nns::ops::cpu::op(__VA_ARGS__))

namespace nns::ops::parity {

enum class ElemType { F32, I32, I64, U8 };

inline size_t elem_bytes(ElemType t) {
  switch (t) {
    case ElemType::F32:
      return 4;
    case ElemType::I32:
      return 4;
    case ElemType::I64:
      return 8;
    case ElemType::U8:
      return 1;
  }
  return 1;
}

inline const char* elem_str(ElemType t) {
  switch (t) {
    case ElemType::F32:
      return "f32";
    case ElemType::I32:
      return "i32";
    case ElemType::I64:
      return "i64";
    case ElemType::U8:
      return "u8";
  }
  return "?";
}

template <class T>
constexpr ElemType elem_of();
template <>
constexpr ElemType elem_of<float>() {
  return ElemType::F32;
}
template <>
constexpr ElemType elem_of<int32_t>() {
  return ElemType::I32;
}
template <>
constexpr ElemType elem_of<int64_t>() {
  return ElemType::I64;
}
template <>
constexpr ElemType elem_of<uint8_t>() {
  return ElemType::U8;
}

enum class Metric { NMSE, MaxRel, Exact };

struct Tolerance {
  Metric metric = Metric::NMSE;
  double max_err = 1e-7;  // ggml's default NMSE threshold
  // NMSE only: the reference's mean square counts as at least scale^2. For outputs that are
  // differences of much larger terms (mathematically ~0: BatchNorm's dx over 2 values, the bias
  // gradient of a conv feeding a training-mode BatchNorm), rounding is measured against the
  // terms' magnitude `scale` instead of the near-zero result.
  double scale = 0.0;
};
inline Tolerance nmse(double t, double scale = 0.0) { return {Metric::NMSE, t, scale}; }
inline Tolerance max_rel(double t) { return {Metric::MaxRel, t}; }
inline Tolerance exact() { return {Metric::Exact, 0.0}; }

enum class Role { In, Out, InOut };

struct Buffer {
  std::string name;
  ElemType dtype = ElemType::F32;
  Role role = Role::In;
  size_t count = 0;
  std::vector<uint8_t> init;  // In / InOut: initial contents (count * elem_bytes)
  Tolerance tol;              // Out / InOut
};

// Guard and poison patterns. The poison of a float output is a quiet NaN with a recognisable
// payload (0x7fc0beef); other dtypes get the same bytes repeated.
constexpr size_t kGuardBytes = 256;
constexpr uint8_t kGuardPattern[4] = {0xA5, 0x5A, 0xC3, 0x3C};
constexpr uint8_t kPoison[4] = {0xEF, 0xBE, 0xC0, 0x7F};

class Exec;

struct Case {
  std::string name;
  std::vector<Buffer> buffers;
  std::vector<std::pair<std::string, Tolerance>> scalars;  // host results recorded by run
  std::function<void(Exec&)> run;

  template <class T>
  Case& in(const std::string& n, const std::vector<T>& v) {
    return add(n, Role::In, v, exact());
  }
  template <class T>
  Case& inout(const std::string& n, const std::vector<T>& v, Tolerance t) {
    return add(n, Role::InOut, v, t);
  }
  template <class T>
  Case& out(const std::string& n, size_t count, Tolerance t) {
    Buffer b;
    b.name = n;
    b.dtype = elem_of<T>();
    b.role = Role::Out;
    b.count = count;
    b.tol = t;
    buffers.push_back(std::move(b));
    return *this;
  }
  Case& scalar(const std::string& n, Tolerance t) {
    scalars.emplace_back(n, t);
    return *this;
  }

 private:
  template <class T>
  Case& add(const std::string& n, Role r, const std::vector<T>& v, Tolerance t) {
    Buffer b;
    b.name = n;
    b.dtype = elem_of<T>();
    b.role = r;
    b.count = v.size();
    b.init.resize(v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(b.init.data(), v.data(), b.init.size());
    b.tol = t;
    buffers.push_back(std::move(b));
    return *this;
  }
};

// Device memory with guard bytes: [guard | payload | guard], allocated and copied through the
// public memory API (kernels/ops.h) so the CUDA side exercises the caching allocator.
class GuardedBuffer {
 public:
  GuardedBuffer(Device dev, const Buffer& b) : dev_(dev), bytes_(b.count * elem_bytes(b.dtype)) {
    base_ = static_cast<uint8_t*>(ops::device_alloc(dev, total()));
    std::vector<uint8_t> host(total());
    for (size_t i = 0; i < kGuardBytes; ++i) {
      host[i] = kGuardPattern[i % 4];
      host[kGuardBytes + bytes_ + i] = kGuardPattern[i % 4];
    }
    if (b.role == Role::Out) {
      for (size_t i = 0; i < bytes_; ++i) host[kGuardBytes + i] = kPoison[i % 4];
    } else if (bytes_) {
      std::memcpy(host.data() + kGuardBytes, b.init.data(), bytes_);
    }
    ops::copy_bytes(dev, base_, Device::CPU, host.data(), total());
  }
  ~GuardedBuffer() {
    try {
      ops::device_free(dev_, base_);
    } catch (...) {
    }
  }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  void* payload() const { return base_ + kGuardBytes; }
  // Copies everything back; returns the payload and appends guard damage to `problems`.
  std::vector<uint8_t> download(const std::string& name, std::vector<std::string>& problems) const {
    std::vector<uint8_t> host(total());
    ops::copy_bytes(Device::CPU, host.data(), dev_, base_, total());
    for (size_t i = 0; i < kGuardBytes; ++i) {
      if (host[kGuardBytes - 1 - i] != kGuardPattern[(kGuardBytes - 1 - i) % 4]) {
        problems.push_back("guard bytes before '" + name + "' overwritten (" +
                           std::to_string(i + 1) + " bytes before the start)");
        break;
      }
    }
    for (size_t i = 0; i < kGuardBytes; ++i) {
      if (host[kGuardBytes + bytes_ + i] != kGuardPattern[i % 4]) {
        problems.push_back("guard bytes after '" + name + "' overwritten (byte " +
                           std::to_string(i) + " past the end)");
        break;
      }
    }
    return std::vector<uint8_t>(host.begin() + kGuardBytes, host.begin() + kGuardBytes + bytes_);
  }

 private:
  size_t total() const { return bytes_ + 2 * kGuardBytes; }
  Device dev_;
  size_t bytes_;
  uint8_t* base_ = nullptr;
};

// What an op call sees: the buffers' device pointers and a place for host results.
class Exec {
 public:
  Exec(Device d, void* stream) : device_(d), stream_(stream) {}
  bool cuda() const { return device_ == Device::CUDA; }
  Device device() const { return device_; }
  void* stream() const { return stream_; }

  template <class T>
  T* ptr(const std::string& name) {
    auto it = ptrs_.find(name);
    if (it == ptrs_.end()) throw std::logic_error("parity case has no buffer '" + name + "'");
    if (it->second.second != elem_of<T>())
      throw std::logic_error("parity buffer '" + name + "' is " + elem_str(it->second.second));
    return static_cast<T*>(it->second.first);
  }
  float* f32(const std::string& n) { return ptr<float>(n); }
  int32_t* i32(const std::string& n) { return ptr<int32_t>(n); }
  int64_t* i64(const std::string& n) { return ptr<int64_t>(n); }
  uint8_t* u8(const std::string& n) { return ptr<uint8_t>(n); }
  // Null when the case did not define the buffer (ops with optional pointers).
  float* maybe_f32(const std::string& n) { return ptrs_.count(n) ? ptr<float>(n) : nullptr; }

  void record(const std::string& name, double value) { scalars_[name] = value; }

 private:
  friend struct Runner;
  Device device_;
  void* stream_;
  std::map<std::string, std::pair<void*, ElemType>> ptrs_;
  std::map<std::string, double> scalars_;
};

struct RunResult {
  std::map<std::string, std::vector<uint8_t>> data;  // every buffer's payload after the op
  std::map<std::string, double> scalars;
  std::vector<std::string> problems;
  std::string error;       // what the op threw, if anything
  std::string error_kind;  // its type: std::invalid_argument, std::out_of_range, ...
};

struct Runner {
  // stream: a cudaStream_t for CUDA runs (null = the legacy default stream).
  static RunResult run(const Case& c, Device dev, void* stream = nullptr) {
    RunResult r;
    std::vector<std::unique_ptr<GuardedBuffer>> bufs;
    Exec ex(dev, stream);
    for (const Buffer& b : c.buffers) {
      bufs.push_back(std::make_unique<GuardedBuffer>(dev, b));
      ex.ptrs_[b.name] = {bufs.back()->payload(), b.dtype};
    }
    // Uploads went through the legacy default stream, which a non-blocking stream does not
    // wait for.
    if (dev == Device::CUDA && cudaDeviceSynchronize() != cudaSuccess)
      r.problems.push_back("cudaDeviceSynchronize failed before the op");
    try {
      c.run(ex);
      ops::synchronize(ops::Context{dev, ex.stream()});
    } catch (const std::out_of_range& e) {
      r.error = e.what();
      r.error_kind = "std::out_of_range";
    } catch (const std::invalid_argument& e) {
      r.error = e.what();
      r.error_kind = "std::invalid_argument";
    } catch (const std::runtime_error& e) {
      r.error = e.what();
      r.error_kind = "std::runtime_error";
    } catch (const std::exception& e) {
      r.error = e.what();
      r.error_kind = "std::exception";
    }
    for (size_t i = 0; i < c.buffers.size(); ++i) {
      const Buffer& b = c.buffers[i];
      r.data[b.name] = bufs[i]->download(b.name, r.problems);
      if (b.role == Role::In && r.data[b.name] != b.init)
        r.problems.push_back("input '" + b.name + "' was modified");
    }
    r.scalars = ex.scalars_;
    return r;
  }
};

// ---------------------------------------------------------------------------------------------
// Comparison.

struct Verdict {
  bool ok = true;
  double err = 0.0;
  std::string detail;
};

inline bool same_bits(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

// got = CUDA, ref = CPU.
inline Verdict compare_f32(const float* got, const float* ref, size_t n, Tolerance t) {
  Verdict v;
  std::ostringstream os;
  double sq_err = 0.0, sq_ref = 0.0, max_abs = 0.0, max_ref = 0.0;
  size_t worst = 0, specials_bad = 0;
  for (size_t i = 0; i < n; ++i) {
    const float a = got[i], b = ref[i];
    const bool an = std::isnan(a), bn = std::isnan(b);
    if (an || bn || std::isinf(a) || std::isinf(b)) {
      // NaN/inf handling must agree: same class at the same place (any NaN payload).
      const bool agree = (an && bn) || (!an && !bn && a == b);
      if (!agree) {
        if (specials_bad < 5) os << " [" << i << "] cuda " << a << " cpu " << b << ";";
        ++specials_bad;
      }
      continue;
    }
    if (t.metric == Metric::Exact && !same_bits(a, b) && !(a == 0.0f && b == 0.0f)) {
      if (specials_bad < 5) os << " [" << i << "] cuda " << a << " cpu " << b << " (not exact);";
      ++specials_bad;
      continue;
    }
    const double d = double(a) - double(b);
    sq_err += d * d;
    sq_ref += double(b) * double(b);
    if (std::fabs(d) > max_abs) {
      max_abs = std::fabs(d);
      worst = i;
    }
    max_ref = std::max(max_ref, std::fabs(double(b)));
  }
  if (specials_bad) {
    v.ok = false;
    v.detail = std::to_string(specials_bad) + " elements differ in NaN/inf/exactness:" + os.str();
    return v;
  }
  switch (t.metric) {
    case Metric::NMSE:
      sq_ref = std::max(sq_ref, double(n) * t.scale * t.scale);
      v.err = sq_ref > 0 ? sq_err / sq_ref : sq_err;
      break;
    case Metric::MaxRel:
      v.err = max_ref > 0 ? max_abs / max_ref : max_abs;
      break;
    case Metric::Exact:
      v.err = 0.0;
      break;
  }
  if (!(v.err <= t.max_err)) {
    v.ok = false;
    std::ostringstream d;
    d << (t.metric == Metric::NMSE ? "NMSE " : "max-abs/max-ref ") << v.err << " > " << t.max_err
      << (t.scale > 0 ? " (scale " + std::to_string(t.scale) + ")" : std::string())
      << "; worst [" << worst << "] cuda " << got[worst] << " cpu " << ref[worst];
    v.detail = d.str();
  }
  return v;
}

template <class T>
Verdict compare_exact(const T* got, const T* ref, size_t n) {
  Verdict v;
  size_t bad = 0;
  std::ostringstream os;
  for (size_t i = 0; i < n; ++i) {
    if (got[i] != ref[i]) {
      if (bad < 5)
        os << " [" << i << "] cuda " << int64_t(got[i]) << " cpu " << int64_t(ref[i]) << ";";
      ++bad;
    }
  }
  if (bad) {
    v.ok = false;
    v.detail = std::to_string(bad) + " of " + std::to_string(n) + " elements differ:" + os.str();
  }
  return v;
}

inline Verdict compare_buffer(const Buffer& b, const std::vector<uint8_t>& got,
                              const std::vector<uint8_t>& ref) {
  switch (b.dtype) {
    case ElemType::F32:
      return compare_f32(reinterpret_cast<const float*>(got.data()),
                         reinterpret_cast<const float*>(ref.data()), b.count, b.tol);
    case ElemType::I32:
      return compare_exact(reinterpret_cast<const int32_t*>(got.data()),
                           reinterpret_cast<const int32_t*>(ref.data()), b.count);
    case ElemType::I64:
      return compare_exact(reinterpret_cast<const int64_t*>(got.data()),
                           reinterpret_cast<const int64_t*>(ref.data()), b.count);
    case ElemType::U8:
      return compare_exact(got.data(), ref.data(), b.count);
  }
  return {};
}

inline Verdict compare_scalar(double got, double ref, Tolerance t) {
  Verdict v;
  if (std::isnan(got) || std::isnan(ref) || std::isinf(got) || std::isinf(ref)) {
    v.ok = (std::isnan(got) && std::isnan(ref)) || got == ref;
  } else if (t.metric == Metric::Exact) {
    v.ok = got == ref;
  } else {
    const double d = std::fabs(got - ref);
    v.err = t.metric == Metric::NMSE ? (ref != 0 ? d * d / (ref * ref) : d * d)
                                     : (ref != 0 ? d / std::fabs(ref) : d);
    v.ok = v.err <= t.max_err;
  }
  if (!v.ok) {
    std::ostringstream os;
    os.precision(9);
    os << "cuda " << got << " cpu " << ref << " (err " << v.err << ", max " << t.max_err << ")";
    v.detail = os.str();
  }
  return v;
}

// A non-blocking CUDA stream for the duration of a scope.
class OwnStream {
 public:
  OwnStream() {
    if (cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking) != cudaSuccess)
      throw std::runtime_error("cudaStreamCreateWithFlags failed");
  }
  ~OwnStream() { cudaStreamDestroy(s_); }
  OwnStream(const OwnStream&) = delete;
  OwnStream& operator=(const OwnStream&) = delete;
  void* get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// Runs a case on the CPU and twice on CUDA and reports every disagreement as a gtest failure.
inline void check_case(const Case& c) {
  const RunResult cpu = Runner::run(c, Device::CPU);
  ASSERT_TRUE(cpu.error.empty()) << c.name << ": the CPU twin threw: " << cpu.error;
  for (const auto& p : cpu.problems) ADD_FAILURE() << c.name << " (cpu): " << p;
  const RunResult gpu = Runner::run(c, Device::CUDA);
  ASSERT_TRUE(gpu.error.empty()) << c.name << ": the CUDA op threw: " << gpu.error;
  for (const auto& p : gpu.problems) ADD_FAILURE() << c.name << " (cuda): " << p;
  OwnStream stream;
  const RunResult again = Runner::run(c, Device::CUDA, stream.get());
  ASSERT_TRUE(again.error.empty()) << c.name << ": the second CUDA run threw: " << again.error;

  for (const Buffer& b : c.buffers) {
    if (b.role == Role::In) continue;
    const Verdict v = compare_buffer(b, gpu.data.at(b.name), cpu.data.at(b.name));
    EXPECT_TRUE(v.ok) << c.name << ": output '" << b.name << "' (" << elem_str(b.dtype) << "["
                      << b.count << "]): " << v.detail;
    EXPECT_TRUE(gpu.data.at(b.name) == again.data.at(b.name))
        << c.name << ": output '" << b.name
        << "' differs between the CUDA runs on the default stream and on a stream of its own";
  }
  for (const auto& [name, tol] : c.scalars) {
    ASSERT_TRUE(cpu.scalars.count(name) && gpu.scalars.count(name))
        << c.name << ": scalar '" << name << "' was not recorded";
    const Verdict v = compare_scalar(gpu.scalars.at(name), cpu.scalars.at(name), tol);
    EXPECT_TRUE(v.ok) << c.name << ": scalar '" << name << "': " << v.detail;
    const double g1 = gpu.scalars.at(name), g2 = again.scalars.at(name);
    EXPECT_TRUE(g1 == g2 || (std::isnan(g1) && std::isnan(g2)))
        << c.name << ": scalar '" << name << "' differs between two CUDA runs";
  }
}

// Runs a case expected to be rejected: both backends must throw the same exception type.
inline void check_same_error(const Case& c) {
  const RunResult cpu = Runner::run(c, Device::CPU);
  const RunResult gpu = Runner::run(c, Device::CUDA);
  EXPECT_FALSE(cpu.error.empty()) << c.name << ": the CPU twin accepted an invalid call";
  EXPECT_EQ(gpu.error_kind, cpu.error_kind)
      << c.name << ": CUDA and CPU reject the call differently (cuda: " << gpu.error
      << "; cpu: " << cpu.error << ")";
}

// ---------------------------------------------------------------------------------------------
// Random data.

inline std::vector<float> uniform(size_t n, std::mt19937_64& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<float> normal(size_t n, std::mt19937_64& rng, float mean = 0.0f,
                                 float stddev = 1.0f) {
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Small integers: many exact ties (pooling, argmax).
inline std::vector<float> ties(size_t n, std::mt19937_64& rng, int levels = 4) {
  std::uniform_int_distribution<int> d(0, levels - 1);
  std::vector<float> v(n);
  for (auto& x : v) x = float(d(rng));
  return v;
}

// Puts NaN, +inf and -inf at random places (about `fraction` of the elements, at least 3).
inline void sprinkle_specials(std::vector<float>& v, std::mt19937_64& rng, double fraction = 0.01) {
  if (v.empty()) return;
  const float specials[3] = {std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity()};
  const size_t k = std::max<size_t>(3, size_t(fraction * v.size()));
  std::uniform_int_distribution<size_t> pos(0, v.size() - 1);
  for (size_t i = 0; i < k; ++i) v[pos(rng)] = specials[i % 3];
}

}  // namespace nns::ops::parity
