// Kernel lab for the CUDA convolutions and GEMMs: native kernels versus cuDNN / cuBLAS on the
// layer shapes of ResNet-18 (ImageNet 224x224 by default, --cifar for 32x32) at batch 128, and a
// few GEMMs. For each shape: forward, backward data, backward filter (all filters) and backward
// filter for an 8-filter subset (the obfuscator's masked backward), in GFLOP/s of the full
// layer's arithmetic (the subset row counts only its own 8/C_out share).
//
//   bench_cuda_conv [--cifar] [--batch N] [--reps R] [--json PATH]
//
// Prints a table and writes JSON (default bench_cuda_conv.json). Say which GPU gave the numbers
// when quoting them (the table header prints the device name).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"

namespace {

using nns::ops::Conv2dShape;
namespace kcuda = nns::ops::cuda;

struct Layer {
  const char* name;
  Conv2dShape s;
};

Conv2dShape conv(int n, int c_in, int hw, int c_out, int k, int stride, int pad) {
  Conv2dShape s;
  s.n = n;
  s.c_in = c_in;
  s.h = s.w = hw;
  s.c_out = c_out;
  s.kh = s.kw = k;
  s.stride_h = s.stride_w = stride;
  s.pad_h = s.pad_w = pad;
  return s;
}

std::vector<Layer> resnet18_layers(int n, bool cifar) {
  if (cifar) {
    return {{"conv1 3x3 3->64 @32", conv(n, 3, 32, 64, 3, 1, 1)},
            {"layer1 3x3 64 @32", conv(n, 64, 32, 64, 3, 1, 1)},
            {"layer2 3x3/2 64->128 @32", conv(n, 64, 32, 128, 3, 2, 1)},
            {"layer2 3x3 128 @16", conv(n, 128, 16, 128, 3, 1, 1)},
            {"layer2 down 1x1/2 64->128", conv(n, 64, 32, 128, 1, 2, 0)},
            {"layer3 3x3/2 128->256 @16", conv(n, 128, 16, 256, 3, 2, 1)},
            {"layer3 3x3 256 @8", conv(n, 256, 8, 256, 3, 1, 1)},
            {"layer4 3x3/2 256->512 @8", conv(n, 256, 8, 512, 3, 2, 1)},
            {"layer4 3x3 512 @4", conv(n, 512, 4, 512, 3, 1, 1)}};
  }
  return {{"conv1 7x7/2 3->64 @224", conv(n, 3, 224, 64, 7, 2, 3)},
          {"layer1 3x3 64 @56", conv(n, 64, 56, 64, 3, 1, 1)},
          {"layer2 3x3/2 64->128 @56", conv(n, 64, 56, 128, 3, 2, 1)},
          {"layer2 3x3 128 @28", conv(n, 128, 28, 128, 3, 1, 1)},
          {"layer2 down 1x1/2 64->128", conv(n, 64, 56, 128, 1, 2, 0)},
          {"layer3 3x3/2 128->256 @28", conv(n, 128, 28, 256, 3, 2, 1)},
          {"layer3 3x3 256 @14", conv(n, 256, 14, 256, 3, 1, 1)},
          {"layer4 3x3/2 256->512 @14", conv(n, 256, 14, 512, 3, 2, 1)},
          {"layer4 3x3 512 @7", conv(n, 512, 7, 512, 3, 1, 1)}};
}

double conv_flops(const Conv2dShape& s) {
  return 2.0 * s.n * s.c_out * s.out_h() * s.out_w() * (s.c_in / s.groups) * s.kh * s.kw;
}

class DeviceFloats {
 public:
  explicit DeviceFloats(size_t count, uint32_t seed = 1) : count_(count) {
    NNS_CUDA_CHECK(cudaMalloc(&p_, sizeof(float) * std::max<size_t>(count, 1)));
    std::vector<float> h(count);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    for (auto& v : h) v = d(rng);
    NNS_CUDA_CHECK(cudaMemcpy(p_, h.data(), sizeof(float) * count, cudaMemcpyHostToDevice));
  }
  ~DeviceFloats() { cudaFree(p_); }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  float* get() const { return p_; }

