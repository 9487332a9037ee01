// `nnsplitter eval`: accuracy of a weights file on a dataset's test (or train) split.
#include <cstdio>

#include "core/io/model_io.h"
#include "experiments/cli.h"
#include "experiments/trainer.h"

namespace nns::exp {

Command add_eval_command(CLI::App& root) {
  struct Args {
    EngineArgs engines;
    std::string weights, dataset, data_dir, arch, device = "cpu", split = "test";
    int batch = 256, threads = 0;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand("eval", "Evaluate a weights file on a dataset");
  sub->add_option("--weights", a->weights, "Weights (.safetensors written by nnsplitter or "
                                           "tools/torch_to_safetensors.py, or an ONNX model)")
      ->required();
  sub->add_option("--dataset", a->dataset, "Dataset name")->required();
  sub->add_option("--data-dir", a->data_dir, "Folder holding the dataset files");
  add_arch_option(sub, a->arch);
  sub->add_option("--split", a->split, "test or train")
      ->check(CLI::IsMember({"test", "train"}))->capture_default_str();
  sub->add_option("--batch", a->batch, "Batch size")->capture_default_str();
  sub->add_option("--device", a->device, "cpu, cuda or auto")->capture_default_str();
  sub->add_option("--threads", a->threads, "CPU threads (default: the CPUs this process may use)");
  add_engine_options(sub, a->engines);
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    set_threads(a->threads);
    Device dev = require_device(a->device);
    apply_engines(a->engines, dev);
    auto info = require_dataset_info(a->dataset);
    if (a->batch < 1) throw UsageError("--batch must be at least 1");
    auto model = load_weights(a->weights, a->arch, a->dataset);
    const auto& s = model->spec();
    const int pad_to = require_model_fits(s, a->weights, info, a->dataset);
    model->to(dev);
    auto splits = data::load_dataset(a->dataset, a->data_dir);
    const data::Dataset& d = a->split == "test" ? splits.test : splits.train;
    EvalResult r = evaluate(*model, d, data::normalization_for(a->dataset), a->batch, pad_to,
                            false, true);
    if (a->json) {
      nlohmann::json j;
      j["weights"] = a->weights;
      j["dataset"] = a->dataset;
      j["split"] = a->split;
      j["accuracy"] = r.accuracy();
      j["correct"] = r.correct;
      j["total"] = r.total;
      j["loss"] = r.loss;
      nlohmann::json pc = nlohmann::json::array();
      for (size_t k = 0; k < r.class_total.size(); ++k)
        pc.push_back(r.class_total[k] ? double(r.class_correct[k]) / double(r.class_total[k]) : 0.0);
      j["per_class_accuracy"] = pc;
      print_json(j);
    } else {
      std::printf("%s on %s/%s: accuracy %.2f%% (%lld/%lld), loss %.4f\n", s.arch.c_str(),
                  a->dataset.c_str(), a->split.c_str(), 100 * r.accuracy(), (long long)r.correct,
                  (long long)r.total, r.loss);
      std::printf("per class:");
      for (size_t k = 0; k < r.class_total.size(); ++k)
        std::printf(" %zu:%.1f%%", k,
                    r.class_total[k] ? 100.0 * r.class_correct[k] / r.class_total[k] : 0.0);
      std::printf("\n");
    }
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
