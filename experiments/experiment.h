// One experiment, end to end (`nnsplitter run CONFIG`): victim (train or load; trained victims
// are cached by a hash of their training config) -> protect -> evaluate -> attacks -> one HDF5
// file per run, written under a temporary name and renamed when complete.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "experiments/config.h"

namespace nns::exp {

// Every key of an experiment config (seed, device, dataset, model, victim, splitter,
// controller, attacks, output, slurm), with defaults and docs. The `sweep:` block is not part
// of it: it is read by the sweep driver (experiments/sweep.h) and names keys of this schema.
const Schema& experiment_schema();

struct RunOptions {
  std::string output_path;  // the final .h5 (written as output_path + ".tmp", then renamed)
  std::string state_dir;    // resumable state (search state, training checkpoint); "" = beside output
  bool resume = true;       // continue from state_dir when it holds state of the same config
  bool progress = true;
  const std::atomic<bool>* stop_flag = nullptr;  // set by SIGTERM/SIGUSR1/SIGINT handlers
  std::string cache_dir;    // trained-victim cache (default: <output.dir>/victims)
  int sweep_index = -1;     // recorded in the result file (-1 outside sweeps)
};

struct RunSummary {
  std::string output_path;
  bool interrupted = false;
  double original_accuracy = 0, obfuscated_accuracy = 0, restored_accuracy = 0;
  int64_t obfuscated_weights = 0, total_weights = 0;
  // attack name -> headline accuracy (e.g. "norm_clip k=2" -> 0.11)
  std::vector<std::pair<std::string, double>> attacks;
  double seconds = 0;
};

// Runs one experiment described by cfg. Throws ConfigError/UsageError for configuration
// problems (exit 2), std::runtime_error for failures (exit 1). On interruption returns with
// interrupted = true after saving resumable state (no result file is written).
RunSummary run_experiment(const Config& cfg, const RunOptions& opt);

// The summary table printed on stdout after a run.
std::string summary_table(const RunSummary& s);

}  // namespace nns::exp
