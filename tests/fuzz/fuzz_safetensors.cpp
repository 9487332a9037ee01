// Fuzzes io::parse_safetensors (every weights file, obfuscated model and secrets file goes
// through it), then, for what parses, the model spec from its metadata and a strict load into a
// small fixed model (the key, shape and dtype checks of load_state). Input: the file's bytes.
#include "core/io/model_io.h"
#include "core/io/safetensors.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz.safetensors";
  static std::unique_ptr<nns::models::Model> model = [] {
    nns::models::ModelSpec s;
    s.arch = "lenet5";
    return nns::models::build_model(s);
  }();
  nns::io::SafetensorsFile f;
  try {
    f = nns::io::parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), kName);
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
    return 0;
  }
  for (const auto& [key, t] : f.tensors) nns::fuzz::expect(t.numel() >= 0, "numel");
  try {
    nns::models::ModelSpec s = nns::io::spec_from_metadata(f, kName);
    nns::fuzz::expect(nns::models::spec_bounds_error(s).empty(), "spec within bounds");
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
  }
  try {
    nns::io::load_state(*model, f, kName);
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
  }
  return 0;
}
