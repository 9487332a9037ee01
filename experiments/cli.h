// Shared pieces of the `nnsplitter` command line: error kinds with their exit codes, JSON
// output, and helpers used by several subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/models/zoo.h"
#include "datasets/datasets.h"

namespace nns::exp {

// Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
constexpr int kExitOk = 0, kExitFailure = 1, kExitUsage = 2;

// A usage or configuration error (exit 2), as opposed to a runtime failure (exit 1).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One subcommand: its CLI11 parser and what to run once parsed.
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_train_command(CLI::App& root);
Command add_eval_command(CLI::App& root);
Command add_info_command(CLI::App& root);
Command add_bench_command(CLI::App& root);
Command add_protect_command(CLI::App& root);

// Prints a JSON document on stdout (one line).
void print_json(const nlohmann::json& j);
// Validates a model name (UsageError listing known ones otherwise).
void require_model_name(const std::string& arch);
// Validates a dataset name (UsageError listing known ones otherwise) and returns its info.
data::DatasetInfo require_dataset_info(const std::string& name);
// The model spec for an architecture trained on a dataset.
models::ModelSpec spec_for(const std::string& arch, const data::DatasetInfo& info,
                           float width_mult = 1.0f);
// Sets OpenMP/OpenBLAS threads (0 = leave the default).
void set_threads(int threads);
int current_threads();
// The version string, e.g. "0.1.0".
const char* version();

}  // namespace nns::exp
