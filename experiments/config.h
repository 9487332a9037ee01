// Validated YAML configuration: a schema of dotted keys with types, defaults, ranges and docs;
// loading rejects unknown keys and wrong types with file:line and the key; `--set a.b=value`
// overrides any key; the effective configuration can be written back as YAML.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "experiments/cli.h"

namespace YAML {
class Node;
class Exception;
}

namespace nns::exp {

// A configuration error (exit 2), message "file:line: key 'a.b': what is wrong".
struct ConfigError : UsageError {
  using UsageError::UsageError;
};

// A config or sweep file is read through core/io/input_file.h: a regular file of at most
// io::kMaxConfigBytes (1 MiB; ours are a few KB), else a ConfigError naming the file ("P: is a
// character device, not a config file ...", "P: 52428800 bytes, more than the limit of 1 MiB
// for a config file"). `what` names the kind of file in errors.
std::string read_config_file(const std::string& file, const std::string& what);
// The longest value a `--set key=value` may give (the kernel allows 128 KiB per argument).
inline constexpr size_t kMaxSetValueBytes = size_t(64) << 10;

// The ConfigError for YAML that yaml-cpp refused: "file:line: invalid YAML: what", where a
// document nested too deep (yaml-cpp's DeepRecursion, which it words "bad file") says so.
[[noreturn]] void throw_invalid_yaml(const std::string& file, const YAML::Exception& e);

enum class ValueType {
  Int,
  Float,
  Bool,
  String,
  FloatOrAuto,   // a number, or the string "auto" (or another listed word, see choices)
  FloatPairOrAuto,  // [lo, hi], or "auto"
  StringList,
  FloatList,
  IntList,
};

struct KeySpec {
  std::string path;     // dotted, e.g. "splitter.eps"
  ValueType type;
  std::string default_yaml;  // default as YAML text ("" = required)
  std::string doc;
  std::optional<double> min, max;         // for numbers (and list elements)
  std::vector<std::string> choices;       // for strings (and the words of FloatOrAuto)
};

class Schema {
 public:
  Schema& add(KeySpec k);
  const KeySpec* find(const std::string& path) const;
  bool is_section(const std::string& path) const;  // a prefix of some key
  const std::vector<KeySpec>& keys() const { return keys_; }
  // Markdown reference of every key with type, default and doc.
  std::string reference_markdown(const std::string& title) const;

 private:
  std::vector<KeySpec> keys_;
};

class Config {
 public:
  // Loads `file` ("" = defaults only), validates against the schema, applies `sets`
  // ("a.b=value", value parsed as YAML), fills defaults. Throws ConfigError.
  static Config load(const Schema& schema, const std::string& file,
                     const std::vector<std::string>& sets);
  // The same from YAML text; `name` stands for the file in error messages and source().
  static Config load_text(const Schema& schema, const std::string& yaml_text,
                          const std::string& name, const std::vector<std::string>& sets);

  int64_t get_int(const std::string& path) const;
  double get_float(const std::string& path) const;
  bool get_bool(const std::string& path) const;
  std::string get_string(const std::string& path) const;
  // True when the value is the word `word` (for FloatOrAuto / FloatPairOrAuto).
  bool is_word(const std::string& path, const std::string& word) const;
  std::pair<double, double> get_pair(const std::string& path) const;
  std::vector<std::string> get_strings(const std::string& path) const;
  std::vector<double> get_floats(const std::string& path) const;
  std::vector<int64_t> get_ints(const std::string& path) const;
  // The YAML text of one value (as given or defaulted).
  std::string text(const std::string& path) const;
  // The whole effective configuration as YAML (every key, nested).
  std::string effective_yaml() const;
  // Whether `yaml_text` (an effective_yaml() saved earlier, perhaps by an older version) is this
  // configuration: loaded with this config's schema, keys added since then take their defaults.
  // False when it differs or no longer loads.
  bool same_as_saved(const std::string& yaml_text) const;
  const std::string& source() const { return source_; }

 private:
  Schema schema_;  // a copy: configs outlive the schema objects they were loaded with
  std::map<std::string, std::string> values_;  // path -> YAML text of the value
  std::string source_;
};

}  // namespace nns::exp
