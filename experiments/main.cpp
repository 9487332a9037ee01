// nnsplitter: one executable, one subcommand per task. Exit 0 ok, 1 runtime failure,
// 2 usage or configuration error.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <iostream>
#include <vector>

#include "core/io/atomic_file.h"
#include "experiments/cli.h"
#include "experiments/commands/attack_command.h"
#include "experiments/commands/driver_commands.h"
#include "experiments/commands/secrets_commands.h"
#include "experiments/threads.h"

int main(int argc, char** argv) {
  using namespace nns::exp;
  // Before anything else: libgomp read its spin setting when it was loaded, so a bounded spin
  // needs a fresh start of the binary (once; experiments/threads.h).
  bounded_spin_reexec(argv);
  set_threads(0);  // the default for every command: the CPUs granted to this process
  // A write past `ulimit -f` then fails with EFBIG, reported naming the file, instead of
  // SIGXFSZ killing the process without a word (core/io/atomic_file.h).
  nns::io::ignore_file_size_signal();
  CLI::App app{"nnsplitter: active protection of trained networks by weight obfuscation "
               "(NNSplitter, ICML 2023)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("nnsplitter ") + version());
  std::vector<Command> commands = {add_train_command(app), add_eval_command(app),
                                   add_info_command(app), add_bench_command(app),
                                   add_protect_command(app),    add_restore_command(app),
                                   add_keygen_command(app),     add_infer_command(app),
                                   add_attack_command(app),     add_run_command(app),
                                   add_sweep_command(app),      add_collect_command(app),
                                   add_config_reference_command(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "nnsplitter: usage error: " << e.what() << "\n"
              << "Run 'nnsplitter --help' or 'nnsplitter <command> --help'.\n";
    return kExitUsage;
  }
  for (auto& c : commands) {
    if (!c.app->parsed()) continue;
    try {
      return c.run();
    } catch (const UsageError& e) {
      std::cerr << "nnsplitter " << c.app->get_name() << ": usage error: " << e.what() << "\n";
      return kExitUsage;
    } catch (const std::exception& e) {
      std::cerr << "nnsplitter " << c.app->get_name() << ": error: " << e.what() << "\n";
      return kExitFailure;
    }
  }
  return kExitUsage;
}
