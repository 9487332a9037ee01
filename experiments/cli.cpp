#include "experiments/cli.h"

#include <omp.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "core/engine/plan.h"
#include "core/io/model_io.h"
#include "core/io/onnx.h"
#include "experiments/threads.h"
#include "kernels/ops.h"

extern "C" void openblas_set_num_threads(int);

namespace nns::exp {

void add_engine_options(CLI::App* sub, EngineArgs& e) {
  sub->add_option("--conv-engine", e.conv, "CUDA convolutions: native (our kernels) or cudnn")
      ->check(CLI::IsMember({"native", "cudnn"}))
      ->capture_default_str();
  sub->add_option("--gemm-engine", e.gemm, "CUDA matrix products: native (our kernels) or cublas")
      ->check(CLI::IsMember({"native", "cublas"}))
      ->capture_default_str();
  sub->add_option("--cpu-engine", e.cpu,
                  "CPU passes: auto (an execution plan per batch and mode; each convolution on "
                  "oneDNN or our blocked kernels, whichever measured faster), onednn, native, or "
                  "layers (module by module, the reference path). Default: $NNS_CPU_ENGINE or auto")
      ->check(CLI::IsMember({"auto", "onednn", "native", "layers"}));
}

void apply_engines(const EngineArgs& e, Device dev) {
  if ((e.conv != "native" || e.gemm != "native") && !cuda_compiled())
    throw UsageError("--conv-engine/--gemm-engine select CUDA libraries, but this build has no CUDA");
  (void)dev;
  if (!e.cpu.empty()) engine::set_cpu_engine(engine::parse_cpu_engine(e.cpu));
  ops::set_conv_engine(e.conv == "cudnn" ? ops::ConvEngine::Cudnn : ops::ConvEngine::Native);
  ops::set_gemm_engine(e.gemm == "cublas" ? ops::GemmEngine::Cublas : ops::GemmEngine::Native);
}

void print_json(const nlohmann::json& j) { std::cout << j.dump() << std::endl; }

void require_model_name(const std::string& arch) {
  if (!models::is_known_model(arch)) {
    std::string all;
    for (const auto& n : models::model_names()) all += (all.empty() ? "" : ", ") + n;
    throw UsageError("unknown model '" + arch + "' (known: " + all + ")");
  }
}

data::DatasetInfo require_dataset_info(const std::string& name) {
  try {
    return data::dataset_info(name);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
}

int require_model_fits(const models::ModelSpec& s, const std::string& weights,
                       const data::DatasetInfo& info, const std::string& dataset) {
  if (s.in_channels != info.channels || s.num_classes != info.num_classes)
    throw UsageError(weights + ": model " + s.arch + " takes " + std::to_string(s.in_channels) +
                     " channel(s) and " + std::to_string(s.num_classes) +
                     " classes, but dataset " + dataset + " has " +
                     std::to_string(info.channels) + " and " + std::to_string(info.num_classes));
  if (s.input_size < info.height)
    throw UsageError(weights + ": model input " + std::to_string(s.input_size) +
                     " is smaller than the images of " + dataset);
  return s.input_size > info.height ? s.input_size : 0;
}

models::ModelSpec spec_for(const std::string& arch, const data::DatasetInfo& info,
                           float width_mult) {
  require_model_name(arch);
  models::ModelSpec s;
  s.arch = arch;
  s.in_channels = info.channels;
  s.input_size = models::model_input_size(arch, info.height);
  s.num_classes = info.num_classes;
  s.width_mult = width_mult;
  return s;
}

void add_arch_option(CLI::App* sub, std::string& arch) {
  sub->add_option("--arch", arch,
                  "Architecture of a weights file without nnsplitter metadata (a plain "
                  "state_dict); channels, input size and classes come from --dataset");
}

std::unique_ptr<models::Model> load_weights(const std::string& path, const std::string& arch,
                                            const std::string& dataset,
                                            std::map<std::string, std::string>* metadata) {
  if (io::looks_like_onnx(path)) {
    if (!arch.empty())
      throw UsageError(path + " is an ONNX model, which carries its own graph: drop --arch " + arch);
    try {
      return io::load_onnx(path, metadata);
    } catch (const io::UnsupportedModel& e) {
      throw UsageError(e.what());
    }
  }
  if (arch.empty()) return io::load_model(path, metadata);
  require_model_name(arch);
  if (dataset.empty())
    throw UsageError("--arch " + arch + " needs --dataset (it sets the input channels, input "
                     "size and classes of the model)");
  models::ModelSpec spec = spec_for(arch, require_dataset_info(dataset));
  io::SafetensorsFile f = io::read_safetensors(path);
  auto it = f.metadata.find("arch");
  if (it != f.metadata.end()) {
    if (it->second != arch)
      throw UsageError(path + ": --arch " + arch + ", but the file's metadata says the weights "
                       "are for " + it->second + " (drop --arch, or pass the right file)");
    if (f.metadata.count("in_channels")) spec = io::spec_from_metadata(f, path);
  }
  auto model = models::build_model(spec);
  io::load_state(*model, f, path);
  if (metadata) *metadata = f.metadata;
  return model;
}

bool same_file(const std::string& a, const std::string& b) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::equivalent(a, b, ec) && !ec) return true;
  ec.clear();
  // absolute() first: weakly_canonical("x") stays "x" when nothing of it exists.
  fs::path ca = fs::weakly_canonical(fs::absolute(a, ec), ec);
  if (ec) return false;
  fs::path cb = fs::weakly_canonical(fs::absolute(b, ec), ec);
  return !ec && ca == cb;
}

void refuse_overwriting_inputs(const std::vector<PathOption>& outputs,
                               const std::vector<PathOption>& inputs) {
  for (const auto& o : outputs) {
    if (o.path.empty()) continue;
    for (const auto& i : inputs)
      if (!i.path.empty() && same_file(o.path, i.path))
        throw UsageError(o.option + " " + o.path + " is the same file as " + i.option + " " +
                         i.path + ": refusing to write over an input; choose another " + o.option);
  }
}

Device require_device(const std::string& name) {
  try {
    return parse_device(name);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
}

void set_threads(int threads) {
  if (threads <= 0) {
    if (std::getenv("OMP_NUM_THREADS")) return;  // the user's choice, read by OpenMP itself
    threads = default_threads();  // affinity mask and cgroup quota (experiments/threads.h)
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

int current_threads() { return omp_get_max_threads(); }

const char* version() {
#ifdef NNS_VERSION
  return NNS_VERSION;
#else
  return "unknown";
#endif
}

}  // namespace nns::exp

namespace nns::exp {
const char* git_commit() {
#ifdef NNS_GIT_COMMIT
  return NNS_GIT_COMMIT;
#else
  return "unknown";
#endif
}
const char* source_dir() {
#ifdef NNS_SOURCE_TREE
  return NNS_SOURCE_TREE;
#else
  return ".";
#endif
}
}  // namespace nns::exp
