// Fuzzes exp::Config::load_text, the schema-validated YAML loader of every config (`run`,
// `sweep`'s base, `protect --config`). The first byte picks the schema: experiment_schema()
// (even) or method_schema() (odd, protect's splitter/controller keys). For a config that
// loads, every key is read back through its typed getter and the effective YAML re-loads to
// the same configuration.
#include "experiments/config.h"
#include "experiments/experiment.h"
#include "experiments/protect.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

using nns::exp::Config;
using nns::exp::ValueType;

bool is_a_word(const Config& c, const nns::exp::KeySpec& k) {
  for (const auto& w : k.choices)
    if (c.is_word(k.path, w)) return true;
  return false;
}

void read_back(const Config& c, const nns::exp::KeySpec& k) {
  switch (k.type) {
    case ValueType::Int: c.get_int(k.path); break;
    case ValueType::Float: c.get_float(k.path); break;
    case ValueType::Bool: c.get_bool(k.path); break;
    case ValueType::String: c.get_string(k.path); break;
    case ValueType::FloatOrAuto:
      if (!is_a_word(c, k)) c.get_float(k.path);
      break;
    case ValueType::FloatPairOrAuto:
      if (!is_a_word(c, k)) c.get_pair(k.path);
      break;
    case ValueType::StringList: c.get_strings(k.path); break;
    case ValueType::FloatList: c.get_floats(k.path); break;
    case ValueType::IntList: c.get_ints(k.path); break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz.yaml";
  static const nns::exp::Schema experiment = nns::exp::experiment_schema();
  static const nns::exp::Schema method = nns::exp::method_schema();
  if (size < 1) return 0;
  const nns::exp::Schema& schema = (data[0] & 1) ? method : experiment;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  Config c;
  try {
    c = Config::load_text(schema, text, kName, {});
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
    return 0;
  }
  for (const auto& k : schema.keys()) read_back(c, k);
  const std::string effective = c.effective_yaml();
  Config again = Config::load_text(schema, effective, "effective", {});
  nns::fuzz::expect(again.effective_yaml() == effective, "effective YAML is a fixed point");
  return 0;
}
