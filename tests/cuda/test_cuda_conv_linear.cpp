// CUDA convolutions and linear layers against the CPU backend (the oracle).
//
// Two kinds of tests:
// - Host emulation (runs everywhere, no GPU needed): the tiled SGEMM of kernels/cuda/gemm_tile.h
//   stepped through block by block and thread by thread on the host with the very Problems the
//   kernels use (implicit-GEMM convolutions, linear layers), every tile shape and split-K, and
//   the depthwise element bodies; plus FastDivmod against integer division. This checks the
//   index math of every kernel on machines without a GPU (CI).
// - GPU parity (skipped, visibly, without a CUDA device): nns::ops::cuda::X against
//   nns::ops::cpu::X over a sweep of shapes (odd sizes, stride 2, padding, groups 2, depthwise,
//   1x1, 7x7, non-square, batch 1, shapes large enough for split-K and the large tile), for both
//   engines (native kernels, cuDNN / cuBLAS): forward with each epilogue kind, backward data,
//   backward filter / weight with filter subsets. Outputs sit between guard zones that must stay
//   untouched; "overwrites" outputs start filled with a NaN sentinel; rows outside a subset must
//   keep the sentinel bit for bit; NaN and inf must propagate like on the CPU.
//
// Error measure: max|got - ref| / max|ref| per output. Native FP32 kernels: 1e-4. cuDNN: 2e-3,
// because its Winograd / FFT algorithms round differently from a direct sum (TF32 is disabled:
// CUDNN_FMA_MATH); cuBLAS runs plain FP32 (CUBLAS_DEFAULT_MATH): 1e-4.
#if defined(NNS_HAVE_CUDA)

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/activation.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/conv_problems.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/fast_divmod.h"
#include "kernels/cuda/gemm_problems.h"
#include "kernels/cuda/gemm_tile.h"
#include "kernels/device.h"
#include "kernels/ops.h"

