// `nnsplitter sweep FILE`: the runs of a sweep file (experiment YAML + `sweep:` block).
//   --list                 the numbered runs and whether each is complete
//   --task N               run one (Slurm array tasks); --array-task takes N from
//                          $SLURM_ARRAY_TASK_ID
//   --slurm [--submit]     write DIR/sweep.sbatch and DIR/collect.sbatch; submit them
//   (none of these)        run every run locally in order, skipping complete ones, then collect
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/io/atomic_file.h"
#include "core/io/signal_guard.h"
#include "experiments/commands/driver_commands.h"
#include "experiments/experiment.h"
#include "experiments/h5file.h"
#include "experiments/sweep.h"

namespace nns::exp {

namespace fs = std::filesystem;

namespace {

enum class Outcome { Done, Skipped, Interrupted };

std::string interrupted_message(const io::SignalGuard& sig) {
  return sig.last_signal() ? " by signal " + std::to_string(sig.last_signal()) : std::string();
}

// Runs one run of the sweep unless its result is already complete.
Outcome run_one(const Sweep& s, size_t index, const io::SignalGuard& sig, RunSummary* out) {
  const fs::path path = s.run_path(index);
  const std::string label = s.run(index).overrides_text();
  if (h5::is_complete_result(path.string())) {
    std::fprintf(stderr, "sweep: run %zu/%zu (%s) is complete: %s\n", index, s.size(),
                 label.c_str(), path.c_str());
    return Outcome::Skipped;
  }
  std::fprintf(stderr, "sweep: run %zu/%zu (%s) -> %s\n", index, s.size(), label.c_str(),
               path.c_str());
  Config cfg = s.config(index);
  RunOptions opt;
  opt.output_path = path.string();
  opt.sweep_index = int(index);
  opt.stop_flag = sig.flag();
  RunSummary r = run_experiment(cfg, opt);
  if (out) *out = r;
  return r.interrupted ? Outcome::Interrupted : Outcome::Done;
}

size_t task_from_env() {
  const char* v = std::getenv("SLURM_ARRAY_TASK_ID");
  if (!v || !*v)
    throw UsageError("--array-task: SLURM_ARRAY_TASK_ID is not set (not inside a Slurm array "
                     "job); pass --task N");
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (errno || *end || *v == '-')
    throw UsageError(std::string("--array-task: SLURM_ARRAY_TASK_ID='") + v +
                     "' is not a task number");
  return size_t(n);
}

int list_runs(const Sweep& s, bool json) {
  if (!json) {
    std::fputs(sweep_listing(s).c_str(), stdout);
    return kExitOk;
  }
  nlohmann::json runs = nlohmann::json::array();
  for (size_t i = 0; i < s.size(); ++i) {
    nlohmann::json ov = nlohmann::json::object();
    for (const auto& [k, v] : s.run(i).overrides) ov[k] = v;
    RunStatus st = run_status(s, i);
    runs.push_back({{"index", i},
                    {"overrides", ov},
                    {"file", s.run_path(i).string()},
                    {"status", run_status_name(st)},
                    {"complete", st == RunStatus::Complete}});
  }
  nlohmann::json keys = nlohmann::json::array();
  for (const auto& k : s.keys()) keys.push_back({{"key", k.key}, {"values", k.values}});
  print_json({{"file", s.file()}, {"dir", s.dir().string()}, {"keys", keys}, {"runs", runs}});
  return kExitOk;
}

int run_task(const Sweep& s, size_t index, bool json) {
  if (index >= s.size())
    throw UsageError("task " + std::to_string(index) + " does not exist: the sweep has " +
                     std::to_string(s.size()) + " runs (0.." + std::to_string(s.size() - 1) + ")");
  s.write_files();
  io::SignalGuard sig;
  RunSummary r;
  Outcome o = run_one(s, index, sig, &r);
  nlohmann::json j = {{"index", index}, {"file", s.run_path(index).string()}};
  if (o == Outcome::Interrupted) {
    std::fprintf(stderr,
                 "sweep: run %zu interrupted%s; its state is saved: run the same command (or "
                 "resubmit the array) to resume\n",
                 index, interrupted_message(sig).c_str());
    if (json) print_json({{"index", index}, {"status", "interrupted"}});
    return kExitFailure;
  }
  if (json) {
    j["status"] = o == Outcome::Skipped ? "complete" : "done";
    if (o == Outcome::Done) {
      j["original_accuracy"] = r.original_accuracy;
      j["obfuscated_accuracy"] = r.obfuscated_accuracy;
      j["restored_accuracy"] = r.restored_accuracy;
      j["obfuscated_weights"] = r.obfuscated_weights;
      j["seconds"] = r.seconds;
    }
    print_json(j);
  } else if (o == Outcome::Done) {
    std::fputs(summary_table(r).c_str(), stdout);
  }
  return kExitOk;
}

int run_all(const Sweep& s, bool json) {
  s.validate_all();
  s.write_files();
  io::SignalGuard sig;
  std::vector<size_t> failed;
  for (size_t i = 0; i < s.size(); ++i) {
    if (sig.stopped()) {
      std::fprintf(stderr, "sweep: stopped%s before run %zu; run the same command to resume\n",
                   interrupted_message(sig).c_str(), i);
      return kExitFailure;
    }
    try {
      if (run_one(s, i, sig, nullptr) == Outcome::Interrupted) {
        std::fprintf(stderr,
                     "sweep: run %zu interrupted%s; its state is saved: run the same command to "
                     "resume (complete runs are skipped)\n",
                     i, interrupted_message(sig).c_str());
        return kExitFailure;
      }
    } catch (const UsageError&) {
      throw;  // a configuration problem affects every run: stop
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sweep: run %zu failed: %s\n", i, e.what());
      failed.push_back(i);
    }
  }
  Summary sm = read_summary(s.dir());
  if (!sm.rows.empty()) {
    write_summary(s.dir(), sm);
    std::fprintf(stderr, "sweep: wrote %s and %s\n", (s.dir() / "summary.h5").c_str(),
                 (s.dir() / "summary.csv").c_str());
  }
  if (json) {
    nlohmann::json j = summary_json(sm);
    j["dir"] = s.dir().string();
    j["failed"] = failed;
    print_json(j);
  } else {
    std::fputs(summary_text(sm).c_str(), stdout);
  }
  if (!failed.empty()) {
    std::string list;
    for (auto f : failed) list += (list.empty() ? "" : ", ") + std::to_string(f);
    std::fprintf(stderr, "sweep: %zu run(s) failed (%s); run the same command to retry them\n",
                 failed.size(), list.c_str());
    return kExitFailure;
  }
  return kExitOk;
}

int slurm(const Sweep& s, bool submit, bool json) {
  s.validate_all();
  s.write_files();
  const fs::path dir = fs::absolute(s.dir()).lexically_normal();
  fs::create_directories(dir / "logs");
  SlurmScripts sc = slurm_scripts(s, self_executable(), fs::current_path().string());
  const fs::path array = dir / "sweep.sbatch", collect = dir / "collect.sbatch";
  io::write_file_atomically(array.string(), sc.array, {0755});  // executable scripts
  io::write_file_atomically(collect.string(), sc.collect, {0755});
  const int64_t max_parallel = s.base().get_int("slurm.max_parallel");
  std::fprintf(stderr, "sweep: wrote %s (%zu array tasks, at most %lld at once) and %s\n",
               array.c_str(), s.size(), (long long)max_parallel, collect.c_str());
  nlohmann::json j = {{"dir", dir.string()},
                      {"runs", s.size()},
                      {"array_script", array.string()},
                      {"collect_script", collect.string()}};
  if (!submit) {
    if (json) {
      print_json(j);
    } else {
      std::printf("%s\n%s\nsubmit with:\n  jid=$(sbatch --parsable %s) && sbatch "
                  "--dependency=afterok:$jid --kill-on-invalid-dep=yes %s\n",
                  array.c_str(), collect.c_str(), shell_quote(array.string()).c_str(),
                  shell_quote(collect.string()).c_str());
    }
    return kExitOk;
  }
  auto submit_one = [&](const std::vector<std::string>& argv) {
    std::pair<int, std::string> r;
    try {
      r = run_program(argv);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error(std::string(e.what()) +
                               ": Slurm's client commands are needed to submit (on this machine "
                               "tools/slurm_local.sh starts a single-node cluster); the scripts "
                               "are written, submit " + array.string() + " by hand elsewhere");
    }
    if (r.first != 0)
      throw std::runtime_error(
          "sbatch failed (exit " + std::to_string(r.first) + ") for " + argv.back() +
          (r.second.empty() ? "" : ": " + r.second) +
          (std::getenv("SLURM_CONF") ? "" : " (SLURM_CONF is not set: export it when the "
                                            "cluster's slurm.conf is not in the default place)"));
    return parse_sbatch_job_id(r.second);
  };
  const std::string array_id = submit_one(sbatch_array_command(array.string()));
  std::string collect_id;
  try {
    collect_id = submit_one(sbatch_collect_command(collect.string(), array_id));
  } catch (const std::exception& e) {
    throw std::runtime_error("array job " + array_id + " was submitted, but the collect job was "
                             "not: " + std::string(e.what()));
  }
  if (json) {
    j["array_job"] = array_id;
    j["collect_job"] = collect_id;
    print_json(j);
  } else {
    std::printf("array job %s: %zu tasks, at most %lld at once (logs in %s)\n", array_id.c_str(),
                s.size(), (long long)max_parallel, (dir / "logs").c_str());
    std::printf("collect job %s: runs after job %s succeeds, writes %s\n", collect_id.c_str(),
                array_id.c_str(), (dir / "summary.h5").c_str());
  }
  return kExitOk;
}

}  // namespace

Command add_sweep_command(CLI::App& root) {
  struct Args {
    std::string file;
    std::vector<std::string> sets;
    bool list = false, array_task = false, slurm = false, submit = false, json = false;
    int64_t task = -1;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand(
      "sweep", "Run the Cartesian product of a sweep file's `sweep:` block: locally (skipping "
               "complete runs), one task, or as a Slurm array job");
  sub->add_option("file", a->file, "Sweep file: an experiment config plus a sweep: block, e.g. "
                                   "sweep: {seed: [0, 1], splitter.k: [1, 2]}")
      ->required();
  sub->add_option("--set", a->sets, "Override a key in every run (repeatable; not a swept key)")
      ->allow_extra_args(false);
  auto* list = sub->add_flag("--list", a->list, "List the runs (index, complete or not, overrides)");
  auto* task = sub->add_option("--task", a->task, "Run only run N (0-based)")
                   ->check(CLI::NonNegativeNumber);
  auto* array_task = sub->add_flag("--array-task", a->array_task,
                                   "Run the run given by $SLURM_ARRAY_TASK_ID (when --task is "
                                   "not given)");
  auto* slurm_opt = sub->add_flag("--slurm", a->slurm,
                                  "Write DIR/sweep.sbatch (an array job) and DIR/collect.sbatch");
  auto* submit = sub->add_flag("--submit", a->submit,
                               "With --slurm: submit the array with sbatch, then collect after it");
  sub->add_flag("--json", a->json, "Print JSON on stdout");
  list->excludes(task)->excludes(array_task)->excludes(slurm_opt)->excludes(submit);
  slurm_opt->excludes(task)->excludes(array_task);
  submit->excludes(task)->excludes(array_task);
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    Sweep s = Sweep::load(experiment_schema(), a->file, a->sets);
    if (a->list) return list_runs(s, a->json);
    if (a->task >= 0) return run_task(s, size_t(a->task), a->json);
    if (a->array_task) return run_task(s, task_from_env(), a->json);
    if (a->slurm || a->submit) return slurm(s, a->submit, a->json);
    return run_all(s, a->json);
  };
  return c;
}

}  // namespace nns::exp
