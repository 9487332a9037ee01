#include "core/io/model_io.h"

#include "core/io/strict_number.h"
#include "core/io/onnx.h"

#include <cmath>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

namespace nns::io {

void load_state(models::Model& model, const SafetensorsFile& file, const std::string& path) {
  auto& entries = model.state();
  std::set<std::string> expected;
  for (auto& e : entries) {
    expected.insert(e.key);
    const Tensor* t = file.find(e.key);
    if (!t)
      throw std::runtime_error(path + ": missing key '" + e.key + "' expected by " +
                               model.spec().arch + " (shape " + shape_str(e.tensor->shape()) +
                               ")");
    if (t->shape() != e.tensor->shape())
      throw std::runtime_error(path + ": key '" + e.key + "' has shape " + shape_str(t->shape()) +
                               ", " + model.spec().arch + " expects " +
                               shape_str(e.tensor->shape()));
  }
  for (auto& [key, t] : file.tensors)
    if (!expected.count(key))
      throw std::runtime_error(path + ": unexpected key '" + key + "' (not in " +
                               model.spec().arch + "'s state dict)");
  for (auto& e : entries) {
    const Tensor& src = *file.find(e.key);
    if (src.dtype() == e.tensor->dtype()) {
      e.tensor->copy_from(src);
    } else if (e.tensor->dtype() == DType::I64 && src.dtype() == DType::F32) {
      Tensor c(src.shape(), DType::I64);
      for (int64_t i = 0; i < src.numel(); ++i) c.i64()[i] = static_cast<int64_t>(src.f32()[i]);
      e.tensor->copy_from(c);
    } else if (e.tensor->dtype() == DType::F32 && src.dtype() == DType::I64) {
      throw std::runtime_error(path + ": key '" + e.key + "' is I64 but must be floating point");
    } else {
      throw std::runtime_error(path + ": key '" + e.key + "' has dtype " +
                               dtype_name(src.dtype()) + ", expected " +
                               dtype_name(e.tensor->dtype()));
    }
  }
  for (auto& e : entries) {
    if (e.tensor->dtype() != DType::F32) continue;
    Tensor c = e.tensor->to(Device::CPU);
    const float* p = c.f32();
    for (int64_t i = 0; i < c.numel(); ++i)
      if (!std::isfinite(p[i]))
        throw std::runtime_error(path + ": key '" + e.key + "' holds a non-finite value at flat index " +
                                 std::to_string(i));
  }
}

void save_model(models::Model& model, const std::string& path,
                std::map<std::string, std::string> extra) {
  if (write_as_onnx(model, path)) return save_onnx(model, path, extra);
  const auto& s = model.spec();
  std::map<std::string, std::string> meta = std::move(extra);
  meta["arch"] = s.arch;
  meta["in_channels"] = std::to_string(s.in_channels);
  meta["input_size"] = std::to_string(s.input_size);
  meta["num_classes"] = std::to_string(s.num_classes);
  std::ostringstream wm;
  wm << s.width_mult;
  meta["width_mult"] = wm.str();
  meta["format"] = "nnsplitter-weights-1";
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  std::vector<Tensor> cpu_copies;
  cpu_copies.reserve(model.state().size());
  for (auto& e : model.state()) {
    if (e.tensor->device() != Device::CPU) {
      cpu_copies.push_back(e.tensor->to(Device::CPU));
      tensors.emplace_back(e.key, &cpu_copies.back());
    } else {
      tensors.emplace_back(e.key, e.tensor);
    }
  }
  write_safetensors(path, tensors, meta);
}

// Metadata numbers are strict (core/io/strict_number.h): "2junk", " 3", "3.0" and "1e2" are
// refused, not read as their first digits. The ranges are checked by spec_bounds_error.
static int meta_int(const SafetensorsFile& f, const std::string& path, const std::string& key) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end())
    throw std::runtime_error(path + ": metadata lacks '" + key +
                             "' (convert PyTorch files with tools/torch_to_safetensors.py "
                             "--arch ... --dataset ...)");
  auto v = parse_strict_int(it->second);
  if (!v)
    throw std::runtime_error(path + ": metadata " + key + " = '" + it->second +
                             "' is not an integer");
  if (*v < std::numeric_limits<int>::min() || *v > std::numeric_limits<int>::max())
    throw std::runtime_error(path + ": metadata " + key + " = " + it->second +
                             " is out of range (the bounds of core/models/zoo.h)");
  return int(*v);
}

models::ModelSpec spec_from_metadata(const SafetensorsFile& f, const std::string& path) {
  models::ModelSpec s;
  auto it = f.metadata.find("arch");
  if (it == f.metadata.end())
    throw std::runtime_error(path + ": metadata lacks 'arch' (which model these weights are for): "
                             "a plain state_dict needs --arch NAME and --dataset");
  s.arch = it->second;
  if (!models::is_known_model(s.arch))
    throw std::runtime_error(path + ": metadata names unknown model '" + s.arch + "'");
  s.in_channels = meta_int(f, path, "in_channels");
  s.input_size = meta_int(f, path, "input_size");
  s.num_classes = meta_int(f, path, "num_classes");
  auto w = f.metadata.find("width_mult");
  if (w != f.metadata.end()) {
    auto v = parse_strict_double(w->second);
    if (!v)
      throw std::runtime_error(path + ": metadata width_mult = '" + w->second +
                               "' is not a finite number");
    s.width_mult = float(*v);
  }
  if (std::string e = models::spec_bounds_error(s); !e.empty())
    throw std::runtime_error(path + ": metadata " + e + " (the bounds of core/models/zoo.h)");
  return s;
}

bool write_as_onnx(const models::Model& model, const std::string& path) {
  const bool st = path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0;
  return is_onnx_model(model) && !st;
}

std::unique_ptr<models::Model> load_model(const std::string& path,
                                          std::map<std::string, std::string>* metadata) {
  if (looks_like_onnx(path)) return load_onnx(path, metadata);
  SafetensorsFile f = read_safetensors(path);
  if (auto a = f.metadata.find("arch"); a != f.metadata.end() && a->second == models::kGraphArch)
    throw std::runtime_error(path + ": the state of a model read from ONNX (its graph is in the "
                             ".onnx file: read that one, e.g. obfuscated.onnx beside "
                             "obfuscated.safetensors)");
  std::unique_ptr<models::Model> model;
  try {
    model = models::build_model(spec_from_metadata(f, path));
  } catch (const std::invalid_argument& e) {  // a spec the architecture cannot take
    throw std::runtime_error(path + ": " + e.what());
  }
  load_state(*model, f, path);
  if (metadata) *metadata = f.metadata;
  return model;
}

}  // namespace nns::io
