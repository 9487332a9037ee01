// Shared pieces of the `nnsplitter` command line: error kinds with their exit codes, JSON
// output, and helpers used by several subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <map>
#include <memory>
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
Command add_config_reference_command(CLI::App& root);

// --conv-engine native|cudnn and --gemm-engine native|cublas (CUDA only; the CPU ignores them).
struct EngineArgs {
  std::string conv = "native", gemm = "native";
  std::string cpu;  // --cpu-engine; empty: NNS_CPU_ENGINE or auto
};
void add_engine_options(CLI::App* sub, EngineArgs& e);
// Applies the engine choice; UsageError when cudnn/cublas is asked for on a build without CUDA
// or the CPU engine is unknown.
void apply_engines(const EngineArgs& e, Device dev);

// Prints a JSON document on stdout (one line).
void print_json(const nlohmann::json& j);
// Validates a model name (UsageError listing known ones otherwise).
void require_model_name(const std::string& arch);
// Validates a dataset name (UsageError listing known ones otherwise) and returns its info.
data::DatasetInfo require_dataset_info(const std::string& name);
// Checks that a loaded model (from file `weights`) takes the images and classes of `dataset`
// (UsageError naming both otherwise) and returns the size the images are padded to (0: none).
int require_model_fits(const models::ModelSpec& s, const std::string& weights,
                       const data::DatasetInfo& info, const std::string& dataset);
// The model spec for an architecture trained on a dataset.
models::ModelSpec spec_for(const std::string& arch, const data::DatasetInfo& info,
                           float width_mult = 1.0f);
// --arch NAME on a command that reads weights: the architecture of a weights file that lacks
// nnsplitter's metadata (a plain PyTorch state_dict written by safetensors.torch.save_file).
void add_arch_option(CLI::App* sub, std::string& arch);
// Reads a weights file. Without --arch (arch empty): io::load_model (the file's metadata says
// which model it is). With --arch: the model is spec_for(arch, dataset) (channels, input size and
// classes from --dataset, which is then required; UsageError otherwise) when the file's metadata
// names no arch, or the one its metadata describes when it names the same arch; a different arch
// in the metadata is a UsageError naming both. The state must fit the model exactly (the first
// missing, unexpected or wrongly shaped key is named with both shapes: io::load_state).
// An ONNX file (by content) is read with its graph (io::load_onnx; --arch is then a UsageError,
// and so is a model the reader does not support: the op and node are named).
std::unique_ptr<models::Model> load_weights(const std::string& path, const std::string& arch,
                                            const std::string& dataset,
                                            std::map<std::string, std::string>* metadata = nullptr);

// A path given on the command line and the option that gave it ("--out", "--weights", ...).
struct PathOption {
  std::string option, path;
};
// True when a and b name the same file: the same inode (std::filesystem::equivalent: hard and
// symbolic links) or the same weakly_canonical path ("./x", "d/../x", a symlinked folder; also
// for an output that does not exist yet).
bool same_file(const std::string& a, const std::string& b);
// No command writes over one of its own inputs: UsageError (exit 2) naming both options and the
// path when an output is the same file as an input. Empty paths are skipped.
void refuse_overwriting_inputs(const std::vector<PathOption>& outputs,
                               const std::vector<PathOption>& inputs);

// parse_device with an unknown name turned into a UsageError (exit 2); "cuda" without a
// usable device stays a runtime failure (exit 1).
Device require_device(const std::string& name);
// Sets OpenMP/OpenBLAS threads; 0: OMP_NUM_THREADS when the user set it, else the CPUs this
// process is granted (default_threads(), experiments/threads.h: affinity mask, cgroup quota).
void set_threads(int threads);
int current_threads();
// The version string, e.g. "0.1.0".
const char* version();
// The git commit the binary was configured from ("unknown" outside a checkout).
const char* git_commit();
// The source tree the binary was built from (tools/ scripts are found there).
const char* source_dir();

}  // namespace nns::exp
