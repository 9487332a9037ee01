// `nnsplitter bench`: inference and training images/s per model at a given batch size on the
// chosen device, on random inputs of the model's dataset shape.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "core/io/atomic_file.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "core/splitter/mask.h"
#include "core/splitter/obfuscator.h"
#include "experiments/cli.h"
#include "kernels/ops.h"

namespace nns::exp {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Median seconds per call of fn, after warm-up, repeating until min_time has passed (at least
// min_iters calls).
template <class F>
double time_median(F&& fn, double min_time, int min_iters, const ops::Context& ctx) {
  fn();
  fn();
  ops::synchronize(ctx);
  std::vector<double> t;
  double start = now_s();
  while ((int)t.size() < min_iters || now_s() - start < min_time) {
    double t0 = now_s();
    fn();
    ops::synchronize(ctx);
    t.push_back(now_s() - t0);
    if (t.size() > 1000) break;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

Command add_bench_command(CLI::App& root) {
  struct Args {
    EngineArgs engines;
    std::string models = "lenet5,resnet20,resnet18", dataset = "auto", device = "cpu", out;
    int batch = 128, threads = 0, min_iters = 5;
    double min_time = 3.0;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand("bench", "Inference and training throughput per model");
  sub->add_option("--models", a->models, "Comma-separated architectures")->capture_default_str();
  sub->add_option("--dataset", a->dataset,
                  "Input shape from this dataset; auto = fashion-mnist for lenet5/resnet20, "
                  "cifar10 otherwise")->capture_default_str();
  sub->add_option("--batch", a->batch, "Batch size")->capture_default_str();
  sub->add_option("--min-time", a->min_time, "Seconds to time each measurement")
      ->capture_default_str();
  sub->add_option("--min-iters", a->min_iters, "Minimum timed iterations")->capture_default_str();
  sub->add_option("--device", a->device, "cpu, cuda or auto")->capture_default_str();
  sub->add_option("--threads", a->threads, "CPU threads (default: all cores)");
  sub->add_option("--out", a->out, "Also write the JSON result to this file");
  add_engine_options(sub, a->engines);
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    set_threads(a->threads);
    Device dev = require_device(a->device);
    apply_engines(a->engines, dev);
    ops::Context ctx{dev, nullptr};
    if (a->batch < 1) throw UsageError("--batch must be at least 1");
    std::vector<std::string> names;
    std::stringstream ss(a->models);
    for (std::string n; std::getline(ss, n, ',');)
      if (!n.empty()) names.push_back(n);
    nlohmann::json results = nlohmann::json::array();
    if (!a->json)
      std::printf("%-14s %-14s %6s %14s %14s %14s\n", "model", "input", "batch", "infer img/s",
                  "train img/s", "obfusc img/s");
    for (const auto& arch : names) {
      require_model_name(arch);
      std::string ds = a->dataset;
      if (ds == "auto") ds = (arch == "lenet5" || arch == "resnet20") ? "fashion-mnist" : "cifar10";
      auto spec = spec_for(arch, require_dataset_info(ds));
      auto model = models::build_model(spec, 0);
      model->to(dev);
      const int n = a->batch, k = spec.num_classes;
      Tensor xh({n, spec.in_channels, spec.input_size, spec.input_size});
      Tensor yh({n}, DType::I32);
      Rng rng(1);
      for (int64_t i = 0; i < xh.numel(); ++i) xh.f32()[i] = float(rng.normal());
      for (int i = 0; i < n; ++i) yh.i32()[i] = int32_t(rng.below(k));
      Tensor x = xh.to(dev), y = yh.to(dev);
      Tensor probs({n, k}, DType::F32, dev), dlogits({n, k}, DType::F32, dev);
      model->set_training(false);
      double t_inf = time_median([&] { model->forward(x); }, a->min_time, a->min_iters, ctx);
      model->set_training(true);
      optim::SgdOptions so;
      so.lr = 0.01f;
      optim::SGD sgd(model->parameters(), so);
      double t_train = time_median(
          [&] {
            const Tensor& logits = model->forward(x);
            float loss;
            ops::softmax_cross_entropy_forward(ctx, n, k, logits.f32(), y.i32(), probs.f32(), &loss);
            ops::softmax_cross_entropy_backward(ctx, n, k, probs.f32(), y.i32(), 1.0f,
                                                dlogits.f32());
            model->backward(dlogits);
            sgd.step();
          },
          a->min_time, a->min_iters, ctx);
      // One obfuscation step: eval mode with BN folded, weight gradients for one filter per
      // eligible layer only, the fused masked Adam + clamp over ~1% of those filters' entries.
      auto layers = splitter::eligible(*model, "spatial");
      std::vector<std::vector<int32_t>> filters(layers.size(), std::vector<int32_t>{0});
      auto stats = splitter::eligible_stats(layers);
      auto masks = splitter::select_mask(layers, filters, float(stats.mean),
                                         float((stats.max - stats.min) * 0.01));
      std::vector<Tensor> idx, mv;
      for (auto& m : masks) {
        Tensor ih({int64_t(m.index.size())}, DType::I64);
        std::copy(m.index.begin(), m.index.end(), ih.i64());
        idx.push_back(ih.to(dev));
        mv.emplace_back(Shape{2 * int64_t(m.index.size()) + 1}, DType::F32, dev);
      }
      splitter::enter_masked_mode(*model, layers, masks);
      int64_t t_step = 0;
      double t_obf = time_median(
          [&] {
            const Tensor& logits = model->forward(x);
            float loss;
            ops::softmax_cross_entropy_forward(ctx, n, k, logits.f32(), y.i32(), probs.f32(), &loss);
            ops::softmax_cross_entropy_backward(ctx, n, k, probs.f32(), y.i32(), 1.0f,
                                                dlogits.f32());
            model->backward(dlogits);
            ++t_step;
            for (size_t l = 0; l < masks.size(); ++l) {
              int64_t cnt = int64_t(masks[l].index.size());
              if (!cnt) continue;
              nn::Parameter* p = layers[masks[l].layer].param;
              ops::masked_adam_clamp(ctx, cnt, idx[l].i64(), p->value.f32(), p->grad.f32(),
                                     mv[l].f32(), mv[l].f32() + cnt, 0.05f, 0.9f, 0.999f, 1e-8f,
                                     t_step, -1.0f, 0.0f, stats.min, stats.max);
            }
          },
          a->min_time, a->min_iters, ctx);
      splitter::leave_masked_mode(*model);
      double inf = n / t_inf, tr = n / t_train, ob = n / t_obf;
      std::string shape = std::to_string(spec.in_channels) + "x" + std::to_string(spec.input_size) +
                          "x" + std::to_string(spec.input_size);
      if (!a->json) {
        std::printf("%-14s %-14s %6d %14.1f %14.1f %14.1f\n", arch.c_str(), shape.c_str(), n, inf,
                    tr, ob);
        std::fflush(stdout);
      }
      results.push_back({{"model", arch}, {"input", shape}, {"batch", n},
                         {"inference_images_per_second", inf},
                         {"training_images_per_second", tr},
                         {"obfuscation_images_per_second", ob}});
    }
    nlohmann::json j;
    j["device"] = device_name(dev);
    j["threads"] = current_threads();
    j["results"] = results;
    if (!a->out.empty()) io::write_file_atomically(a->out, j.dump(2) + "\n");
    if (a->json) print_json(j);
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