 private:
  size_t count_;
  float* p_ = nullptr;
};

// Milliseconds per call: 2 warm-up calls (algorithm choice, workspace growth), then `reps` timed.
double time_ms(const std::function<void()>& f, int reps) {
  f();
  f();
  NNS_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t a, b;
  NNS_CUDA_CHECK(cudaEventCreate(&a));
  NNS_CUDA_CHECK(cudaEventCreate(&b));
  NNS_CUDA_CHECK(cudaEventRecord(a));
  for (int i = 0; i < reps; ++i) f();
  NNS_CUDA_CHECK(cudaEventRecord(b));
  NNS_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0.0f;
  NNS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  NNS_CUDA_CHECK(cudaEventDestroy(a));
  NNS_CUDA_CHECK(cudaEventDestroy(b));
  return ms / reps;
}

struct Row {
  std::string layer, op;
  double flops = 0.0;
  double native_ms = -1.0, library_ms = -1.0;  // < 0: not available
};

// Runs f under both engines; a library engine missing from the build gives -1.
void measure(Row& r, const std::function<void()>& f, int reps) {
  nns::ops::set_conv_engine(nns::ops::ConvEngine::Native);
  nns::ops::set_gemm_engine(nns::ops::GemmEngine::Native);
  r.native_ms = time_ms(f, reps);
  nns::ops::set_conv_engine(nns::ops::ConvEngine::Cudnn);
  nns::ops::set_gemm_engine(nns::ops::GemmEngine::Cublas);
  try {
    r.library_ms = time_ms(f, reps);
  } catch (const std::runtime_error& e) {
    std::fprintf(stderr, "library engine unavailable for %s %s: %s\n", r.layer.c_str(),
                 r.op.c_str(), e.what());
    cudaGetLastError();
    r.library_ms = -1.0;
  }
  nns::ops::set_conv_engine(nns::ops::ConvEngine::Native);
  nns::ops::set_gemm_engine(nns::ops::GemmEngine::Native);
}

std::string gflops(double flops, double ms) {
  if (ms < 0) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f", flops / (ms * 1e-3) / 1e9);
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  bool cifar = false;
  int batch = 128, reps = 20;
  std::string json_path = "bench_cuda_conv.json";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--cifar") {
      cifar = true;
    } else if (a == "--batch" && i + 1 < argc) {
      batch = std::atoi(argv[++i]);
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--cifar] [--batch N] [--reps R] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "bench_cuda_conv: no CUDA device; run it on a machine with a GPU\n");
    return 1;
  }
  cudaDeviceProp prop;
  NNS_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));

  std::vector<Row> rows;
  for (const Layer& l : resnet18_layers(batch, cifar)) {
    const Conv2dShape& s = l.s;
    DeviceFloats x(s.x_size(), 1), w(s.w_size(), 2), y(s.y_size(), 3), dy(s.y_size(), 4),
        dx(s.x_size(), 5), dw(s.w_size(), 6), db(s.c_out, 7);
    std::vector<int32_t> subset;
    for (int f = 0; f < std::min(8, s.c_out); ++f)
      subset.push_back(f * (s.c_out / 8 + 1) % s.c_out);
    int32_t* dsubset = nullptr;
    NNS_CUDA_CHECK(cudaMalloc(&dsubset, sizeof(int32_t) * subset.size()));
    NNS_CUDA_CHECK(cudaMemcpy(dsubset, subset.data(), sizeof(int32_t) * subset.size(),
                              cudaMemcpyHostToDevice));
    nns::ops::Epilogue epi;
    epi.scale = db.get();
    epi.shift = db.get();
    epi.act = nns::ops::Activation::ReLU;
    const double flops = conv_flops(s);

    Row fwd{l.name, "forward+bn+relu", flops};
    measure(
        fwd, [&] { kcuda::conv2d_forward(nullptr, s, x.get(), w.get(), epi, y.get()); }, reps);
    Row bd{l.name, "backward data", flops};
    measure(
        bd, [&] { kcuda::conv2d_backward_data(nullptr, s, dy.get(), w.get(), dx.get()); }, reps);
    Row bf{l.name, "backward filter", flops};
    measure(
        bf,
        [&] {
          kcuda::conv2d_backward_filter(nullptr, s, x.get(), dy.get(), dw.get(), db.get(), nullptr,
                                        0);
        },
        reps);
    Row bfs{l.name, "backward filter, 8 filters", flops * double(subset.size()) / s.c_out};
    measure(
        bfs,
        [&] {
          kcuda::conv2d_backward_filter(nullptr, s, x.get(), dy.get(), dw.get(), db.get(), dsubset,
                                        static_cast<int>(subset.size()));
        },
        reps);
    for (Row* r : {&fwd, &bd, &bf, &bfs}) rows.push_back(*r);
    NNS_CUDA_CHECK(cudaFree(dsubset));
  }

  // GEMMs: the classifier head, and square SGEMMs for reference against cuBLAS.
  const int gemms[][3] = {
      {batch, 512, 1000}, {batch, 512, 10}, {2048, 2048, 2048}, {4096, 4096, 4096}};
  for (const auto& g : gemms) {
    const int n = g[0], in = g[1], out = g[2];
    DeviceFloats x(size_t(n) * in, 1), w(size_t(out) * in, 2), y(size_t(n) * out, 3);
    const std::string name =
        "linear " + std::to_string(n) + "x" + std::to_string(in) + "x" + std::to_string(out);
    Row r{name, "forward", 2.0 * n * in * out};
    measure(
        r,
        [&] {
          kcuda::linear_forward(nullptr, n, in, out, x.get(), w.get(), nns::ops::Epilogue{},
                                y.get());
        },
        reps);
    rows.push_back(r);
  }

  std::printf("# bench_cuda_conv on %s (%d SMs), batch %d, %s shapes; GFLOP/s\n", prop.name,
              prop.multiProcessorCount, batch, cifar ? "CIFAR" : "ImageNet");
  std::printf("%-28s %-28s %10s %10s %8s\n", "layer", "op", "native", "cudnn/cublas", "ratio");
  for (const Row& r : rows) {
    char ratio[32] = "n/a";
    if (r.library_ms > 0) std::snprintf(ratio, sizeof ratio, "%.2f", r.library_ms / r.native_ms);
    std::printf("%-28s %-28s %10s %10s %8s\n", r.layer.c_str(), r.op.c_str(),
                gflops(r.flops, r.native_ms).c_str(), gflops(r.flops, r.library_ms).c_str(), ratio);
  }

  std::ofstream js(json_path);
  js << "{\n  \"device\": \"" << prop.name << "\",\n  \"batch\": " << batch << ",\n  \"shapes\": \""
     << (cifar ? "cifar" : "imagenet") << "\",\n  \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    js << "    {\"layer\": \"" << r.layer << "\", \"op\": \"" << r.op
       << "\", \"flops\": " << r.flops << ", \"native_ms\": " << r.native_ms
       << ", \"library_ms\": " << r.library_ms << "}" << (i + 1 < rows.size() ? ",\n" : "\n");
  }
  js << "  ]\n}\n";
  std::printf("wrote %s\n", json_path.c_str());
  return 0;
}
