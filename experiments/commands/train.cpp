// `nnsplitter train`: trains a zoo model on a dataset and writes its weights.
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "core/io/model_io.h"
#include "core/io/signal_guard.h"
#include "experiments/cli.h"
#include "experiments/trainer.h"

namespace nns::exp {

namespace {
std::string join_floats(const std::vector<float>& v) {
  std::ostringstream o;
  for (size_t i = 0; i < v.size(); ++i) o << (i ? "," : "") << v[i];
  return o.str();
}
}  // namespace

Command add_train_command(CLI::App& root) {
  struct Args {
    EngineArgs engines;
    std::string model, weights, dataset, data_dir, out, device = "cpu", augment = "auto";
    TrainOptions t;
    int threads = 0;
    float width_mult = 1.0f;
    bool resume = false, json = false, no_nesterov = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand(
      "train", "Train a zoo model on a dataset (or fine-tune given weights); write safetensors "
               "(ONNX for an ONNX model)");
  auto* model_opt = sub->add_option("--model", a->model, "Architecture (lenet5, resnet20, resnet18, "
                                                         "resnet34, vgg11_bn..vgg19_bn, mobilenet_v2)");
  auto* weights_opt = sub->add_option(
      "--weights", a->weights,
      "Start from these weights instead of a fresh --model (fine-tuning): .safetensors, or an "
      ".onnx model (then --out FILE.onnx writes the same graph with the trained weights)");
  model_opt->excludes(weights_opt);
  sub->add_option("--dataset", a->dataset, "fashion-mnist, mnist, cifar10, cifar100, synthetic")
      ->required();
  sub->add_option("--data-dir", a->data_dir, "Folder holding the dataset files (default: search "
                                             "$NNS_DATA_DIR, /usr/share/datasets, ./data)");
  sub->add_option("--out", a->out, "Output weights file (.safetensors)")->required();
  sub->add_option("--epochs", a->t.epochs, "Training epochs")->capture_default_str();
  sub->add_option("--batch", a->t.batch, "Batch size")->capture_default_str();
  sub->add_option("--lr", a->t.lr, "Base learning rate")->capture_default_str();
  sub->add_option("--optimizer", a->t.optimizer, "sgd or adam")
      ->check(CLI::IsMember({"sgd", "adam"}))->capture_default_str();
  sub->add_option("--schedule", a->t.schedule, "cosine, step or constant")
      ->check(CLI::IsMember({"cosine", "step", "constant"}))->capture_default_str();
  sub->add_option("--momentum", a->t.momentum, "SGD momentum")->capture_default_str();
  sub->add_option("--weight-decay", a->t.weight_decay, "L2 weight decay")->capture_default_str();
  sub->add_flag("--no-nesterov", a->no_nesterov, "Plain momentum instead of Nesterov");
  sub->add_option("--seed", a->t.seed, "Seed for init, shuffling and augmentation")
      ->capture_default_str();
  sub->add_option("--augment", a->augment,
                  "Random crop + flip: auto (on for CIFAR), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}))->capture_default_str();
  sub->add_option("--width-mult", a->width_mult, "Channel multiplier (1 = published widths)")
      ->capture_default_str();
  sub->add_option("--device", a->device, "cpu, cuda or auto")->capture_default_str();
  sub->add_option("--threads", a->threads, "CPU threads (default: the CPUs this process may use)");
  sub->add_flag("--resume", a->resume,
                "Continue from OUT.ckpt left by an interrupted run with the same settings");
  add_engine_options(sub, a->engines);
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");

  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    set_threads(a->threads);
    Device dev = require_device(a->device);
    apply_engines(a->engines, dev);
    auto info = require_dataset_info(a->dataset);
    if (a->model.empty() == a->weights.empty())
      throw UsageError("give --model (train from scratch) or --weights (fine-tune)");
    std::unique_ptr<models::Model> start;
    std::map<std::string, std::string> start_meta;
    if (!a->weights.empty()) {
      start = load_weights(a->weights, "", a->dataset, &start_meta);
      require_model_fits(start->spec(), a->weights, info, a->dataset);
      refuse_overwriting_inputs({{"--out", a->out}}, {{"--weights", a->weights}});
    }
    auto spec = start ? start->spec() : spec_for(a->model, info, a->width_mult);
    TrainOptions t = a->t;
    t.nesterov = !a->no_nesterov;
    t.pad_to = spec.input_size > info.height ? spec.input_size : 0;
    t.augment = a->augment == "on" || (a->augment == "auto" && a->dataset.rfind("cifar", 0) == 0);
    t.checkpoint = a->out + ".ckpt";
    refuse_overwriting_inputs({{"--out", a->out}, {"--out", t.checkpoint}},
                              {{"--data-dir", a->data_dir}});
    if (std::filesystem::exists(t.checkpoint) && !a->resume)
      throw UsageError("a checkpoint of an interrupted run exists: " + t.checkpoint +
                       " (pass --resume to continue it, or delete it to start over)");
    auto out_dir = std::filesystem::path(a->out).parent_path();
    if (!out_dir.empty() && !std::filesystem::is_directory(out_dir))
      throw UsageError("output folder " + out_dir.string() + " does not exist");

    auto splits = data::load_dataset(a->dataset, a->data_dir);
    auto norm = data::normalization_for(a->dataset);
    auto model = start ? std::move(start) : models::build_model(spec, t.seed);
    model->to(dev);
    std::fprintf(stderr, "train %s on %s (%lld train / %lld test images, %d threads, %s)\n",
                 spec.arch.c_str(), a->dataset.c_str(), (long long)splits.train.size(),
                 (long long)splits.test.size(), current_threads(), device_name(dev));
    TrainResult r;
    {
      io::SignalGuard signals;
      t.stop_flag = signals.flag();
      r = train_model(*model, splits.train, &splits.test, norm, t);
    }
    if (r.interrupted) {
      std::fprintf(stderr,
                   "interrupted: %zu epoch(s) saved in %s; rerun the same command with --resume\n",
                   r.epochs.size(), t.checkpoint.c_str());
      return kExitFailure;
    }
    EvalResult ev = evaluate(*model, splits.test, norm, 256, t.pad_to);
    std::map<std::string, std::string> meta = {
        {"dataset", a->dataset},
        {"norm_mean", join_floats(norm.mean)},
        {"norm_std", join_floats(norm.std)},
        {"data_size", std::to_string(info.height)},
        {"test_accuracy", std::to_string(ev.accuracy())},
        {"test_correct", std::to_string(ev.correct)},
        {"test_total", std::to_string(ev.total)},
        {"train_epochs", std::to_string(t.epochs)},
        {"train_batch", std::to_string(t.batch)},
        {"train_lr", std::to_string(t.lr)},
        {"train_optimizer", t.optimizer},
        {"train_schedule", t.schedule},
        {"train_seed", std::to_string(t.seed)},
        {"train_augment", t.augment ? "crop+flip" : "none"},
        {"train_seconds", std::to_string(r.seconds)},
        {"nnsplitter_version", version()}};
    if (!a->weights.empty()) meta["fine_tuned_from"] = a->weights;
    io::save_model(*model, a->out, meta);
    std::filesystem::remove(t.checkpoint);
    std::fprintf(stderr, "test accuracy %.2f%% (%lld/%lld); wrote %s\n", 100 * ev.accuracy(),
                 (long long)ev.correct, (long long)ev.total, a->out.c_str());
    if (a->json) {
      nlohmann::json j;
      j["model"] = spec.arch;
      j["dataset"] = a->dataset;
      j["out"] = a->out;
      j["accuracy"] = ev.accuracy();
      j["correct"] = ev.correct;
      j["total"] = ev.total;
      j["seconds"] = r.seconds;
      j["parameters"] = model->num_parameters();
      nlohmann::json epochs = nlohmann::json::array();
      for (auto& e : r.epochs)
        epochs.push_back({{"epoch", e.epoch}, {"train_loss", e.train_loss},
                          {"train_accuracy", e.train_accuracy}, {"test_accuracy", e.test_accuracy},
                          {"seconds", e.seconds}, {"images_per_second", e.images_per_second}});
      j["epochs"] = epochs;
      print_json(j);
    }
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
