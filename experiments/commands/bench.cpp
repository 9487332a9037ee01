// `nnsplitter bench`: inference, training and obfuscation-step images/s per model at a given
// batch size on the chosen device. By default on a freshly initialised model and random inputs
// of the model's dataset shape; with --weights a trained model, with --images real the first
// --data-batches batches of the dataset's training set (file order), cycled through by every
// timed loop. tools/bench_compare.sh runs it against the same workloads in PyTorch
// (tools/bench_pytorch.py), which reproduces the obfuscation mask below and the step order, so
// that the loss of the first --trace-steps obfuscation steps can be compared.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/engine/plan.h"
#include "core/io/atomic_file.h"
#include "core/io/model_io.h"
#include "core/optim/optimizer.h"
#include "core/random.h"
#include "core/splitter/mask.h"
#include "core/splitter/obfuscator.h"
#include "experiments/cli.h"
#include "kernels/ops.h"

namespace nns::exp {

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Process CPU seconds (all threads): on a machine shared beyond its cores, CPU time per call
// still measures the work when wall time mostly measures the scheduler.
double cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct Timing {
  double wall = 0, cpu = 0;  // medians per call, seconds
  double faults = 0;         // minor + major page faults per call over the timed calls
};

// Page faults of the process so far (every thread): a steady-state step that allocates fresh
// memory from the kernel pays them, one that reuses its buffers does not.
double page_faults() {
  rusage u {};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_minflt) + double(u.ru_majflt);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median wall and CPU seconds per call of fn, after two warm-up calls, repeating until min_time
// has passed (at least min_iters calls).
template <class F>
Timing time_median(F&& fn, double min_time, int min_iters, const ops::Context& ctx) {
  fn();
  fn();
  ops::synchronize(ctx);
  std::vector<double> t, c;
  double start = now_s();
  const double f0 = page_faults();
  while ((int)t.size() < min_iters || now_s() - start < min_time) {
    double t0 = now_s(), c0 = cpu_s();
    fn();
    ops::synchronize(ctx);
    t.push_back(now_s() - t0);
    c.push_back(cpu_s() - c0);
    if (t.size() > 1000) break;
  }
  return {median(t), median(c), (page_faults() - f0) / double(t.size())};
}

struct BenchArgs {
  EngineArgs engines;
  std::string models = "lenet5,resnet20,resnet18", dataset = "auto", device = "cpu", out;
  std::string weights, images = "random", data_dir, precision = "fp32";
  int batch = 128, threads = 0, min_iters = 5, data_batches = 4, trace_steps = 10;
  double min_time = 3.0;
  bool json = false;
};

struct BenchModel {
  std::unique_ptr<models::Model> model;
  std::string dataset;
};

// The model to measure: loaded from --weights (name empty), or built fresh (seed 0) for `name`.
BenchModel bench_model(const BenchArgs& a, const std::string& name) {
  BenchModel bm;
  std::string ds = a.dataset;
  if (name.empty()) {
    std::map<std::string, std::string> meta;
    bm.model = load_weights(a.weights, "", "", &meta);
    if (ds == "auto") ds = meta.count("dataset") ? meta["dataset"] : "";
    if (ds.empty() && bm.model->spec().graph)  // an ONNX model: by its input
      ds = bm.model->spec().in_channels == 1 ? "fashion-mnist" : "cifar10";
  } else {
    require_model_name(name);
  }
  const std::string arch = name.empty() ? bm.model->spec().arch : name;
  if (ds == "auto" || ds.empty())
    ds = (arch == "lenet5" || arch == "resnet20") ? "fashion-mnist" : "cifar10";
  auto info = require_dataset_info(ds);
  if (!bm.model) {
    bm.model = models::build_model(spec_for(arch, info), 0);
  } else if (bm.model->spec().in_channels != info.channels ||
             bm.model->spec().num_classes != info.num_classes) {
    throw UsageError(a.weights + ": model " + arch + " does not fit dataset " + ds);
  }
  bm.dataset = ds;
  return bm;
}

// --data-batches input batches on the device: real images (the training set's first batches,
// normalised as for training, no augmentation) or standard-normal noise with random labels.
void make_batches(const BenchArgs& a, const models::ModelSpec& spec, const std::string& ds,
                  Device dev, std::vector<Tensor>& xs, std::vector<Tensor>& ys) {
  const int n = a.batch;
  if (a.images == "real") {
    auto splits = data::load_dataset(ds, a.data_dir);
    data::BatchOptions bo;
    bo.pad_to = spec.input_size > splits.train.height ? spec.input_size : 0;
    data::Loader loader(splits.train, data::normalization_for(ds), n, false, 0, bo, true);
    Tensor xb, yb;
    while ((int)xs.size() < a.data_batches && loader.next(xb, yb)) {
      xs.push_back(xb.to(dev));
      ys.push_back(yb.to(dev));
    }
    if (xs.empty())
      throw UsageError(ds + ": the training set has fewer than --batch " + std::to_string(n) +
                       " images");
    return;
  }
  Rng rng(1);
  for (int b = 0; b < a.data_batches; ++b) {
    Tensor xh({n, spec.in_channels, spec.input_size, spec.input_size});
    Tensor yh({n}, DType::I32);
    for (int64_t i = 0; i < xh.numel(); ++i) xh.f32()[i] = float(rng.normal());
    for (int i = 0; i < n; ++i) yh.i32()[i] = int32_t(rng.below(spec.num_classes));
    xs.push_back(xh.to(dev));
    ys.push_back(yh.to(dev));
  }
}

// Inference, training (forward, cross-entropy, backward, SGD) and obfuscation-step throughput of
// one model; every loop takes the next of the prepared batches at each call.
nlohmann::json bench_one(models::Model& model, const std::string& ds, const BenchArgs& a,
                         Device dev, const ops::Context& ctx) {
  model.to(dev);
  const auto& spec = model.spec();
  const int n = a.batch, k = spec.num_classes;
  std::vector<Tensor> xs, ys;
  make_batches(a, spec, ds, dev, xs, ys);
  size_t next = 0;
  auto batch = [&]() -> size_t { return next++ % xs.size(); };
  Tensor probs({n, k}, DType::F32, dev), dlogits({n, k}, DType::F32, dev);
  auto loss_and_grad = [&](size_t b) {
    const Tensor& logits = model.forward(xs[b]);
    float loss;
    ops::softmax_cross_entropy_forward(ctx, n, k, logits.f32(), ys[b].i32(), probs.f32(), &loss);
    ops::softmax_cross_entropy_backward(ctx, n, k, probs.f32(), ys[b].i32(), 1.0f, dlogits.f32());
    model.backward(dlogits);
    return loss;
  };
  model.set_training(false);
  Timing t_inf;
  {
    models::NoGrad no_grad(model);  // inference as an evaluation loop runs it
    t_inf = time_median([&] { model.forward(xs[batch()]); }, a.min_time, a.min_iters, ctx);
  }

  // Training changes the weights: keep the loaded ones for the obfuscation step.
  std::vector<Tensor> saved;
  for (auto& e : model.state()) saved.push_back(e.tensor->clone());
  model.set_training(true);
  optim::SgdOptions so;
  so.lr = 0.01f;
  optim::SGD sgd(model.parameters(), so);
  next = 0;
  Timing t_train = time_median(
      [&] {
        loss_and_grad(batch());
        sgd.step();
      },
      a.min_time, a.min_iters, ctx);
  {
    auto st = model.state();
    for (size_t i = 0; i < st.size(); ++i) st[i].tensor->copy_from(saved[i]);
  }

  // One obfuscation step: filter 0 of every eligible layer, the entries with |w - c| < eps
  // (c = mean of the eligible weights, eps = 1% of their range), Adam lr 0.05 maximising the
  // cross-entropy, clamped to the eligible range. Our way: eval mode with BN folded, weight
  // gradients of the chosen filters only, the fused masked Adam + clamp.
  auto layers = splitter::eligible(model, "spatial");
  std::vector<std::vector<int32_t>> filters(layers.size(), std::vector<int32_t>{0});
  auto stats = splitter::eligible_stats(layers);
  auto masks = splitter::select_mask(layers, filters, float(stats.mean),
                                     float((stats.max - stats.min) * 0.01));
  std::vector<Tensor> idx, mv;
  int64_t masked = 0;
  for (auto& m : masks) {
    Tensor ih({int64_t(m.index.size())}, DType::I64);
    std::copy(m.index.begin(), m.index.end(), ih.i64());
    idx.push_back(ih.to(dev));
    mv.emplace_back(Shape{2 * int64_t(m.index.size()) + 1}, DType::F32, dev);
    masked += int64_t(m.index.size());
  }
  splitter::enter_masked_mode(model, layers, masks);
  int64_t t_step = 0;
  std::vector<double> trace;
  next = 0;
  Timing t_obf = time_median(
      [&] {
        float loss = loss_and_grad(batch());
        if ((int)trace.size() < a.trace_steps) trace.push_back(loss);
        ++t_step;
        for (size_t l = 0; l < masks.size(); ++l) {
          int64_t cnt = int64_t(masks[l].index.size());
          if (!cnt) continue;
          nn::Parameter* p = layers[masks[l].layer].param;
          ops::masked_adam_clamp(ctx, cnt, idx[l].i64(), p->value.f32(), p->grad.f32(), mv[l].f32(),
                                 mv[l].f32() + cnt, 0.05f, 0.9f, 0.999f, 1e-8f, t_step, -1.0f, 0.0f,
                                 stats.min, stats.max);
        }
      },
      a.min_time, a.min_iters, ctx);
  // What the CPU engine decided for the obfuscation step's plan (the last one run).
  nlohmann::json plan = nullptr;
  if (const engine::Plan* p = model.last_plan()) {
    nlohmann::json convs = nlohmann::json::array();
    for (const auto& c : p->conv_choices())
      convs.push_back({{"node", c.node}, {"engine", c.engine}, {"impl", c.impl},
                       {"native_ms", c.native_ms}, {"onednn_ms", c.onednn_ms}});
    plan = {{"arena_bytes", p->arena_bytes()}, {"convolutions", convs}};
  }
  splitter::leave_masked_mode(model);
  std::string shape = std::to_string(spec.in_channels) + "x" + std::to_string(spec.input_size) +
                      "x" + std::to_string(spec.input_size);
  return {{"model", spec.arch},
          {"input", shape},
          {"dataset", ds},
          {"batch", n},
          {"data_batches", xs.size()},
          {"inference_images_per_second", n / t_inf.wall},
          {"training_images_per_second", n / t_train.wall},
          {"obfuscation_images_per_second", n / t_obf.wall},
          {"inference_cpu_seconds_per_batch", t_inf.cpu},
          {"training_cpu_seconds_per_batch", t_train.cpu},
          {"obfuscation_cpu_seconds_per_batch", t_obf.cpu},
          {"inference_page_faults_per_batch", t_inf.faults},
          {"training_page_faults_per_batch", t_train.faults},
          {"obfuscation_page_faults_per_batch", t_obf.faults},
          {"obfuscation_masked_weights", masked},
          {"cpu_engine", dev == Device::CPU ? engine::cpu_engine_name(engine::cpu_engine()) : "-"},
          {"obfuscation_plan", plan},
          {"obfuscation_losses", trace}};
}

}  // namespace

