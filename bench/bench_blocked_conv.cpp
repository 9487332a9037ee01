// Kernel lab for the blocked convolutions (kernels/cpu/blocked/conv_blocked.h): per zoo shape
// and pass, our GFLOP/s and oneDNN's on the same nChw16c (AVX-512) or nChw8c (AVX2) buffers,
// and the ratio (oneDNN time / our time: > 1 means we are faster).
//
//   bench_blocked_conv [--isa avx512|avx2] [--batch 128] [--reps 15] [--only SUBSTR] [--pass P]
//                      [--clock wall|cpu] [--json F]
//
// oneDNN gets its best setting: weights (and weight gradients) in the format it picks (reordered
// once, outside the timing), bias and ReLU fused as a post-op in the forward. Ours writes the
// weight gradient in PyTorch's plain layout. "wgrad 1f"/"wgrad 5f" time our weight gradient of
// 1 or 5 filters (the obfuscation step's case) against oneDNN's of all filters (it has no other).
// "fwd nchw"/"wgrad nchw": the first layer (1-4 channels) reading the network input in NCHW.
// Calls alternate (ours, oneDNN, ours, ...) so that load on a shared machine hits both alike;
// each number is the median of --reps calls. oneDNN's ISA cap can be set once per process: run
// the program once per --isa.
#include <omp.h>

#include <algorithm>
#include <time.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/blocked/conv_blocked.h"
#include "kernels/cpu/cpu_isa.h"

namespace {

namespace blk = nns::ops::cpu::blocked;

struct Shape {
  const char* model;
  const char* name;
  int c_in, h, c_out, k, stride, pad;
};

// The convolutions of the zoo at the benchmark's input sizes (resnet18: CIFAR stem, max-pool
// kept, so its stages run at 16, 8, 4 and 2 pixels).
const Shape kShapes[] = {
    {"resnet20", "stem 1->16 3x3 @28", 1, 28, 16, 3, 1, 1},
    {"resnet20", "16->16 3x3 @28", 16, 28, 16, 3, 1, 1},
    {"resnet20", "16->32 3x3 s2 @28", 16, 28, 32, 3, 2, 1},
    {"resnet20", "16->32 1x1 s2 @28", 16, 28, 32, 1, 2, 0},
    {"resnet20", "32->32 3x3 @14", 32, 14, 32, 3, 1, 1},
    {"resnet20", "32->64 3x3 s2 @14", 32, 14, 64, 3, 2, 1},
    {"resnet20", "32->64 1x1 s2 @14", 32, 14, 64, 1, 2, 0},
    {"resnet20", "64->64 3x3 @7", 64, 7, 64, 3, 1, 1},
    {"resnet18", "stem 3->64 3x3 @32", 3, 32, 64, 3, 1, 1},
    {"resnet18", "64->64 3x3 @16", 64, 16, 64, 3, 1, 1},
    {"resnet18", "64->128 3x3 s2 @16", 64, 16, 128, 3, 2, 1},
    {"resnet18", "64->128 1x1 s2 @16", 64, 16, 128, 1, 2, 0},
    {"resnet18", "128->128 3x3 @8", 128, 8, 128, 3, 1, 1},
    {"resnet18", "128->256 3x3 s2 @8", 128, 8, 256, 3, 2, 1},
    {"resnet18", "128->256 1x1 s2 @8", 128, 8, 256, 1, 2, 0},
    {"resnet18", "256->256 3x3 @4", 256, 4, 256, 3, 1, 1},
    {"resnet18", "256->512 3x3 s2 @4", 256, 4, 512, 3, 2, 1},
    {"resnet18", "256->512 1x1 s2 @4", 256, 4, 512, 1, 2, 0},
    {"resnet18", "512->512 3x3 @2", 512, 2, 512, 3, 1, 1},
    {"lenet5", "1->6 5x5 pad2 @28", 1, 28, 6, 5, 1, 2},
    {"lenet5", "6->16 5x5 @14", 6, 14, 16, 5, 1, 0},
};

// Wall time, or with --clock cpu the process's CPU time (all threads): on a machine loaded
// beyond its cores, CPU time still measures the work (run with OMP_WAIT_POLICY=passive so that
// waiting threads do not spin it up).
bool g_cpu_clock = false;
double now_s() {
  if (g_cpu_clock) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

struct Row {
  std::string model, shape, pass, dnnl_impl;
  double ours_s, dnnl_s, gflop_ours, gflop_dnnl;
};

}  // namespace

int main(int argc, char** argv) {
  std::string isa = nns::ops::cpu::cpu_avx512_usable() ? "avx512" : "avx2";
  int batch = 128, reps = 15;
  std::string only, only_pass, json;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--isa") isa = next();
    else if (a == "--batch") batch = std::stoi(next());
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--only") only = next();
    else if (a == "--pass") only_pass = next();
    else if (a == "--json") json = next();
    else if (a == "--clock") g_cpu_clock = next() == "cpu";
    else {
      std::fprintf(stderr,
                   "usage: %s [--isa avx512|avx2] [--batch N] [--reps N] [--only SUBSTR] [--pass NAME] "
                   "[--clock wall|cpu] [--json FILE]\n",
                   argv[0]);
      return 2;
    }
  }
  if (isa != "avx512" && isa != "avx2") {
    std::fprintf(stderr, "--isa: expected avx512 or avx2, got '%s'\n", isa.c_str());
    return 2;
  }
  using nns::ops::cpu::CpuIsa;
  nns::ops::cpu::set_cpu_isa(isa == "avx512" ? CpuIsa::Avx512 : CpuIsa::Avx2);
  dnnl::set_max_cpu_isa(isa == "avx512" ? dnnl::cpu_isa::avx512_core : dnnl::cpu_isa::avx2);
  const int L = blk::lanes();
  const int threads = omp_get_max_threads();

