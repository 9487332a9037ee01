// `nnsplitter protect`: obfuscate a trained model; write the obfuscated model, its secrets and
// the search trajectory.
#include <cstdio>

#include "core/io/model_io.h"
#include "core/io/signal_guard.h"
#include "core/splitter/secrets.h"
#include "experiments/cli.h"
#include "experiments/protect.h"

namespace nns::exp {

Command add_protect_command(CLI::App& root) {
  struct Args {
    EngineArgs engines;
    std::string weights, dataset, data_dir, out, config, arch, device = "cpu", seal_key;
    std::vector<std::string> sets;
    uint64_t seed = 0;
    int threads = 0;
    bool json = false, resume = false, print_config = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand(
      "protect", "Obfuscate a trained model (NNSplitter): write DIR/obfuscated.safetensors "
                 "(and DIR/obfuscated.onnx for an ONNX model), DIR/secrets.safetensors and "
                 "DIR/trajectory.json");
  sub->add_option("--weights", a->weights, "Trained weights (.safetensors or .onnx)")->required();
  sub->add_option("--dataset", a->dataset, "Dataset the model was trained on")->required();
  sub->add_option("--data-dir", a->data_dir, "Folder holding the dataset files");
  add_arch_option(sub, a->arch);
  sub->add_option("--out", a->out, "Output folder")->required();
  sub->add_option("--config", a->config, "YAML file with splitter: and controller: blocks "
                                         "(see docs/config-reference.md)");
  sub->add_option("--set", a->sets, "Override a key, e.g. --set splitter.k=2 (repeatable)");
  sub->add_option("--seed", a->seed, "Seed of the search")->capture_default_str();
  sub->add_option("--seal-key", a->seal_key, "Seal the secrets with this key file (nnsplitter keygen)");
  sub->add_option("--device", a->device, "cpu, cuda or auto")->capture_default_str();
  sub->add_option("--threads", a->threads, "CPU threads (default: the CPUs this process may use)");
  sub->add_flag("--resume", a->resume, "Continue an interrupted search in --out");
  sub->add_flag("--print-config", a->print_config, "Print the effective configuration and exit");
  add_engine_options(sub, a->engines);
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    namespace fs = std::filesystem;
    {
      std::vector<PathOption> outs;
      for (auto name : {"obfuscated.safetensors", "obfuscated.onnx", "secrets.safetensors",
                        "trajectory.json", "search_state.safetensors", "protect_settings.json"})
        outs.push_back({"--out", (fs::path(a->out) / name).string()});
      refuse_overwriting_inputs(outs, {{"--weights", a->weights},
                                       {"--config", a->config},
                                       {"--seal-key", a->seal_key}});
    }
    static const Schema schema = method_schema();
    Config cfg = Config::load(schema, a->config, a->sets);
    if (a->print_config) {
      std::fputs(cfg.effective_yaml().c_str(), stdout);
      return kExitOk;
    }
    set_threads(a->threads);
    Device dev = require_device(a->device);
    apply_engines(a->engines, dev);
    auto info = require_dataset_info(a->dataset);
    std::vector<uint8_t> key;
    if (!a->seal_key.empty()) key = splitter::read_key(a->seal_key);
    std::map<std::string, std::string> meta;
    auto model = load_weights(a->weights, a->arch, a->dataset, &meta);
    const auto& s = model->spec();
    if (s.in_channels != info.channels || s.num_classes != info.num_classes)
      throw UsageError(a->weights + ": model " + s.arch + " does not fit dataset " + a->dataset);
    // An existing result in --out is checked by protect() against the recorded settings.
    model->to(dev);
    auto splits = data::load_dataset(a->dataset, a->data_dir);
    ProtectInputs in;
    in.model = model.get();
    in.train = &splits.train;
    in.test = &splits.test;
    in.norm = data::normalization_for(a->dataset);
    in.pad_to = s.input_size > info.height ? s.input_size : 0;
    in.dataset_name = a->dataset;
    in.out_dir = a->out;
    in.seal_key = key;
    in.seed = a->seed;
    in.resume = a->resume;
    in.weights_metadata = meta;
    io::SignalGuard signals;
    in.stop_flag = signals.flag();
    ProtectResult r = protect(in, cfg);
    if (r.interrupted) {
      std::fprintf(stderr, "interrupted after %d episodes; rerun with --resume to continue\n",
                   r.episodes);
      return kExitFailure;
    }
    std::fprintf(stderr,
                 "original %.2f%% -> obfuscated %.2f%% -> restored %.2f%% (%s); %lld of %lld "
                 "weights changed (%.4f%%); %d episodes in %.1f s\nwrote %s, %s, %s\n",
                 100 * r.original_accuracy, 100 * r.obfuscated_accuracy, 100 * r.restored_accuracy,
                 r.restored_bit_exact ? "bit-exact" : "NOT bit-exact",
                 (long long)r.obfuscated_weights, (long long)r.total_weights,
                 100.0 * double(r.obfuscated_weights) / double(r.total_weights), r.episodes,
                 r.seconds, r.obfuscated_path.c_str(), r.secrets_path.c_str(),
                 r.trajectory_path.c_str());
    if (a->json) print_json(r.to_json());
    return r.restored_bit_exact ? kExitOk : kExitFailure;
  };
  return c;
}

}  // namespace nns::exp