Command add_bench_command(CLI::App& root) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* sub = root.add_subcommand("bench", "Inference and training throughput per model");
  sub->add_option("--models", a->models, "Comma-separated architectures")->capture_default_str();
  sub->add_option("--dataset", a->dataset,
                  "Input shape from this dataset; auto = fashion-mnist for lenet5/resnet20, "
                  "cifar10 otherwise")
      ->capture_default_str();
  sub->add_option("--batch", a->batch, "Batch size")->capture_default_str();
  sub->add_option("--min-time", a->min_time, "Seconds to time each measurement")
      ->capture_default_str();
  sub->add_option("--min-iters", a->min_iters, "Minimum timed iterations")->capture_default_str();
  sub->add_option("--weights", a->weights,
                  "Trained weights (.safetensors) of the one model to measure (replaces --models)");
  sub->add_option("--images", a->images,
                  "random inputs, or real: the first --data-batches "
                  "batches of the dataset's training set")
      ->check(CLI::IsMember({"random", "real"}))
      ->capture_default_str();
  sub->add_option("--data-dir", a->data_dir, "Folder holding the dataset files (--images real)");
  sub->add_option("--data-batches", a->data_batches, "Distinct batches cycled through")
      ->capture_default_str();
  sub->add_option("--trace-steps", a->trace_steps,
                  "Record the loss of this many first obfuscation steps in the JSON")
      ->capture_default_str();
  sub->add_option("--device", a->device, "cpu, cuda or auto")->capture_default_str();
  sub->add_option("--threads", a->threads, "CPU threads (default: the CPUs this process may use)");
  sub->add_option("--out", a->out, "Also write the JSON result to this file");
  sub->add_option("--precision", a->precision,
                  "The obfuscation step's convolutions: fp32, or bf16 (splitter.precision; CPU "
                  "with avx512_bf16, --cpu-engine onednn or auto)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  add_engine_options(sub, a->engines);
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    set_threads(a->threads);
    Device dev = require_device(a->device);
    apply_engines(a->engines, dev);
    const engine::Precision precision = engine::parse_precision(a->precision);
    if (precision == engine::Precision::Bf16)
      if (std::string why = engine::bf16_unavailable(dev); !why.empty())
        throw UsageError("--precision bf16 cannot run here: " + why);
    engine::set_search_precision(precision);
    ops::Context ctx{dev, nullptr};
    if (a->batch < 1) throw UsageError("--batch must be at least 1");
    if (a->data_batches < 1) throw UsageError("--data-batches must be at least 1");
    if (a->trace_steps < 0) throw UsageError("--trace-steps must not be negative");
    std::vector<std::string> names;
    if (!a->weights.empty()) {
      names.push_back("");  // the architecture comes from the file
    } else {
      std::stringstream ss(a->models);
      for (std::string n; std::getline(ss, n, ',');)
        if (!n.empty()) names.push_back(n);
    }
    nlohmann::json results = nlohmann::json::array();
    if (!a->json)
      std::printf("%-14s %-14s %6s %14s %14s %14s %16s\n", "model", "input", "batch",
                  "infer img/s", "train img/s", "obfusc img/s", "faults/step i/t/o");
    for (const auto& name : names) {
      BenchModel bm = bench_model(*a, name);
      results.push_back(bench_one(*bm.model, bm.dataset, *a, dev, ctx));
      const auto& r = results.back();
      if (!a->json) {
        std::printf("%-14s %-14s %6d %14.1f %14.1f %14.1f %6.1f/%.1f/%.1f\n",
                    r["model"].get<std::string>().c_str(), r["input"].get<std::string>().c_str(),
                    a->batch, r["inference_images_per_second"].get<double>(),
                    r["training_images_per_second"].get<double>(),
                    r["obfuscation_images_per_second"].get<double>(),
                    r["inference_page_faults_per_batch"].get<double>(),
                    r["training_page_faults_per_batch"].get<double>(),
                    r["obfuscation_page_faults_per_batch"].get<double>());
        std::fflush(stdout);
      }
    }
    nlohmann::json j;
    j["device"] = device_name(dev);
    j["threads"] = current_threads();
    // The OpenMP wait setting the run had (experiments/threads.h): null = libgomp's default.
    const char* spin = std::getenv("GOMP_SPINCOUNT");
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    j["gomp_spincount"] = spin ? nlohmann::json(spin) : nlohmann::json(nullptr);
    j["omp_wait_policy"] = policy ? nlohmann::json(policy) : nlohmann::json(nullptr);
    j["batch"] = a->batch;
    j["images"] = a->images;
    j["obfuscation_precision"] = a->precision;
    j["results"] = results;
    if (!a->out.empty()) io::write_file_atomically(a->out, j.dump(2) + "\n");
    if (a->json) print_json(j);
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