  using tag = dnnl::memory::format_tag;
  using dt = dnnl::memory::data_type;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const tag act_tag = L == 16 ? tag::nChw16c : tag::nChw8c;

  std::printf("blocked convolutions vs oneDNN %d.%d: %s, nChw%dc, batch %d, %d threads, "
              "median of %d alternating calls\n",
              DNNL_VERSION_MAJOR, DNNL_VERSION_MINOR, isa.c_str(), L, batch, threads, reps);
  std::printf("%-9s %-20s %-9s %9s %9s %7s  %s\n", "model", "shape", "pass", "ours GF/s",
              "dnnl GF/s", "ratio", "oneDNN impl");
  std::vector<Row> rows;
  std::mt19937 rng(42);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  auto fill = [&](std::vector<float>& v) {
    for (auto& x : v) x = dist(rng);
  };

  for (const Shape& sh : kShapes) {
    const std::string label = std::string(sh.model) + " " + sh.name;
    if (!only.empty() && label.find(only) == std::string::npos) continue;
    const blk::ConvDesc d{batch, sh.c_in, sh.h, sh.h, sh.c_out, sh.k, sh.k, sh.stride,
                          sh.stride, sh.pad, sh.pad, sh.pad, sh.pad, 1, L};
    const int oh = blk::conv_out_h(d), ow = blk::conv_out_w(d);
    const double macs = double(batch) * sh.c_out * oh * ow * sh.c_in * sh.k * sh.k;

    // Inputs in NCHW, converted to blocked (pad lanes zero); weights in OIHW.
    std::vector<float> x_nchw(size_t(batch) * sh.c_in * sh.h * sh.h);
    std::vector<float> dy_nchw(size_t(batch) * sh.c_out * oh * ow);
    std::vector<float> w(size_t(sh.c_out) * sh.c_in * sh.k * sh.k), bias(sh.c_out);
    fill(x_nchw);
    fill(dy_nchw);
    fill(w);
    fill(bias);
    std::vector<float> x(blk::blocked_floats(batch, sh.c_in, sh.h, sh.h, L));
    std::vector<float> dy(blk::blocked_floats(batch, sh.c_out, oh, ow, L));
    std::vector<float> y(dy.size()), dx(x.size()), y_dnnl(dy.size()), dx_dnnl(x.size());
    blk::to_blocked(batch, sh.c_in, sh.h, sh.h, L, x_nchw.data(), x.data());
    blk::to_blocked(batch, sh.c_out, oh, ow, L, dy_nchw.data(), dy.data());
    std::vector<float> wf(blk::packed_weights_floats(d, blk::Pass::Forward));
    std::vector<float> wb(blk::packed_weights_floats(d, blk::Pass::BackwardData));
    blk::pack_weights(d, blk::Pass::Forward, w.data(), nullptr, wf.data());
    blk::pack_weights(d, blk::Pass::BackwardData, w.data(), nullptr, wb.data());
    size_t scratch_n = 0;
    for (blk::Pass p : {blk::Pass::Forward, blk::Pass::BackwardData, blk::Pass::BackwardWeights})
      scratch_n = std::max(scratch_n, blk::scratch_floats(d, p, threads));
    std::vector<float> scratch(scratch_n), dw(w.size()), db(sh.c_out);
    // Touch every buffer once so no timing pays first-touch page faults.
    std::fill(y.begin(), y.end(), 0.0f);
    std::fill(dx.begin(), dx.end(), 0.0f);
    std::fill(scratch.begin(), scratch.end(), 0.0f);

    // oneDNN on the same buffers.
    const dnnl::memory::dims src_dims = {batch, sh.c_in, sh.h, sh.h};
    const dnnl::memory::dims dst_dims = {batch, sh.c_out, oh, ow};
    const dnnl::memory::dims wei_dims = {sh.c_out, sh.c_in, sh.k, sh.k};
    const dnnl::memory::dims strides = {sh.stride, sh.stride}, pads = {sh.pad, sh.pad};
    const dnnl::memory::desc src_md(src_dims, dt::f32, act_tag), dst_md(dst_dims, dt::f32, act_tag);
    const dnnl::memory::desc wei_any(wei_dims, dt::f32, tag::any);
    const dnnl::memory::desc bias_md({sh.c_out}, dt::f32, tag::x);
    dnnl::post_ops po;
    po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    dnnl::primitive_attr attr;
    attr.set_post_ops(po);
    dnnl::convolution_forward::primitive_desc fwd_pd(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                        dnnl::algorithm::convolution_direct, src_md, wei_any,
                                        bias_md, dst_md, strides, pads, pads),
        attr, eng);
    // oneDNN's jit kernels refuse a blocked input of 1-3 channels (its reference code would run
    // at < 1 GFLOP/s): give its forward and weight gradient the plain NCHW input it wants there
    // (PyTorch's case too), the conversion not timed.
    const bool plain_src = std::string(fwd_pd.impl_info_str()).rfind("ref", 0) == 0;
    const dnnl::memory::desc src_fwd_md =
        plain_src ? dnnl::memory::desc(src_dims, dt::f32, tag::nchw) : src_md;
    if (plain_src)
      fwd_pd = dnnl::convolution_forward::primitive_desc(
          dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training,
                                          dnnl::algorithm::convolution_direct, src_fwd_md,
                                          wei_any, bias_md, dst_md, strides, pads, pads),
          attr, eng);
    const dnnl::convolution_backward_data::primitive_desc bwd_pd(
        dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, src_md,
                                              wei_any, dst_md, strides, pads, pads),
        eng, fwd_pd);
    const dnnl::convolution_backward_weights::primitive_desc wgt_pd(
        dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct, src_fwd_md,
                                                 wei_any, bias_md, dst_md, strides, pads, pads),
        eng, fwd_pd);
    dnnl::memory w_user({wei_dims, dt::f32, tag::oihw}, eng, w.data());
    dnnl::memory w_fwd(fwd_pd.weights_desc(), eng), w_bwd(bwd_pd.weights_desc(), eng);
    dnnl::reorder(w_user, w_fwd).execute(strm, w_user, w_fwd);
    dnnl::reorder(w_user, w_bwd).execute(strm, w_user, w_bwd);
    dnnl::memory m_x(src_fwd_md, eng, plain_src ? x_nchw.data() : x.data());
    dnnl::memory m_y(dst_md, eng, y_dnnl.data());
    dnnl::memory m_dy(dst_md, eng, dy.data()), m_dx(src_md, eng, dx_dnnl.data());
    dnnl::memory m_bias(bias_md, eng, bias.data());
    dnnl::memory m_dw(wgt_pd.diff_weights_desc(), eng), m_db(bias_md, eng);
    dnnl::convolution_forward fwd(fwd_pd);
    dnnl::convolution_backward_data bwd(bwd_pd);
    dnnl::convolution_backward_weights wgt(wgt_pd);
    std::vector<float> ws_dnnl(std::max({fwd_pd.scratchpad_desc().get_size(),
                                         bwd_pd.scratchpad_desc().get_size(),
                                         wgt_pd.scratchpad_desc().get_size()}) / 4 + 16);

    auto run_dnnl_fwd = [&] {
      fwd.execute(strm, {{DNNL_ARG_SRC, m_x}, {DNNL_ARG_WEIGHTS, w_fwd}, {DNNL_ARG_BIAS, m_bias},
                         {DNNL_ARG_DST, m_y}});
      strm.wait();
    };
    auto run_dnnl_bwd = [&] {
      bwd.execute(strm, {{DNNL_ARG_DIFF_DST, m_dy}, {DNNL_ARG_WEIGHTS, w_bwd},
                         {DNNL_ARG_DIFF_SRC, m_dx}});
      strm.wait();
    };
    auto run_dnnl_wgt = [&] {
      wgt.execute(strm, {{DNNL_ARG_SRC, m_x}, {DNNL_ARG_DIFF_DST, m_dy},
                         {DNNL_ARG_DIFF_WEIGHTS, m_dw}, {DNNL_ARG_DIFF_BIAS, m_db}});
      strm.wait();
    };
    const int32_t one[1] = {7 % sh.c_out};
    const int32_t five[5] = {3 % sh.c_out, 11 % sh.c_out, 20 % sh.c_out, 37 % sh.c_out,
                             50 % sh.c_out};
    struct PassRun {
      const char* name;
      double macs;
      std::function<void()> ours, dnnl;
      std::string impl;
    };
    std::vector<PassRun> passes = {
        {"fwd", macs,
         [&] {
           blk::conv_forward(d, x.data(), wf.data(), bias.data(), nullptr,
                             nns::ops::Activation::ReLU, y.data(), scratch.data());
         },
         run_dnnl_fwd, std::string(fwd_pd.impl_info_str()) + (plain_src ? " (src nchw)" : "")},
        {"bwd data", macs,
         [&] { blk::conv_backward_data(d, dy.data(), wb.data(), dx.data(), scratch.data()); },
         run_dnnl_bwd, bwd_pd.impl_info_str()},
        {"wgrad", macs,
         [&] {
           blk::conv_backward_weights(d, x.data(), dy.data(), dw.data(), db.data(), nullptr, 0,
                                      scratch.data());
         },
         run_dnnl_wgt, std::string(wgt_pd.impl_info_str()) + (plain_src ? " (src nchw)" : "")},
        {"wgrad 1f", macs / sh.c_out,
         [&] {
           blk::conv_backward_weights(d, x.data(), dy.data(), dw.data(), db.data(), one, 1,
                                      scratch.data());
         },
         run_dnnl_wgt, std::string(wgt_pd.impl_info_str()) + (plain_src ? " (src nchw)" : "")},
        {"wgrad 5f", macs * std::min(5, sh.c_out) / sh.c_out,
         [&] {
           blk::conv_backward_weights(d, x.data(), dy.data(), dw.data(), db.data(), five, 5,
                                      scratch.data());
         },
         run_dnnl_wgt, std::string(wgt_pd.impl_info_str()) + (plain_src ? " (src nchw)" : "")},
    };
    // The first layer reading the network input in NCHW (1-4 channels).
    if (blk::nchw_input_supported(d)) {
      passes.push_back({"fwd nchw", macs,
                        [&] {
                          blk::conv_forward_nchw_input(d, x_nchw.data(), wf.data(), bias.data(),
                                                       nullptr, nns::ops::Activation::ReLU,
                                                       y.data(), scratch.data());
                        },
                        run_dnnl_fwd,
                        std::string(fwd_pd.impl_info_str()) + (plain_src ? " (src nchw)" : "")});
      passes.push_back({"wgrad nchw", macs,
                        [&] {
                          blk::conv_backward_weights_nchw_input(d, x_nchw.data(), dy.data(),
                                                                dw.data(), db.data(), nullptr, 0,
                                                                scratch.data());
                        },
                        run_dnnl_wgt,
                        std::string(wgt_pd.impl_info_str()) + (plain_src ? " (src nchw)" : "")});
    }
    for (const PassRun& p : passes) {
      if (!only_pass.empty() && only_pass != p.name) continue;
      std::vector<double> t_ours, t_dnnl;
      for (int r = -2; r < reps; ++r) {  // two warm-up pairs
        double t0 = now_s();
        p.ours();
        double t1 = now_s();
        p.dnnl();
        double t2 = now_s();
        if (r >= 0) {
          t_ours.push_back(t1 - t0);
          t_dnnl.push_back(t2 - t1);
        }
      }
      Row row{sh.model, sh.name, p.name, p.impl, median(t_ours), median(t_dnnl), 0.0, 0.0};
      row.gflop_ours = 2.0 * p.macs / row.ours_s * 1e-9;
      row.gflop_dnnl = 2.0 * macs / row.dnnl_s * 1e-9;
      std::printf("%-9s %-20s %-9s %9.1f %9.1f %7.2f  %s\n", sh.model, sh.name, p.name,
                  row.gflop_ours, row.gflop_dnnl, row.dnnl_s / row.ours_s, p.impl.c_str());
      std::fflush(stdout);
      rows.push_back(row);
    }
    // The two engines agree (a sanity check of the benchmark, not a test).
    double worst = 0.0;
    for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, double(std::fabs(y[i] - y_dnnl[i])));
    for (size_t i = 0; i < dx.size(); ++i) worst = std::max(worst, double(std::fabs(dx[i] - dx_dnnl[i])));
    if (worst > 1e-2) std::printf("  WARNING: ours and oneDNN differ by %g\n", worst);
  }
  if (!json.empty()) {
    std::ofstream f(json);
    f << "{\"isa\": \"" << isa << "\", \"lanes\": " << L << ", \"batch\": " << batch
      << ", \"threads\": " << threads << ", \"reps\": " << reps << ", \"onednn\": \""
      << DNNL_VERSION_MAJOR << "." << DNNL_VERSION_MINOR << "\", \"rows\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      f << "  {\"model\": \"" << r.model << "\", \"shape\": \"" << r.shape << "\", \"pass\": \""
        << r.pass << "\", \"ours_s\": " << r.ours_s << ", \"onednn_s\": " << r.dnnl_s
        << ", \"ours_gflops\": " << r.gflop_ours << ", \"onednn_gflops\": " << r.gflop_dnnl
        << ", \"onednn_impl\": \"" << r.dnnl_impl << "\"}" << (i + 1 < rows.size() ? "," : "")
        << "\n";
    }
    f << "]}\n";
  }
  return 0;
}
