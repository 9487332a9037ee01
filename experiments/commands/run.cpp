// `nnsplitter run CONFIG`: one experiment end to end (victim -> protect -> evaluate -> attacks),
// one HDF5 result file. SIGINT/SIGTERM/SIGUSR1 stop it at a safe point with resumable state;
// running the same command again resumes.
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>

#include "core/io/signal_guard.h"
#include "experiments/commands/driver_commands.h"
#include "experiments/experiment.h"
#include "experiments/sweep.h"

namespace nns::exp {

namespace {

// Asked only after Config::load refused the file; read the same bounded way (a folder, a
// device or an oversized file is not read here either: its error from Config::load stands).
bool has_sweep_block(const std::string& file) {
  try {
    YAML::Node root = YAML::Load(read_config_file(file, "config file"));
    return root.IsMap() && root["sweep"].IsDefined();
  } catch (const YAML::Exception&) {
    return false;
  } catch (const ConfigError&) {
    return false;
  }
}

nlohmann::json run_json(const RunSummary& r) {
  nlohmann::json attacks = nlohmann::json::object();
  for (const auto& [name, acc] : r.attacks) attacks[name] = acc;
  return {{"output", r.output_path},
          {"interrupted", r.interrupted},
          {"original_accuracy", r.original_accuracy},
          {"obfuscated_accuracy", r.obfuscated_accuracy},
          {"restored_accuracy", r.restored_accuracy},
          {"obfuscated_weights", r.obfuscated_weights},
          {"total_weights", r.total_weights},
          {"attacks", attacks},
          {"seconds", r.seconds}};
}

}  // namespace

Command add_run_command(CLI::App& root) {
  struct Args {
    std::string config, out;
    std::vector<std::string> sets;
    bool json = false, no_resume = false, print_config = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand(
      "run", "Run one experiment from a YAML config (victim, protect, evaluate, attacks); write "
             "one HDF5 result file (docs/results-format.md)");
  sub->add_option("config", a->config, "Experiment config (YAML; see docs/config-reference.md)")
      ->required();
  sub->add_option("--set", a->sets, "Override a key, e.g. --set splitter.k=2 (repeatable)")
      ->allow_extra_args(false);
  sub->add_option("--out", a->out, "Result file (default: <output.dir>/<name>/run.h5)");
  sub->add_flag("--no-resume", a->no_resume,
                "Start over instead of continuing the saved state of an interrupted run");
  sub->add_flag("--print-config", a->print_config, "Print the effective configuration and exit");
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    refuse_overwriting_inputs({{"--out", a->out}}, {{"config", a->config}});
    Config cfg;
    try {
      cfg = Config::load(experiment_schema(), a->config, a->sets);
    } catch (const ConfigError&) {
      if (has_sweep_block(a->config))
        throw ConfigError(a->config + ": holds a sweep: block; run it with `nnsplitter sweep " +
                          a->config + "` (or remove the block)");
      throw;
    }
    if (a->print_config) {
      std::fputs(cfg.effective_yaml().c_str(), stdout);
      return kExitOk;
    }
    std::filesystem::path out =
        a->out.empty() ? std::filesystem::path(cfg.get_string("output.dir")) /
                             cfg.get_string("name") / "run.h5"
                       : std::filesystem::path(a->out);
    refuse_overwriting_inputs({{"--out", out.string()}}, {{"config", a->config}});
    if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());

    io::SignalGuard signals;
    RunOptions opt;
    opt.output_path = out.string();
    opt.resume = !a->no_resume;
    opt.stop_flag = signals.flag();
    RunSummary r = run_experiment(cfg, opt);
    if (r.interrupted) {
      std::fprintf(stderr,
                   "interrupted%s: resumable state saved in %s; run the same command again to "
                   "resume\n",
                   signals.last_signal() ? (" by signal " + std::to_string(signals.last_signal())).c_str()
                                         : "",
                   std::filesystem::path(out).replace_extension("").c_str());
      if (a->json) print_json(run_json(r));
      return kExitFailure;
    }
    if (a->json)
      print_json(run_json(r));
    else
      std::fputs(summary_table(r).c_str(), stdout);
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
