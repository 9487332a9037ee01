// Sweeps: an experiment YAML plus a `sweep:` block that lists values for dotted keys of
// experiment_schema(). The runs are the Cartesian product of those lists in a stable order
// (keys in the order written in the file, the last key varying fastest), numbered 0..N-1 so
// that a Slurm array task id selects one. Each run is the base file (without `sweep:`) plus
// `--set key=value` overrides, validated by Config like any other config.
//
// Layout of a sweep folder, DIR = <output.dir>/<name> of the base config:
//   DIR/run_0000.h5 ...   one result file per run (docs/results-format.md)
//   DIR/run_0000/ ...     resumable state of an unfinished run
//   DIR/sweep.yaml        a copy of the sweep file
//   DIR/runs.tsv          the numbering: `index` then one column per swept key (YAML text)
//   DIR/sweep.sbatch, DIR/collect.sbatch, DIR/logs/   with `nnsplitter sweep --slurm`
//   DIR/summary.h5, DIR/summary.csv                    written by `nnsplitter collect DIR`
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "experiments/config.h"

namespace nns::exp {

// One swept key: its dotted path, its values as YAML text (flow style), the file line.
struct SweepKey {
  std::string key;
  std::vector<std::string> values;
  int line = 0;
};

// One run of a sweep.
struct SweepRun {
  size_t index = 0;
  std::vector<std::pair<std::string, std::string>> overrides;  // swept key -> YAML text
  std::vector<std::string> sets() const;                       // "key=value"
  std::string overrides_text() const;                          // "seed=0 splitter.k=2"
};

class Sweep {
 public:
  // Reads `file`, removes and validates its `sweep:` block (ConfigError with file:line for an
  // unknown key, a value that is not a non-empty list, or a value the key does not accept) and
  // validates the base config with `sets` applied. `sets` apply to every run and must not name
  // a swept key. A file without a `sweep:` block is a sweep of one run.
  static Sweep load(const Schema& schema, const std::string& file,
                    const std::vector<std::string>& sets = {});

  const std::string& file() const { return file_; }        // absolute path of the sweep file
  const std::string& text() const { return text_; }        // the sweep file as read
  const std::string& base_yaml() const { return base_yaml_; }  // without the sweep block
  const std::vector<std::string>& sets() const { return sets_; }
  const std::vector<SweepKey>& keys() const { return keys_; }
  const Config& base() const { return base_; }  // base config with `sets`, no sweep values

  size_t size() const { return size_; }
  SweepRun run(size_t index) const;  // std::out_of_range past size()
  std::vector<SweepRun> runs() const;
  // The config of run `index` (Config::load_text of the base with the run's overrides).
  Config config(size_t index) const;
  // Loads every run's config (what `sweep` does before running or submitting anything).
  void validate_all() const;

  std::filesystem::path dir() const;  // <output.dir>/<name>, as configured (may be relative)
  std::filesystem::path run_path(size_t index) const;  // dir()/run_NNNN.h5
  static std::string run_file_name(size_t index);      // run_NNNN.h5

  // The text of DIR/runs.tsv.
  std::string runs_tsv() const;
  // Creates dir() and writes DIR/sweep.yaml and DIR/runs.tsv (atomically). Throws UsageError
  // when DIR/runs.tsv exists with a different numbering (the folder holds another sweep).
  void write_files() const;

 private:
  const Schema* schema_ = nullptr;
  std::string file_, text_, base_yaml_;
  std::vector<std::string> sets_;
  std::vector<SweepKey> keys_;
  size_t size_ = 1;
  Config base_;
};

// ---- run status (the resume logic of local sweeps and `--list`)

enum class RunStatus {
  Pending,     // nothing there yet
  Incomplete,  // a partial file or resumable state exists
  Complete,    // h5::is_complete_result(run_path)
};
RunStatus run_status(const Sweep& s, size_t index);
const char* run_status_name(RunStatus st);

// The `sweep --list` table: one line per run (index, status, overrides), then a total line.
std::string sweep_listing(const Sweep& s);

// ---- the sweep folder's numbering (DIR/runs.tsv)

struct RunsTable {
  std::vector<std::string> keys;                  // swept keys, in column order
  std::vector<int64_t> index;                     // one per row
  std::vector<std::vector<std::string>> values;   // [row][key]
};
RunsTable read_runs_tsv(const std::filesystem::path& file);

// ---- Slurm

struct SlurmScripts {
  std::string array;    // DIR/sweep.sbatch
  std::string collect;  // DIR/collect.sbatch
};
// The two batch scripts. `binary`: absolute path of nnsplitter; `workdir`: the folder the
// tasks run in (relative paths of the config resolve against it).
SlurmScripts slurm_scripts(const Sweep& s, const std::string& binary, const std::string& workdir);
// Command lines that submit them: the array, then collect once every task succeeded.
std::vector<std::string> sbatch_array_command(const std::string& script);
std::vector<std::string> sbatch_collect_command(const std::string& script,
                                                const std::string& array_job_id);
// Runs argv[0] (searched on PATH), returns its exit status and stdout. Throws
// std::runtime_error when the program cannot be found or started.
std::pair<int, std::string> run_program(const std::vector<std::string>& argv);
// `sbatch --parsable` output ("123" or "123;cluster") -> "123".
std::string parse_sbatch_job_id(const std::string& out);

// ---- collect

struct SummaryRow {
  int64_t index = 0;
  std::string run_name;
  std::vector<std::string> swept;  // values of the swept keys, as in runs.tsv
  double original_accuracy = 0, obfuscated_accuracy = 0, restored_accuracy = 0;
  int64_t obfuscated_weights = 0;
  double obfuscated_fraction = 0, at_bounds_fraction = 0, ks_distance = 0, seconds = 0;
  // Attack columns (experiments/attack_suite.h, attack_columns): name -> value.
  std::map<std::string, double> attacks;
};
struct Summary {
  std::vector<std::string> keys;  // swept keys
  std::vector<SummaryRow> rows;   // complete runs, by index
  std::vector<int64_t> missing;   // indexes without a complete file
  std::vector<std::string> attack_keys;  // union of the rows' attack columns, first-seen order
};
// Reads DIR/runs.tsv and every complete DIR/run_NNNN.h5.
Summary read_summary(const std::filesystem::path& dir);
// Writes DIR/summary.h5 and DIR/summary.csv (each atomically).
void write_summary(const std::filesystem::path& dir, const Summary& s);
std::string summary_csv(const Summary& s);
// A table for the terminal (index, swept keys, accuracies in %, weights, the attack columns,
// seconds). When `seed` is among the swept keys, a second table follows: one row per setting of
// the other swept keys, every number as mean ± sd over the seeds.
std::string summary_text(const Summary& s);
nlohmann::json summary_json(const Summary& s);

// ---- helpers shared by run / sweep / collect

// Absolute path of the running executable (/proc/self/exe).
std::string self_executable();
// Quotes a word for sh: abc -> abc, a b -> 'a b', it's -> 'it'\''s'.
std::string shell_quote(const std::string& s);

}  // namespace nns::exp
