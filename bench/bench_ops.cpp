// Micro-benchmarks of the CPU convolution on ResNet-20 shapes at batch 128 (3x3, stride 1,
// pad 1, C_in = C_out): forward, backward-data, backward-filter, plus the masked backward-filter
// of a few filters (the obfuscator's case) and a depthwise conv (MobileNetV2). Reports GFLOP/s.
// The last argument picks the CPU algorithm: algo:0 the default (direct kernel where it
// applies), algo:1 im2col + SGEMM (OpenBLAS).
//   nns_microbench --benchmark_out=ops.json --benchmark_out_format=json
// Numbers depend on the machine and OMP_NUM_THREADS: say which gave them.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/conv_internal.h"
#include "kernels/ops.h"

namespace {

using nns::Device;
namespace ops = nns::ops;

const ops::Context kCpu{Device::CPU};

ops::Conv2dShape resnet_shape(int hw, int c, int groups = 1) {
  ops::Conv2dShape s;
  s.n = 128;
  s.c_in = c;
  s.h = hw;
  s.w = hw;
  s.c_out = c;
  s.kh = s.kw = 3;
  s.stride_h = s.stride_w = 1;
  s.pad_h = s.pad_w = 1;
  s.groups = groups;
  return s;
}

// Multiply-adds of the whole conv, counted as 2 FLOPs each.
double conv_flops(const ops::Conv2dShape& s, int filters) {
  return 2.0 * s.n * filters * s.out_h() * s.out_w() * (s.c_in / s.groups) * s.kh * s.kw;
}

std::vector<float> random_buffer(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Sets the conv algorithm from the benchmark's last argument for the lifetime of the object.
struct AlgoScope {
  explicit AlgoScope(int64_t arg) {
    ops::cpu::set_conv_algo(arg == 1 ? ops::cpu::ConvAlgo::Im2colGemm : ops::cpu::ConvAlgo::Auto);
  }
  ~AlgoScope() { ops::cpu::set_conv_algo(ops::cpu::ConvAlgo::Auto); }
};

void set_counters(benchmark::State& state, double flops) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["threads"] = omp_get_max_threads();
}

// Arguments: spatial size, channels, groups.
void BM_conv2d_forward(benchmark::State& state) {
  const auto s = resnet_shape(state.range(0), state.range(1), state.range(2));
  const AlgoScope algo(state.range(3));
  const auto x = random_buffer(s.x_size(), 1), w = random_buffer(s.w_size(), 2);
  const auto scale = random_buffer(s.c_out, 3), shift = random_buffer(s.c_out, 4);
  std::vector<float> y(s.y_size());
  ops::Epilogue e;  // a folded eval-mode BatchNorm + ReLU, as in the network
  e.scale = scale.data();
  e.shift = shift.data();
  e.act = ops::Activation::ReLU;
  for (auto _ : state) {
    ops::conv2d_forward(kCpu, s, x.data(), w.data(), e, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, conv_flops(s, s.c_out));
}

void BM_conv2d_backward_data(benchmark::State& state) {
  const auto s = resnet_shape(state.range(0), state.range(1), state.range(2));
  const AlgoScope algo(state.range(3));
  const auto dy = random_buffer(s.y_size(), 1), w = random_buffer(s.w_size(), 2);
  std::vector<float> dx(s.x_size());
  for (auto _ : state) {
    ops::conv2d_backward_data(kCpu, s, dy.data(), w.data(), dx.data());
    benchmark::DoNotOptimize(dx.data());
  }
  set_counters(state, conv_flops(s, s.c_out));
}

// Fourth argument: number of filters (0 = all).
void BM_conv2d_backward_filter(benchmark::State& state) {
  const auto s = resnet_shape(state.range(0), state.range(1), state.range(2));
  const int nf = state.range(3) > 0 ? static_cast<int>(state.range(3)) : s.c_out;
  const auto x = random_buffer(s.x_size(), 1), dy = random_buffer(s.y_size(), 2);
  std::vector<float> dw(s.w_size()), db(s.c_out);
  std::vector<int32_t> filters;
  for (int f = 0; f < nf; ++f) filters.push_back((f * 7) % s.c_out);
  const int32_t* list = state.range(3) > 0 ? filters.data() : nullptr;
  for (auto _ : state) {
    ops::conv2d_backward_filter(kCpu, s, x.data(), dy.data(), dw.data(), db.data(), list, nf);
    benchmark::DoNotOptimize(dw.data());
  }
  set_counters(state, conv_flops(s, nf));
}

void resnet20_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"hw", "c", "groups", "algo"});
  for (int algo : {0, 1}) b->Args({28, 16, 1, algo})->Args({14, 32, 1, algo})->Args({7, 64, 1, algo});
}

void filter_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"hw", "c", "groups", "filters"});
  for (int nf : {0, 4}) b->Args({28, 16, 1, nf})->Args({14, 32, 1, nf})->Args({7, 64, 1, nf});
}

void depthwise_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"hw", "c", "groups", "algo"});
  b->Args({28, 96, 96, 0})->Args({14, 192, 192, 0});
}

BENCHMARK(BM_conv2d_forward)->Apply(resnet20_shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_conv2d_backward_data)
    ->Apply(resnet20_shapes)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_conv2d_backward_filter)
    ->Apply(filter_shapes)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_conv2d_forward)
    ->Name("BM_depthwise_forward")
    ->Apply(depthwise_shapes)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
