// Loading a model's state from safetensors and saving it, with strict key/shape checks.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "core/io/safetensors.h"
#include "core/models/zoo.h"

namespace nns::io {

// Copies every state entry of `model` from `file`. Strict like PyTorch's load_state_dict:
// a missing key, an unexpected key, or a shape mismatch throws, naming the file, the first
// offending key, and the expected and found shapes. I64 entries (num_batches_tracked) may be
// given as I64 or F32.
void load_state(models::Model& model, const SafetensorsFile& file, const std::string& path);

// Writes the model's state dict (PyTorch order) with metadata: arch, in_channels, input_size,
// num_classes, width_mult, plus `extra`. Atomic (temporary file + rename). A model read from
// ONNX is written as ONNX (core/io/onnx.h: its graph, the state's initializers, `extra` as
// metadata_props) unless `path` ends in .safetensors (then its state dict under the
// initializer names, arch "onnx").
void save_model(models::Model& model, const std::string& path,
                std::map<std::string, std::string> extra = {});
// Whether save_model writes `model` to `path` as ONNX.
bool write_as_onnx(const models::Model& model, const std::string& path);

// The ModelSpec recorded in a weights file's metadata (arch, in_channels, input_size,
// num_classes, width_mult); missing or bad entries, or values outside the bounds of
// core/models/zoo.h, throw naming the file and the key.
models::ModelSpec spec_from_metadata(const SafetensorsFile& file, const std::string& path);

// Reads a weights file, builds the model it describes and loads it. An ONNX file (recognised
// by its content: io::looks_like_onnx) is read by io::load_onnx.
std::unique_ptr<models::Model> load_model(const std::string& path,
                                          std::map<std::string, std::string>* metadata = nullptr);

}  // namespace nns::io