namespace nns::ops::cuda_conv_linear_test {
namespace {

namespace kcuda = nns::ops::cuda;

// Skips the calling test, with the reason, when no CUDA device is usable.
#define NNS_SKIP_WITHOUT_CUDA_DEVICE()                                                \
  do {                                                                                \
    if (nns::cuda_device_count() == 0)                                                \
      GTEST_SKIP() << "no CUDA device (" << nns::cuda_unavailable_reason()            \
                   << "): CUDA parity test skipped; it runs on a machine with a GPU"; \
  } while (0)

constexpr double kTolNative = 1e-4;
constexpr double kTolCudnn = 2e-3;
constexpr double kTolCublas = 1e-4;

// ---------------------------------------------------------------------------------------------
// Host helpers

std::vector<float> random_vec(size_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Concatenates anything streamable (std::string + std::to_string trips a GCC 12 false
// -Wrestrict positive at -O3).
template <class... T>
std::string cat(const T&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// A NaN with a recognisable payload: memory that must stay untouched (guards, rows outside a
// subset) or must be overwritten starts with it.
float sentinel() {
  const uint32_t b = 0x7fc0beefu;
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
bool is_sentinel(float f) { return bits_of(f) == bits_of(sentinel()); }

// max|got - ref| / max|ref| <= tol, and NaN exactly where ref has NaN.
::testing::AssertionResult close_normalized(const std::vector<float>& got,
                                            const std::vector<float>& ref, double tol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure()
           << "size mismatch: got " << got.size() << ", ref " << ref.size();
  double max_ref = 0.0, max_err = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(ref[i]) != std::isnan(got[i]))
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << got[i] << ", ref " << ref[i]
             << (is_sentinel(got[i]) ? " (never written)" : "");
    if (std::isnan(ref[i])) continue;
    max_ref = std::max(max_ref, std::fabs(double(ref[i])));
    const double err = std::fabs(double(got[i]) - double(ref[i]));
    if (!(err <= max_err)) {
      max_err = err;
      worst = i;
    }
  }
  const double norm = max_err / std::max(max_ref, 1e-30);
  if (norm <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "normalized error " << norm << " > " << tol << " (max|ref| " << max_ref
         << ", worst element " << worst << ": got " << got[worst] << ", ref " << ref[worst] << ")";
}

Conv2dShape conv_shape(int n, int c_in, int h, int w, int c_out, int kh, int kw, int sh, int sw,
                       int ph, int pw, int groups) {
  Conv2dShape s;
  s.n = n;
  s.c_in = c_in;
  s.h = h;
  s.w = w;
  s.c_out = c_out;
  s.kh = kh;
  s.kw = kw;
  s.stride_h = sh;
  s.stride_w = sw;
  s.pad_h = ph;
  s.pad_w = pw;
  s.groups = groups;
  return s;
}

std::string describe(const Conv2dShape& s) {
  std::ostringstream os;
  os << "n" << s.n << " cin" << s.c_in << " " << s.h << "x" << s.w << " cout" << s.c_out << " k"
     << s.kh << "x" << s.kw << " s" << s.stride_h << "x" << s.stride_w << " p" << s.pad_h << "x"
     << s.pad_w << " g" << s.groups;
  return os.str();
}

struct LinearCase {
  int n, in, out;
};

std::vector<LinearCase> linear_cases() {
  return {{1, 1, 1},     {7, 13, 5},    {33, 70, 129}, {128, 512, 10},
          {1, 300, 257}, {64, 257, 31}, {130, 9, 3},   {2048, 32, 2048} /* large tile */,
          {16, 4096, 64} /* split-K in backward weight */};
}

std::string describe(const LinearCase& c) {
  std::ostringstream os;
  os << "n" << c.n << " in" << c.in << " out" << c.out;
  return os.str();
}

// Small shapes covering every code path; cheap enough for the host emulation.
std::vector<Conv2dShape> small_conv_cases() {
  return {
      conv_shape(2, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1, 1),    // odd sizes, padding
      conv_shape(3, 4, 11, 10, 6, 3, 3, 2, 2, 1, 1, 1),  // stride 2
      conv_shape(1, 8, 7, 7, 16, 1, 1, 1, 1, 0, 0, 1),   // 1x1, batch 1
      conv_shape(2, 8, 9, 9, 8, 1, 1, 2, 2, 0, 0, 1),    // 1x1 stride 2 (a ResNet shortcut)
      conv_shape(2, 6, 8, 9, 4, 3, 3, 1, 1, 1, 1, 2),    // groups 2
      conv_shape(2, 4, 9, 8, 6, 3, 3, 2, 1, 0, 1, 2),    // groups 2, mixed stride / padding
      conv_shape(2, 8, 10, 9, 8, 3, 3, 1, 1, 1, 1, 8),   // depthwise
      conv_shape(2, 6, 11, 11, 6, 3, 3, 2, 2, 1, 1, 6),  // depthwise stride 2
      conv_shape(1, 4, 9, 9, 4, 5, 5, 1, 1, 2, 2, 4),    // depthwise 5x5 (two tap chunks)
      conv_shape(1, 3, 15, 13, 4, 7, 7, 2, 2, 3, 3, 1),  // 7x7 stride 2 stem
      conv_shape(2, 5, 6, 8, 7, 2, 3, 1, 2, 0, 1, 1),    // non-square kernel and stride
      conv_shape(1, 2, 3, 3, 3, 3, 3, 1, 1, 0, 0, 1),    // output 1x1
      conv_shape(2, 3, 5, 6, 4, 3, 3, 3, 2, 2, 1, 1),    // stride 3 with large padding
  };
}

Conv2dShape random_conv_shape(std::mt19937& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  static const int kSizes[] = {1, 2, 3, 5};
  Conv2dShape s;
  s.n = pick(1, 3);
  s.kh = kSizes[pick(0, 3)];
  s.kw = pick(0, 2) == 0 ? kSizes[pick(0, 3)] : s.kh;
  s.stride_h = pick(1, 2);
  s.stride_w = pick(1, 2);
  s.pad_h = pick(0, s.kh / 2);
  s.pad_w = pick(0, s.kw / 2);
  s.h = pick(std::max(1, s.kh - 2 * s.pad_h), 13);
  s.w = pick(std::max(1, s.kw - 2 * s.pad_w), 13);
  switch (pick(0, 2)) {
    case 0:
      s.groups = 1;
      s.c_in = pick(1, 9);
      s.c_out = pick(1, 11);
      break;
    case 1:
      s.groups = 2;
      s.c_in = 2 * pick(1, 4);
      s.c_out = 2 * pick(1, 5);
      break;
    default:
      s.groups = s.c_in = s.c_out = pick(2, 8);
      break;
  }
  return s;
}

std::vector<Conv2dShape> random_conv_cases(int count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Conv2dShape> v;
  for (int i = 0; i < count; ++i) v.push_back(random_conv_shape(rng));
  return v;
}

// Shapes that reach the large tile, split-K in all three GEMMs, and the depthwise split.
std::vector<Conv2dShape> large_conv_cases() {
  return {
      conv_shape(20, 16, 32, 32, 128, 3, 3, 1, 1, 1, 1, 1),  // forward on the 128x128 tile
      conv_shape(1, 64, 7, 7, 64, 3, 3, 1, 1, 1, 1, 1),      // batch 1, 7x7: split-K forward
      conv_shape(4, 64, 14, 14, 128, 3, 3, 2, 2, 1, 1, 1),   // stride-2 ResNet downsample
      conv_shape(8, 32, 28, 28, 32, 3, 3, 1, 1, 1, 1, 32),   // MobileNet-like depthwise
  };
}

// The per-channel epilogue applied on the host to a raw convolution / linear output.
std::vector<float> apply_epilogue(const std::vector<float>& raw, int channels, int64_t inner,
                                  const Epilogue& e) {
  std::vector<float> y(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const int c = static_cast<int>((int64_t(i) / inner) % channels);
    y[i] = common::epilogue_apply(raw[i], e.bias ? e.bias[c] : 0.0f, e.scale ? e.scale[c] : 1.0f,
                                  e.shift ? e.shift[c] : 0.0f, e.act);
  }
  return y;
}

// A filter / row subset: about a third of [0, total), shuffled, with one duplicate.
std::vector<int32_t> random_subset(int total, std::mt19937& rng) {
  std::vector<int32_t> all(total);
  for (int i = 0; i < total; ++i) all[i] = i;
  std::shuffle(all.begin(), all.end(), rng);
  const int k = std::max(1, total / 3);
  std::vector<int32_t> sel(all.begin(), all.begin() + k);
  sel.push_back(sel.front());
  return sel;
}

std::vector<bool> membership(const std::vector<int32_t>& sel, int total) {
  std::vector<bool> in(total, false);
  for (int32_t f : sel)
    if (f >= 0 && f < total) in[f] = true;
  return in;
}

// Rows of a [rows, row_size] matrix with in[r] == want.
std::vector<float> rows_where(const std::vector<float>& m, int64_t row_size,
                              const std::vector<bool>& in, bool want) {
  std::vector<float> out;
  for (size_t r = 0; r < in.size(); ++r)
    if (in[r] == want)
      out.insert(out.end(), m.begin() + int64_t(r) * row_size,
                 m.begin() + int64_t(r + 1) * row_size);
  return out;
}

::testing::AssertionResult all_sentinel(const std::vector<float>& v, const char* what) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!is_sentinel(v[i]))
      return ::testing::AssertionFailure()
             << what << ": element " << i << " was written (" << v[i] << ")";
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------------
// Host emulation of the tiled GEMM kernel (gemm.cuh): the same phases in the same order, block by
// block, thread by thread.

template <class Cfg, class P>
void emulate_gemm(const P& p, int groups, int splits_wanted) {
  const kcuda::SplitPlan sp = kcuda::make_split_plan(p.K, Cfg::BK, splits_wanted);
  std::vector<float> partial(sp.splits > 1 ? size_t(sp.splits) * groups * p.M * p.N : 0);
  float* part = sp.splits > 1 ? partial.data() : nullptr;
  const int m_tiles = (p.M + Cfg::BM - 1) / Cfg::BM, n_tiles = (p.N + Cfg::BN - 1) / Cfg::BN;
  auto smem = std::make_unique<kcuda::TileSmem<Cfg>>();
  std::vector<kcuda::TileThread<Cfg>> th(Cfg::kThreads);
  for (int z = 0; z < groups * sp.splits; ++z) {
    const int g = z / sp.splits, split = z % sp.splits;
    const int k_begin = split * sp.k_per_split;
    const int k_end = std::min(p.K, k_begin + sp.k_per_split);
    for (int by = 0; by < m_tiles; ++by) {
      for (int bx = 0; bx < n_tiles; ++bx) {
        const int m0 = by * Cfg::BM, n0 = bx * Cfg::BN;
        for (int t = 0; t < Cfg::kThreads; ++t) {
          kcuda::tile_zero(th[t]);
          kcuda::tile_fetch<Cfg>(p, g, m0, n0, k_begin, k_end, t, th[t]);
        }
        for (int k0 = k_begin; k0 < k_end; k0 += Cfg::BK) {
          for (int t = 0; t < Cfg::kThreads; ++t) kcuda::tile_stash<Cfg, P>(t, th[t], *smem);
          // __syncthreads()
          for (int t = 0; t < Cfg::kThreads; ++t) {
            if (k0 + Cfg::BK < k_end)
              kcuda::tile_fetch<Cfg>(p, g, m0, n0, k0 + Cfg::BK, k_end, t, th[t]);
            kcuda::tile_mma<Cfg>(t, *smem, th[t]);
          }
          // __syncthreads()
        }
        for (int t = 0; t < Cfg::kThreads; ++t)
          kcuda::tile_store<Cfg>(p, g, m0, n0, split, groups, part, t, th[t]);
      }
    }
  }
  if (part)
    for (int64_t i = 0; i < int64_t(groups) * p.M * p.N; ++i)
      kcuda::splitk_reduce_at(p, groups, sp.splits, part, i);
}

// Runs `body(tile name, emulate)` for every tile shape and split count, where emulate(p, groups)
// runs the emulation with that tile and split.
template <class Body>
void for_each_tiling(Body&& body) {
  for (int splits : {1, 3}) {
    body(cat("large/splits", splits), [splits](const auto& p, int groups) {
      emulate_gemm<kcuda::TileLarge>(p, groups, splits);
    });
    body(cat("medium/splits", splits), [splits](const auto& p, int groups) {
      emulate_gemm<kcuda::TileMedium>(p, groups, splits);
    });
    body(cat("thin/splits", splits), [splits](const auto& p, int groups) {
      emulate_gemm<kcuda::TileThinM>(p, groups, splits);
    });
  }
}

std::vector<Conv2dShape> emulation_cases() {
  std::vector<Conv2dShape> v = small_conv_cases();
  for (const auto& s : random_conv_cases(6, 1234)) v.push_back(s);
  return v;
}

TEST(CudaFastDivmod, MatchesIntegerDivision) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> any(0, std::numeric_limits<int32_t>::max());
  std::vector<int> divisors;
  for (int d = 1; d <= 2000; ++d) divisors.push_back(d);
  for (int e = 11; e <= 30; ++e) {
    divisors.push_back((1 << e) - 1);
    divisors.push_back(1 << e);
    divisors.push_back((1 << e) + 1);
  }
  divisors.push_back(std::numeric_limits<int32_t>::max());
  for (int i = 0; i < 200; ++i) divisors.push_back(std::max(1, any(rng)));
  for (int d : divisors) {
    const kcuda::FastDivmod f(d);
    std::vector<int> ns = {0,
                           1,
                           d - 1,
                           d,
                           d + 1,
                           std::numeric_limits<int32_t>::max(),
                           std::numeric_limits<int32_t>::max() - 1};
    for (int i = 0; i < 300; ++i) ns.push_back(any(rng));
    for (int k = 1; k < 50; ++k)
      if (int64_t(d) * k <= std::numeric_limits<int32_t>::max()) {
        ns.push_back(d * k);
        ns.push_back(d * k - 1);
      }
    for (int n : ns) {
      if (n < 0) continue;
      int q, r;
      f.divmod(n, q, r);
      ASSERT_EQ(q, n / d) << n << " / " << d;
      ASSERT_EQ(r, n % d) << n << " % " << d;
    }
  }
}

TEST(CudaGemmPlan, SplitsAndTileShapes) {
  for (int K : {1, 7, 8, 9, 64, 100, 4608, 401408}) {
    for (int want : {0, 1, 2, 3, 7, 64, 1000}) {
      const kcuda::SplitPlan sp = kcuda::make_split_plan(K, 8, want);
      ASSERT_GE(sp.splits, 1);
      ASSERT_EQ(sp.k_per_split % 8, 0);
      // Every split non-empty, together exactly [0, K).
      EXPECT_LT(int64_t(sp.splits - 1) * sp.k_per_split, K) << K << " " << want;
      EXPECT_GE(int64_t(sp.splits) * sp.k_per_split, K) << K << " " << want;
    }
  }
  // A grid that already fills the device is not split; a tiny one is, within the limits.
  EXPECT_EQ(kcuda::choose_splits(1000, 4096, 8, 1, 1 << 20, 132), 1);
  const int s = kcuda::choose_splits(4, 401408, 8, 1, 64 * 576, 132);
  EXPECT_GT(s, 1);
  EXPECT_LE(s, 64);
  EXPECT_EQ(kcuda::choose_splits(4, 64, 8, 1, 64 * 64, 132), 1);  // too little K to split
  // Tile shapes: thin for a few rows, medium for <= 64 rows or small grids, large otherwise.
  EXPECT_EQ(kcuda::choose_tile(8, 100000, 1, 132), kcuda::TileKind::ThinM);
  EXPECT_EQ(kcuda::choose_tile(64, 401408, 1, 132), kcuda::TileKind::Medium);
  EXPECT_EQ(kcuda::choose_tile(256, 256, 1, 132), kcuda::TileKind::Medium);
  EXPECT_EQ(kcuda::choose_tile(128, 20480, 1, 132), kcuda::TileKind::Large);
}

TEST(CudaConvEmulation, ForwardMatchesCpu) {
  std::mt19937 rng(11);
  for (const Conv2dShape& s : emulation_cases()) {
    if (kcuda::conv_is_depthwise(s)) continue;  // direct kernels, tested below
    SCOPED_TRACE(describe(s));
    const auto x = random_vec(s.x_size(), rng), w = random_vec(s.w_size(), rng);
    const auto bias = random_vec(s.c_out, rng), scale = random_vec(s.c_out, rng, 0.5f, 1.5f),
               shift = random_vec(s.c_out, rng);
    std::vector<float> raw(s.y_size());
    cpu::conv2d_forward(s, x.data(), w.data(), Epilogue{}, raw.data());
    Epilogue e;
    e.bias = bias.data();
    e.scale = scale.data();
    e.shift = shift.data();
    e.act = Activation::ReLU6;
    const auto ref = apply_epilogue(raw, s.c_out, int64_t(s.out_h()) * s.out_w(), e);
    for_each_tiling([&](const std::string& name, auto emulate) {
      SCOPED_TRACE(name);
      std::vector<float> y(s.y_size(), sentinel());
      emulate(kcuda::make_conv_forward_gemm(s, x.data(), w.data(), e, y.data()), s.groups);
      EXPECT_TRUE(close_normalized(y, ref, kTolNative));
    });
  }
}

TEST(CudaConvEmulation, BackwardDataMatchesCpu) {
  std::mt19937 rng(12);
  for (const Conv2dShape& s : emulation_cases()) {
    if (kcuda::conv_is_depthwise(s)) continue;
    SCOPED_TRACE(describe(s));
    const auto dy = random_vec(s.y_size(), rng), w = random_vec(s.w_size(), rng);
    std::vector<float> ref(s.x_size());
    cpu::conv2d_backward_data(s, dy.data(), w.data(), ref.data());
    for_each_tiling([&](const std::string& name, auto emulate) {
      SCOPED_TRACE(name);
      std::vector<float> dx(s.x_size(), sentinel());
      emulate(kcuda::make_conv_backward_data_gemm(s, dy.data(), w.data(), dx.data()), s.groups);
      EXPECT_TRUE(close_normalized(dx, ref, kTolNative));
    });
  }
}

TEST(CudaConvEmulation, BackwardFilterMatchesCpuWithSubsets) {
  std::mt19937 rng(13);
  for (const Conv2dShape& s : emulation_cases()) {
    if (kcuda::conv_is_depthwise(s)) continue;
    SCOPED_TRACE(describe(s));
    const int64_t row = s.w_size() / s.c_out;
    const auto x = random_vec(s.x_size(), rng), dy = random_vec(s.y_size(), rng);
    std::vector<float> ref(s.w_size());
    cpu::conv2d_backward_filter(s, x.data(), dy.data(), ref.data(), nullptr, nullptr, 0);
    // A subset with a duplicate, plus entries outside [0, C_out) that must be ignored.
    std::vector<int32_t> sel = random_subset(s.c_out, rng);
    std::vector<int32_t> sel_bad = sel;
    sel_bad.push_back(-1);
    sel_bad.push_back(s.c_out);
    const auto in = membership(sel, s.c_out);
    for_each_tiling([&](const std::string& name, auto emulate) {
      SCOPED_TRACE(name);
      std::vector<float> dw(s.w_size(), sentinel());
      emulate(kcuda::make_conv_backward_filter_gemm(s, x.data(), dy.data(), nullptr, 0, dw.data()),
              s.groups);
      EXPECT_TRUE(close_normalized(dw, ref, kTolNative)) << "all filters";
      std::vector<float> dws(s.w_size(), sentinel());
      emulate(kcuda::make_conv_backward_filter_gemm(s, x.data(), dy.data(), sel_bad.data(),
                                                    static_cast<int>(sel_bad.size()), dws.data()),
              s.groups);
      EXPECT_TRUE(close_normalized(rows_where(dws, row, in, true), rows_where(ref, row, in, true),
                                   kTolNative))
          << "listed filters";
      EXPECT_TRUE(all_sentinel(rows_where(dws, row, in, false), "filters not listed"));
    });
  }
}

TEST(CudaConvEmulation, DepthwiseMatchesCpu) {
  std::mt19937 rng(14);
  std::vector<Conv2dShape> cases;
  for (const auto& s : emulation_cases())
    if (kcuda::conv_is_depthwise(s)) cases.push_back(s);
  cases.push_back(conv_shape(2, 3, 12, 11, 3, 7, 7, 2, 1, 3, 2, 3));  // 49 taps: 4 chunks
  ASSERT_GE(cases.size(), 4u);
  for (const Conv2dShape& s : cases) {
    SCOPED_TRACE(describe(s));
    const kcuda::ConvGeom geo = kcuda::make_conv_geom(s);
    const auto x = random_vec(s.x_size(), rng), w = random_vec(s.w_size(), rng),
               dy = random_vec(s.y_size(), rng), bias = random_vec(s.c_out, rng);
    Epilogue e;
    e.bias = bias.data();
    e.act = Activation::Tanh;

    std::vector<float> raw(s.y_size()), y(s.y_size());
    cpu::conv2d_forward(s, x.data(), w.data(), Epilogue{}, raw.data());
    for (int i = 0; i < int(s.y_size()); ++i)
      y[i] = kcuda::depthwise_forward_at(geo, x.data(), w.data(), e, i);
    EXPECT_TRUE(close_normalized(y, apply_epilogue(raw, s.c_out, geo.ohw, e), kTolNative));

    std::vector<float> dx_ref(s.x_size()), dx(s.x_size());
    cpu::conv2d_backward_data(s, dy.data(), w.data(), dx_ref.data());
    for (int i = 0; i < int(s.x_size()); ++i)
      dx[i] = kcuda::depthwise_backward_data_at(geo, dy.data(), w.data(), i);
    EXPECT_TRUE(close_normalized(dx, dx_ref, kTolNative));

    std::vector<float> dw_ref(s.w_size()), dw(s.w_size());
    cpu::conv2d_backward_filter(s, x.data(), dy.data(), dw_ref.data(), nullptr, nullptr, 0);
    for (int c = 0; c < s.c_out; ++c) {
      for (int t0 = 0; t0 < geo.khkw; t0 += kcuda::kDepthwiseTapChunk) {
        const int nt = std::min(kcuda::kDepthwiseTapChunk, geo.khkw - t0);
        float acc[kcuda::kDepthwiseTapChunk] = {};
        for (int e2 = 0; e2 < geo.n * geo.ohw; ++e2)
          kcuda::depthwise_filter_accumulate(geo, x.data(), dy.data(), c, e2, t0, nt, acc);
        for (int q = 0; q < nt; ++q) dw[int64_t(c) * geo.khkw + t0 + q] = acc[q];
      }
    }
    EXPECT_TRUE(close_normalized(dw, dw_ref, kTolNative));
  }
}

TEST(CudaLinearEmulation, MatchesCpu) {
  std::mt19937 rng(15);
  const int shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {33, 70, 129}, {5, 300, 40}, {130, 9, 3}};
  for (const auto& sh : shapes) {
    const int n = sh[0], in = sh[1], out = sh[2];
    SCOPED_TRACE(describe(LinearCase{n, in, out}));
    const auto x = random_vec(size_t(n) * in, rng), w = random_vec(size_t(out) * in, rng),
               dy = random_vec(size_t(n) * out, rng), bias = random_vec(out, rng);
    Epilogue e;
    e.bias = bias.data();
    e.act = Activation::Sigmoid;
    std::vector<float> raw(size_t(n) * out), dx_ref(size_t(n) * in), dw_ref(size_t(out) * in);
    cpu::linear_forward(n, in, out, x.data(), w.data(), Epilogue{}, raw.data());
    const auto y_ref = apply_epilogue(raw, out, 1, e);
    cpu::linear_backward_data(n, in, out, dy.data(), w.data(), dx_ref.data());
    cpu::linear_backward_weight(n, in, out, x.data(), dy.data(), dw_ref.data(), nullptr, nullptr,
                                0);
    std::vector<int32_t> rows = random_subset(out, rng);
    rows.push_back(out);  // ignored
    const auto in_set = membership(rows, out);
    for_each_tiling([&](const std::string& name, auto emulate) {
      SCOPED_TRACE(name);
      std::vector<float> y(size_t(n) * out, sentinel()), dx(size_t(n) * in, sentinel()),
          dw(size_t(out) * in, sentinel()), dws(size_t(out) * in, sentinel());
      emulate(kcuda::make_linear_forward_gemm(n, in, out, x.data(), w.data(), e, y.data()), 1);
      EXPECT_TRUE(close_normalized(y, y_ref, kTolNative)) << "forward";
      emulate(kcuda::make_linear_backward_data_gemm(n, in, out, dy.data(), w.data(), dx.data()), 1);
      EXPECT_TRUE(close_normalized(dx, dx_ref, kTolNative)) << "backward data";
      emulate(kcuda::make_linear_weight_grad_gemm(n, in, out, x.data(), dy.data(), dw.data(),
                                                  nullptr, 0),
              1);
      EXPECT_TRUE(close_normalized(dw, dw_ref, kTolNative)) << "backward weight";
      emulate(kcuda::make_linear_weight_grad_gemm(n, in, out, x.data(), dy.data(), dws.data(),
                                                  rows.data(), static_cast<int>(rows.size())),
              1);
      EXPECT_TRUE(close_normalized(rows_where(dws, in, in_set, true),
                                   rows_where(dw_ref, in, in_set, true), kTolNative))
          << "backward weight, rows listed";
      EXPECT_TRUE(all_sentinel(rows_where(dws, in, in_set, false), "rows not listed"));
    });
  }
}

// Errors are raised before anything touches the device, so these run without a GPU too.
TEST(CudaConvLinearErrors, BadArgumentsThrow) {
  Conv2dShape bad = conv_shape(1, 3, 4, 4, 5, 3, 3, 1, 1, 0, 0, 2);  // groups do not divide
  EXPECT_THROW(kcuda::conv2d_forward(nullptr, bad, nullptr, nullptr, Epilogue{}, nullptr),
               std::invalid_argument);
  const Conv2dShape ok = conv_shape(1, 2, 4, 4, 2, 3, 3, 1, 1, 0, 0, 1);
  int32_t dummy = 0;
  EXPECT_THROW(
      kcuda::conv2d_backward_filter(nullptr, ok, nullptr, nullptr, nullptr, nullptr, &dummy, -1),
      std::invalid_argument);
  EXPECT_THROW(kcuda::linear_forward(nullptr, 0, 3, 4, nullptr, nullptr, Epilogue{}, nullptr),
               std::invalid_argument);
  EXPECT_THROW(kcuda::linear_backward_weight(nullptr, 2, 3, 4, nullptr, nullptr, nullptr, nullptr,
                                             &dummy, -1),
               std::invalid_argument);
  Conv2dShape huge = conv_shape(1 << 16, 64, 256, 256, 64, 3, 3, 1, 1, 1, 1, 1);
  EXPECT_THROW(kcuda::conv2d_forward(nullptr, huge, nullptr, nullptr, Epilogue{}, nullptr),
               std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// GPU helpers

// Device floats between two guard zones; everything starts as the sentinel.
class GuardedBuffer {
 public:
  static constexpr size_t kGuard = 64;
  explicit GuardedBuffer(size_t count) : count_(count) {
    NNS_CUDA_CHECK(cudaMalloc(&base_, sizeof(float) * (count_ + 2 * kGuard)));
    fill_sentinel();
  }
  explicit GuardedBuffer(const std::vector<float>& v) : GuardedBuffer(v.size()) { upload(v); }
  ~GuardedBuffer() { cudaFree(base_); }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  float* get() { return base_ + kGuard; }
  void fill_sentinel() {
    const std::vector<float> s(count_ + 2 * kGuard, sentinel());
    NNS_CUDA_CHECK(cudaMemcpy(base_, s.data(), sizeof(float) * s.size(), cudaMemcpyHostToDevice));
  }
  void upload(const std::vector<float>& v) {
    if (v.size() != count_) throw std::logic_error("GuardedBuffer::upload: size mismatch");
    NNS_CUDA_CHECK(cudaMemcpy(get(), v.data(), sizeof(float) * count_, cudaMemcpyHostToDevice));
  }
  std::vector<float> download() const {
    std::vector<float> v(count_);
    NNS_CUDA_CHECK(
        cudaMemcpy(v.data(), base_ + kGuard, sizeof(float) * count_, cudaMemcpyDeviceToHost));
    return v;
  }
  ::testing::AssertionResult guards_intact() const {
    std::vector<float> all(count_ + 2 * kGuard);
    NNS_CUDA_CHECK(
        cudaMemcpy(all.data(), base_, sizeof(float) * all.size(), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < kGuard; ++i) {
      if (!is_sentinel(all[i]))
        return ::testing::AssertionFailure()
               << "guard before the buffer written at -" << (kGuard - i);
      if (!is_sentinel(all[kGuard + count_ + i]))
        return ::testing::AssertionFailure() << "guard after the buffer written at +" << i;
    }
    return ::testing::AssertionSuccess();
  }

 private:
  size_t count_;
  float* base_ = nullptr;
};

class DeviceInts {
 public:
  explicit DeviceInts(const std::vector<int32_t>& v) {
    NNS_CUDA_CHECK(cudaMalloc(&p_, sizeof(int32_t) * std::max<size_t>(v.size(), 1)));
    if (!v.empty())
      NNS_CUDA_CHECK(cudaMemcpy(p_, v.data(), sizeof(int32_t) * v.size(), cudaMemcpyHostToDevice));
  }
  ~DeviceInts() { cudaFree(p_); }
  DeviceInts(const DeviceInts&) = delete;
  DeviceInts& operator=(const DeviceInts&) = delete;
  const int32_t* get() const { return p_; }

 private:
  int32_t* p_ = nullptr;
};

void sync() {
  NNS_CUDA_CHECK(cudaGetLastError());
  NNS_CUDA_CHECK(cudaDeviceSynchronize());
}

// Which implementation the test selects: our kernels, or cuDNN / cuBLAS.
enum class Engine { Native, Library };

std::string engine_name(const ::testing::TestParamInfo<Engine>& info) {
  return info.param == Engine::Native ? "Native" : "Library";
}

// Selects an engine for the scope of a test and restores the previous one.
class EngineScope {
 public:
  explicit EngineScope(Engine e) : conv_(conv_engine()), gemm_(gemm_engine()) {
    set_conv_engine(e == Engine::Library ? ConvEngine::Cudnn : ConvEngine::Native);
    set_gemm_engine(e == Engine::Library ? GemmEngine::Cublas : GemmEngine::Native);
  }
  ~EngineScope() {
    set_conv_engine(conv_);
    set_gemm_engine(gemm_);
  }
  EngineScope(const EngineScope&) = delete;
  EngineScope& operator=(const EngineScope&) = delete;

 private:
  ConvEngine conv_;
  GemmEngine gemm_;
};

constexpr bool kHaveCudnn =
#if defined(NNS_HAVE_CUDNN)
    true;
#else
    false;
#endif

std::vector<Conv2dShape> gpu_conv_cases() {
  std::vector<Conv2dShape> v = small_conv_cases();
  for (const auto& s : random_conv_cases(16, 4321)) v.push_back(s);
  for (const auto& s : large_conv_cases()) v.push_back(s);
  return v;
}

class CudaConvParity : public ::testing::TestWithParam<Engine> {
 protected:
  double tol() const { return GetParam() == Engine::Native ? kTolNative : kTolCudnn; }
  // True when the cuDNN engine is asked for in a build without cuDNN: then every conv call
  // must throw a clear error, which the tests check instead.
  bool cudnn_missing() const { return GetParam() == Engine::Library && !kHaveCudnn; }
};

TEST_P(CudaConvParity, ForwardWithEachEpilogue) {
  NNS_SKIP_WITHOUT_CUDA_DEVICE();
  const EngineScope engine(GetParam());
  std::mt19937 rng(21);
  for (const Conv2dShape& s : gpu_conv_cases()) {
    SCOPED_TRACE(describe(s));
    const auto x = random_vec(s.x_size(), rng), w = random_vec(s.w_size(), rng);
    const auto bias = random_vec(s.c_out, rng), scale = random_vec(s.c_out, rng, 0.5f, 1.5f),
               shift = random_vec(s.c_out, rng);
    GuardedBuffer dx_(x), dw_(w), db_(bias), dscale(scale), dshift(shift), dy(s.y_size());
    if (cudnn_missing()) {
      EXPECT_THROW(kcuda::conv2d_forward(nullptr, s, dx_.get(), dw_.get(), Epilogue{}, dy.get()),
                   std::runtime_error);
      return;
    }
    std::vector<float> raw(s.y_size());
    cpu::conv2d_forward(s, x.data(), w.data(), Epilogue{}, raw.data());
    struct Variant {
      bool bias, scale, shift;
      Activation act;
    };
    const Variant variants[] = {
        {false, false, false, Activation::None}, {true, false, false, Activation::None},
        {true, true, true, Activation::ReLU},    {true, true, true, Activation::ReLU6},
        {false, true, true, Activation::Tanh},   {true, false, false, Activation::Sigmoid}};
    for (const Variant& v : variants) {
      SCOPED_TRACE(cat("epilogue act ", int(v.act), " bias ", v.bias, " scale ", v.scale, " shift ",
                       v.shift));
      Epilogue host, dev;
      host.act = dev.act = v.act;
      if (v.bias) {
        host.bias = bias.data();
        dev.bias = db_.get();
      }
      if (v.scale) {
        host.scale = scale.data();
        dev.scale = dscale.get();
      }
      if (v.shift) {
        host.shift = shift.data();
        dev.shift = dshift.get();
      }
      dy.fill_sentinel();
      kcuda::conv2d_forward(nullptr, s, dx_.get(), dw_.get(), dev, dy.get());
      sync();
      EXPECT_TRUE(close_normalized(
          dy.download(), apply_epilogue(raw, s.c_out, int64_t(s.out_h()) * s.out_w(), host),
          tol()));
      EXPECT_TRUE(dy.guards_intact());
    }
    EXPECT_TRUE(dx_.guards_intact());
  }
}

TEST_P(CudaConvParity, BackwardData) {
  NNS_SKIP_WITHOUT_CUDA_DEVICE();
  const EngineScope engine(GetParam());
  std::mt19937 rng(22);
  for (const Conv2dShape& s : gpu_conv_cases()) {
    SCOPED_TRACE(describe(s));
    const auto dy = random_vec(s.y_size(), rng), w = random_vec(s.w_size(), rng);
    GuardedBuffer ddy(dy), dw(w), ddx(s.x_size());
    if (cudnn_missing()) {
      EXPECT_THROW(kcuda::conv2d_backward_data(nullptr, s, ddy.get(), dw.get(), ddx.get()),
                   std::runtime_error);
      return;
    }
    std::vector<float> ref(s.x_size());
    cpu::conv2d_backward_data(s, dy.data(), w.data(), ref.data());
    kcuda::conv2d_backward_data(nullptr, s, ddy.get(), dw.get(), ddx.get());
    sync();
    EXPECT_TRUE(close_normalized(ddx.download(), ref, tol()));
    EXPECT_TRUE(ddx.guards_intact());
  }
}

TEST_P(CudaConvParity, BackwardFilterAllAndSubsets) {
  NNS_SKIP_WITHOUT_CUDA_DEVICE();
  const EngineScope engine(GetParam());
  std::mt19937 rng(23);
  for (const Conv2dShape& s : gpu_conv_cases()) {
    SCOPED_TRACE(describe(s));
    const int64_t row = s.w_size() / s.c_out;
    const auto x = random_vec(s.x_size(), rng), dy = random_vec(s.y_size(), rng);
    GuardedBuffer dx(x), ddy(dy), ddw(s.w_size()), ddb(s.c_out);
    if (cudnn_missing()) {
      EXPECT_THROW(kcuda::conv2d_backward_filter(nullptr, s, dx.get(), ddy.get(), ddw.get(),
                                                 ddb.get(), nullptr, 0),
                   std::runtime_error);
      return;
    }
    std::vector<float> dw_ref(s.w_size()), db_ref(s.c_out);
    cpu::conv2d_backward_filter(s, x.data(), dy.data(), dw_ref.data(), db_ref.data(), nullptr, 0);

    // Every filter.
    kcuda::conv2d_backward_filter(nullptr, s, dx.get(), ddy.get(), ddw.get(), ddb.get(), nullptr,
                                  0);
    sync();
    EXPECT_TRUE(close_normalized(ddw.download(), dw_ref, tol())) << "dw, all filters";
    EXPECT_TRUE(close_normalized(ddb.download(), db_ref, tol())) << "db, all filters";
    EXPECT_TRUE(ddw.guards_intact());
    EXPECT_TRUE(ddb.guards_intact());

    // A subset (shuffled, with a duplicate): listed rows computed, the others untouched.
    const std::vector<int32_t> sel = random_subset(s.c_out, rng);
    const auto in = membership(sel, s.c_out);
    const DeviceInts dsel(sel);
    ddw.fill_sentinel();
    ddb.fill_sentinel();
    kcuda::conv2d_backward_filter(nullptr, s, dx.get(), ddy.get(), ddw.get(), ddb.get(), dsel.get(),
                                  static_cast<int>(sel.size()));
    sync();
    const auto dw = ddw.download(), db = ddb.download();
    EXPECT_TRUE(
        close_normalized(rows_where(dw, row, in, true), rows_where(dw_ref, row, in, true), tol()))
        << "dw, listed filters";
    EXPECT_TRUE(all_sentinel(rows_where(dw, row, in, false), "dw rows not listed"));
    EXPECT_TRUE(
        close_normalized(rows_where(db, 1, in, true), rows_where(db_ref, 1, in, true), tol()))
        << "db, listed filters";
    EXPECT_TRUE(all_sentinel(rows_where(db, 1, in, false), "db entries not listed"));
    EXPECT_TRUE(ddw.guards_intact());
    EXPECT_TRUE(ddb.guards_intact());

    // An empty list writes nothing; db may be null.
    ddw.fill_sentinel();
    kcuda::conv2d_backward_filter(nullptr, s, dx.get(), ddy.get(), ddw.get(), nullptr, dsel.get(),
                                  0);
    sync();
    EXPECT_TRUE(all_sentinel(ddw.download(), "dw with an empty filter list"));
  }
}

// NaN and inf in the input reach exactly the outputs they reach on the CPU (native kernels sum
// directly); cuDNN's transform-based algorithms may spread them further, so there the CPU's
// non-finite outputs must be a subset of cuDNN's, for the forward and backward-data passes.
// cuDNN's backward-filter does not propagate them (seen on an H200, cuDNN 9, 2026-11-26: a
// finite dW where the CPU has NaN), so with the library engine that output is not checked;
// nnsplitter's own non-finite checks (loss, weights) do not depend on it.
TEST_P(CudaConvParity, NanAndInfPropagate) {
  NNS_SKIP_WITHOUT_CUDA_DEVICE();
  if (cudnn_missing()) GTEST_SKIP() << "no cuDNN in this build (covered by the other tests)";
  const EngineScope engine(GetParam());
  std::mt19937 rng(24);
  const Conv2dShape cases[] = {conv_shape(2, 3, 9, 8, 4, 3, 3, 2, 1, 1, 1, 1),
                               conv_shape(1, 4, 8, 8, 4, 3, 3, 1, 1, 1, 1, 4)};
  for (const Conv2dShape& s : cases) {
    SCOPED_TRACE(describe(s));
    auto x = random_vec(s.x_size(), rng), w = random_vec(s.w_size(), rng),
         dy = random_vec(s.y_size(), rng);
    x[5] = std::numeric_limits<float>::quiet_NaN();
    x[s.x_size() - 20] = std::numeric_limits<float>::infinity();
    dy[3] = std::numeric_limits<float>::quiet_NaN();
    dy[s.y_size() - 7] = -std::numeric_limits<float>::infinity();
    std::vector<float> y_ref(s.y_size()), dx_ref(s.x_size()), dw_ref(s.w_size());
    cpu::conv2d_forward(s, x.data(), w.data(), Epilogue{}, y_ref.data());
    cpu::conv2d_backward_data(s, dy.data(), w.data(), dx_ref.data());
    cpu::conv2d_backward_filter(s, x.data(), dy.data(), dw_ref.data(), nullptr, nullptr, 0);
    GuardedBuffer dx_(x), dw_(w), ddy(dy), y(s.y_size()), dx(s.x_size()), dw(s.w_size());
    kcuda::conv2d_forward(nullptr, s, dx_.get(), dw_.get(), Epilogue{}, y.get());
    kcuda::conv2d_backward_data(nullptr, s, ddy.get(), dw_.get(), dx.get());
    kcuda::conv2d_backward_filter(nullptr, s, dx_.get(), ddy.get(), dw.get(), nullptr, nullptr, 0);
    sync();
    const std::pair<std::vector<float>, std::vector<float>> outputs[] = {
        {y.download(), y_ref}, {dx.download(), dx_ref}, {dw.download(), dw_ref}};
    const char* names[] = {"forward", "backward data", "backward filter"};
    const int n_checked = GetParam() == Engine::Native ? 3 : 2;
    for (int o = 0; o < n_checked; ++o) {
      const auto& [got, ref] = outputs[o];
      size_t cpu_nonfinite = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        cpu_nonfinite += !std::isfinite(ref[i]);
        if (GetParam() == Engine::Native) {
          ASSERT_EQ(std::isnan(got[i]), std::isnan(ref[i]))
              << names[o] << " element " << i << ": got " << got[i] << ", ref " << ref[i];
          ASSERT_EQ(std::isinf(got[i]), std::isinf(ref[i]))
              << names[o] << " element " << i << ": got " << got[i] << ", ref " << ref[i];
        } else if (!std::isfinite(ref[i])) {
          ASSERT_FALSE(std::isfinite(got[i]))
              << names[o] << " element " << i << ": got " << got[i] << ", ref " << ref[i];
        }
      }
      EXPECT_GT(cpu_nonfinite, 0u) << names[o] << ": the test should produce non-finite values";
    }
  }
}

// Work queued on a user stream (not the default stream), on two streams in turn, and repeated
// runs giving bit-identical results (deterministic reductions, no atomics).
TEST_P(CudaConvParity, StreamsAndDeterminism) {
  NNS_SKIP_WITHOUT_CUDA_DEVICE();
  if (cudnn_missing()) GTEST_SKIP() << "no cuDNN in this build (covered by the other tests)";
  const EngineScope engine(GetParam());
  std::mt19937 rng(25);
  const Conv2dShape s = conv_shape(6, 16, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1);
  const auto x = random_vec(s.x_size(), rng), w = random_vec(s.w_size(), rng),
             dy = random_vec(s.y_size(), rng);
  std::vector<float> y_ref(s.y_size()), dw_ref(s.w_size());
  cpu::conv2d_forward(s, x.data(), w.data(), Epilogue{}, y_ref.data());
  cpu::conv2d_backward_filter(s, x.data(), dy.data(), dw_ref.data(), nullptr, nullptr, 0);
  GuardedBuffer dx(x), dw_(w), ddy(dy), y(s.y_size()), dw1(s.w_size()), dw2(s.w_size());
  cudaStream_t streams[2];
  for (auto& st : streams) NNS_CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  for (cudaStream_t st : streams) {
    y.fill_sentinel();
    kcuda::conv2d_forward(st, s, dx.get(), dw_.get(), Epilogue{}, y.get());
    kcuda::conv2d_backward_filter(st, s, dx.get(), ddy.get(), dw1.get(), nullptr, nullptr, 0);
    kcuda::conv2d_backward_filter(st, s, dx.get(), ddy.get(), dw2.get(), nullptr, nullptr, 0);
    NNS_CUDA_CHECK(cudaStreamSynchronize(st));
    EXPECT_TRUE(close_normalized(y.download(), y_ref, tol()));
    EXPECT_TRUE(close_normalized(dw1.download(), dw_ref, tol()));
    if (GetParam() == Engine::Native) {
      const auto a = dw1.download(), b = dw2.download();
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_EQ(bits_of(a[i]), bits_of(b[i])) << "backward filter not deterministic at " << i;
    }
  }
  for (cudaStream_t st : streams) NNS_CUDA_CHECK(cudaStreamDestroy(st));
}

INSTANTIATE_TEST_SUITE_P(Engines, CudaConvParity,
                         ::testing::Values(Engine::Native, Engine::Library), engine_name);

// ---------------------------------------------------------------------------------------------
// Linear

class CudaLinearParity : public ::testing::TestWithParam<Engine> {
 protected:
  double tol() const { return GetParam() == Engine::Native ? kTolNative : kTolCublas; }
};

TEST_P(CudaLinearParity, ForwardWithEachEpilogue) {
  NNS_SKIP_WITHOUT_CUDA_DEVICE();
  const EngineScope engine(GetParam());
  std::mt19937 rng(31);
  for (const LinearCase& c : linear_cases()) {
    SCOPED_TRACE(describe(c));
    const auto x = random_vec(size_t(c.n) * c.in, rng), w = random_vec(size_t(c.out) * c.in, rng);
    const auto bias = random_vec(c.out, rng), scale = random_vec(c.out, rng, 0.5f, 1.5f),
               shift = random_vec(c.out, rng);
    std::vector<float> raw(size_t(c.n) * c.out);
    cpu::linear_forward(c.n, c.in, c.out, x.data(), w.data(), Epilogue{}, raw.data());
    GuardedBuffer dx(x), dw(w), db(bias), dscale(scale), dshift(shift), y(size_t(c.n) * c.out);
    for (Activation act : {Activation::None, Activation::ReLU, Activation::ReLU6, Activation::Tanh,
                           Activation::Sigmoid}) {
      SCOPED_TRACE(cat("act ", int(act)));
      Epilogue host, dev;
      host.act = dev.act = act;
      if (act != Activation::None) {
        host.bias = bias.data();
        dev.bias = db.get();
      }
      if (act == Activation::ReLU || act == Activation::Tanh) {
        host.scale = scale.data();
        host.shift = shift.data();
        dev.scale = dscale.get();
        dev.shift = dshift.get();
      }
      y.fill_sentinel();
      kcuda::linear_forward(nullptr, c.n, c.in, c.out, dx.get(), dw.get(), dev, y.get());
      sync();
      EXPECT_TRUE(close_normalized(y.download(), apply_epilogue(raw, c.out, 1, host), tol()));
      EXPECT_TRUE(y.guards_intact());
    }
  }
}

TEST_P(CudaLinearParity, BackwardData) {
  NNS_SKIP_WITHOUT_CUDA_DEVICE();
  const EngineScope engine(GetParam());
  std::mt19937 rng(32);
  for (const LinearCase& c : linear_cases()) {
    SCOPED_TRACE(describe(c));
    const auto dy = random_vec(size_t(c.n) * c.out, rng), w = random_vec(size_t(c.out) * c.in, rng);
    std::vector<float> ref(size_t(c.n) * c.in);
    cpu::linear_backward_data(c.n, c.in, c.out, dy.data(), w.data(), ref.data());
    GuardedBuffer ddy(dy), dw(w), dx(size_t(c.n) * c.in);
    kcuda::linear_backward_data(nullptr, c.n, c.in, c.out, ddy.get(), dw.get(), dx.get());
    sync();
    EXPECT_TRUE(close_normalized(dx.download(), ref, tol()));
    EXPECT_TRUE(dx.guards_intact());
  }
}

TEST_P(CudaLinearParity, BackwardWeightAllAndSubsets) {
  NNS_SKIP_WITHOUT_CUDA_DEVICE();
  const EngineScope engine(GetParam());
  std::mt19937 rng(33);
  for (const LinearCase& c : linear_cases()) {
    SCOPED_TRACE(describe(c));
    const auto x = random_vec(size_t(c.n) * c.in, rng), dy = random_vec(size_t(c.n) * c.out, rng);
    std::vector<float> dw_ref(size_t(c.out) * c.in), db_ref(c.out);
    cpu::linear_backward_weight(c.n, c.in, c.out, x.data(), dy.data(), dw_ref.data(), db_ref.data(),
                                nullptr, 0);
    GuardedBuffer dx(x), ddy(dy), dw(size_t(c.out) * c.in), db(c.out);
    kcuda::linear_backward_weight(nullptr, c.n, c.in, c.out, dx.get(), ddy.get(), dw.get(),
                                  db.get(), nullptr, 0);
    sync();
    EXPECT_TRUE(close_normalized(dw.download(), dw_ref, tol())) << "dw, all rows";
    EXPECT_TRUE(close_normalized(db.download(), db_ref, tol())) << "db, all rows";

    const std::vector<int32_t> rows = random_subset(c.out, rng);
    const auto in = membership(rows, c.out);
    const DeviceInts drows(rows);
    dw.fill_sentinel();
    db.fill_sentinel();
    kcuda::linear_backward_weight(nullptr, c.n, c.in, c.out, dx.get(), ddy.get(), dw.get(),
                                  db.get(), drows.get(), static_cast<int>(rows.size()));
    sync();
    const auto got_w = dw.download(), got_b = db.download();
    EXPECT_TRUE(close_normalized(rows_where(got_w, c.in, in, true),
                                 rows_where(dw_ref, c.in, in, true), tol()))
        << "dw, listed rows";
    EXPECT_TRUE(all_sentinel(rows_where(got_w, c.in, in, false), "dw rows not listed"));
    EXPECT_TRUE(
        close_normalized(rows_where(got_b, 1, in, true), rows_where(db_ref, 1, in, true), tol()))
        << "db, listed rows";
    EXPECT_TRUE(all_sentinel(rows_where(got_b, 1, in, false), "db entries not listed"));
    EXPECT_TRUE(dw.guards_intact());
    EXPECT_TRUE(db.guards_intact());
  }
}

TEST_P(CudaLinearParity, NanAndInfPropagate) {
  NNS_SKIP_WITHOUT_CUDA_DEVICE();
  const EngineScope engine(GetParam());
  std::mt19937 rng(34);
  const int n = 5, in = 19, out = 7;
  auto x = random_vec(size_t(n) * in, rng), w = random_vec(size_t(out) * in, rng),
       dy = random_vec(size_t(n) * out, rng);
  x[3] = std::numeric_limits<float>::quiet_NaN();
  x[2 * in + 4] = std::numeric_limits<float>::infinity();
  dy[out + 2] = -std::numeric_limits<float>::infinity();
  std::vector<float> y_ref(size_t(n) * out), dx_ref(size_t(n) * in), dw_ref(size_t(out) * in);
  cpu::linear_forward(n, in, out, x.data(), w.data(), Epilogue{}, y_ref.data());
  cpu::linear_backward_data(n, in, out, dy.data(), w.data(), dx_ref.data());
  cpu::linear_backward_weight(n, in, out, x.data(), dy.data(), dw_ref.data(), nullptr, nullptr, 0);
  GuardedBuffer dx_(x), dw_(w), ddy(dy), y(y_ref.size()), dx(dx_ref.size()), dw(dw_ref.size());
  kcuda::linear_forward(nullptr, n, in, out, dx_.get(), dw_.get(), Epilogue{}, y.get());
  kcuda::linear_backward_data(nullptr, n, in, out, ddy.get(), dw_.get(), dx.get());
  kcuda::linear_backward_weight(nullptr, n, in, out, dx_.get(), ddy.get(), dw.get(), nullptr,
                                nullptr, 0);
  sync();
  const std::pair<std::vector<float>, std::vector<float>> outputs[] = {
      {y.download(), y_ref}, {dx.download(), dx_ref}, {dw.download(), dw_ref}};
  for (const auto& [got, ref] : outputs) {
    for (size_t i = 0; i < ref.size(); ++i) {
      ASSERT_EQ(std::isnan(got[i]), std::isnan(ref[i])) << i << ": " << got[i] << " vs " << ref[i];
      ASSERT_EQ(std::isinf(got[i]), std::isinf(ref[i])) << i << ": " << got[i] << " vs " << ref[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, CudaLinearParity,
                         ::testing::Values(Engine::Native, Engine::Library), engine_name);

}  // namespace
}  // namespace nns::ops::cuda_conv_linear_test

#endif  // NNS_HAVE_CUDA
