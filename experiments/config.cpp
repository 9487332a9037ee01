#include <algorithm>
#include "experiments/config.h"

#include <yaml-cpp/depthguard.h>  // YAML::DeepRecursion (not in yaml.h)
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <sstream>

#include "core/io/input_file.h"
#include "core/io/strict_number.h"

namespace nns::exp {

namespace {

const char* type_name(ValueType t) {
  switch (t) {
    case ValueType::Int: return "integer";
    case ValueType::Float: return "number";
    case ValueType::Bool: return "boolean";
    case ValueType::String: return "string";
    case ValueType::FloatOrAuto: return "number or word";
    case ValueType::FloatPairOrAuto: return "[lo, hi] or word";
    case ValueType::StringList: return "list of strings";
    case ValueType::FloatList: return "list of numbers";
    case ValueType::IntList: return "list of integers";
  }
  return "?";
}

std::string where(const std::string& file, const YAML::Mark& m) {
  if (m.line < 0) return file;
  return file + ":" + std::to_string(m.line + 1);
}

// Numbers are strict (core/io/strict_number.h): the whole scalar, finite, no white space.
bool parse_double(const std::string& s, double* out) {
  auto v = io::parse_strict_double(s);
  if (v) *out = *v;
  return v.has_value();
}

bool parse_int(const std::string& s, int64_t* out) {
  auto v = io::parse_strict_int(s);
  if (v) *out = *v;
  return v.has_value();
}

std::string emit(const YAML::Node& n) {
  YAML::Emitter e;
  e.SetSeqFormat(YAML::Flow);
  e.SetMapFormat(YAML::Flow);
  e << n;
  return e.c_str();
}

// Validates one value; returns "" when fine, else what is wrong.
std::string check_value(const KeySpec& k, const YAML::Node& v) {
  auto range = [&](double x) -> std::string {
    if (!std::isfinite(x)) return "must be finite";
    if (k.min && x < *k.min) return "must be >= " + emit(YAML::Node(*k.min));
    if (k.max && x > *k.max) return "must be <= " + emit(YAML::Node(*k.max));
    return "";
  };
  auto word_ok = [&](const std::string& s) {
    for (auto& c : k.choices)
      if (c == s) return true;
    return false;
  };
  auto choices = [&] {
    std::string s;
    for (auto& c : k.choices) s += (s.empty() ? "" : ", ") + c;
    return s;
  };
  double d;
  int64_t i;
  switch (k.type) {
    case ValueType::Int:
      if (!v.IsScalar() || !parse_int(v.Scalar(), &i))
        return "expected an integer, got '" + emit(v) + "'";
      return range(double(i));
    case ValueType::Float:
      if (!v.IsScalar() || !parse_double(v.Scalar(), &d))
        return "expected a number, got '" + emit(v) + "'";
      return range(d);
    case ValueType::Bool:
      if (!v.IsScalar()) return "expected true or false";
      {
        bool b;
        if (!YAML::convert<bool>::decode(v, b)) return "expected true or false, got '" + v.Scalar() + "'";
      }
      return "";
    case ValueType::String:
      if (!v.IsScalar()) return "expected a string, got '" + emit(v) + "'";
      if (!k.choices.empty() && !word_ok(v.Scalar()))
        return "'" + v.Scalar() + "' is not one of: " + choices();
      return "";
    case ValueType::FloatOrAuto:
      if (!v.IsScalar()) return "expected a number or " + choices();
      if (parse_double(v.Scalar(), &d)) return range(d);
      if (word_ok(v.Scalar())) return "";
      return "expected a number or one of: " + choices() + ", got '" + v.Scalar() + "'";
    case ValueType::FloatPairOrAuto:
      if (v.IsScalar()) {
        if (word_ok(v.Scalar())) return "";
        return "expected [lo, hi] or one of: " + choices();
      }
      if (!v.IsSequence() || v.size() != 2) return "expected [lo, hi]";
      {
        double a, b;
        if (!v[0].IsScalar() || !v[1].IsScalar() || !parse_double(v[0].Scalar(), &a) ||
            !parse_double(v[1].Scalar(), &b))
          return "expected two numbers [lo, hi]";
        if (!(a < b)) return "lo must be below hi";
      }
      return "";
    case ValueType::StringList:
    case ValueType::FloatList:
    case ValueType::IntList:
      if (!v.IsSequence()) return std::string("expected a ") + type_name(k.type);
      for (const auto& e : v) {
        if (!e.IsScalar()) return std::string("expected a ") + type_name(k.type);
        if (k.type == ValueType::FloatList) {
          if (!parse_double(e.Scalar(), &d)) return "'" + e.Scalar() + "' is not a number";
          if (auto m = range(d); !m.empty()) return m;
        }
        if (k.type == ValueType::IntList) {
          if (!parse_int(e.Scalar(), &i)) return "'" + e.Scalar() + "' is not an integer";
          if (auto m = range(double(i)); !m.empty()) return m;
        }
        if (k.type == ValueType::StringList && !k.choices.empty() && !word_ok(e.Scalar()))
          return "'" + e.Scalar() + "' is not one of: " + choices();
      }
      return "";
  }
  return "";
}

void walk(const Schema& schema, const std::string& file, const YAML::Node& node,
          const std::string& prefix, std::map<std::string, std::string>& out) {
  if (!node.IsMap())
    throw ConfigError(where(file, node.Mark()) + ": " +
                      (prefix.empty() ? std::string("the top level") : "section '" + prefix + "'") +
                      " must be a mapping of keys");
  for (const auto& kv : node) {
    if (!kv.first.IsScalar())
      throw ConfigError(where(file, kv.first.Mark()) + ": keys must be plain names");
    std::string key = kv.first.Scalar();
    std::string path = prefix.empty() ? key : prefix + "." + key;
    if (out.count(path))
      throw ConfigError(where(file, kv.first.Mark()) + ": key '" + path + "' given twice");
    if (const KeySpec* k = schema.find(path)) {
      std::string err = check_value(*k, kv.second);
      if (!err.empty())
        throw ConfigError(where(file, kv.second.Mark()) + ": key '" + path + "': " + err);
      out[path] = emit(kv.second);
    } else if (schema.is_section(path)) {
      walk(schema, file, kv.second, path, out);
    } else {
      // The names allowed at this level, once each, in schema order (a subsection by its name).
      std::string hint;
      std::vector<std::string> names;
      auto dot = path.rfind('.');
      std::string section = dot == std::string::npos ? "" : path.substr(0, dot);
      for (const auto& k : schema.keys())
        if (k.path.rfind(section.empty() ? "" : section + ".", 0) == 0) {
          std::string rest = section.empty() ? k.path : k.path.substr(section.size() + 1);
          std::string name = rest.substr(0, rest.find('.'));
          if (std::find(names.begin(), names.end(), name) == names.end()) {
            names.push_back(name);
            hint += (hint.empty() ? "" : ", ") + name;
          }
        }
      throw ConfigError(where(file, kv.first.Mark()) + ": unknown key '" + path + "'" +
                        (hint.empty() ? "" : " (known here: " + hint + ")"));
    }
  }
}

}  // namespace

void throw_invalid_yaml(const std::string& file, const YAML::Exception& e) {
  std::string what = e.msg;
  if (const auto* deep = dynamic_cast<const YAML::DeepRecursion*>(&e))
    what = "nested too deep (more than " + std::to_string(deep->depth() - 1) +
           " levels of lists or mappings)";
  throw ConfigError(file + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + what);
}

Schema& Schema::add(KeySpec k) {
  keys_.push_back(std::move(k));
  return *this;
}

const KeySpec* Schema::find(const std::string& path) const {
  for (const auto& k : keys_)
    if (k.path == path) return &k;
  return nullptr;
}

bool Schema::is_section(const std::string& path) const {
  for (const auto& k : keys_)
    if (k.path.size() > path.size() && k.path.compare(0, path.size(), path) == 0 &&
        k.path[path.size()] == '.')
      return true;
  return false;
}

std::string Schema::reference_markdown(const std::string& title) const {
  std::ostringstream o;
  o << "# " << title << "\n\n"
    << "Generated from the schema in the source (`nnsplitter config-reference`). Unknown keys "
       "and wrong types are errors; any key can be overridden with `--set key=value`.\n\n"
    << "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& k : keys_) {
    std::string t = type_name(k.type);
    if (!k.choices.empty()) {
      std::string c;
      for (auto& x : k.choices) c += (c.empty() ? "" : " \\| ") + x;
      t += " (" + c + ")";
    }
    if (k.min || k.max) {
      t += " in [" + (k.min ? emit(YAML::Node(*k.min)) : std::string("-inf")) + ", " +
           (k.max ? emit(YAML::Node(*k.max)) : std::string("inf")) + "]";
    }
    o << "| `" << k.path << "` | " << t << " | "
      << (k.default_yaml.empty() ? "(required)" : "`" + k.default_yaml + "`") << " | " << k.doc
      << " |\n";
  }
  return o.str();
}

Config Config::load(const Schema& schema, const std::string& file,
                    const std::vector<std::string>& sets) {
  if (file.empty()) return load_text(schema, "", "", sets);
  return load_text(schema, read_config_file(file, "config file"), file, sets);
}

std::string read_config_file(const std::string& file, const std::string& what) {
  try {
    return io::read_input_file(file, io::kMaxConfigBytes, what);
  } catch (const io::InputFileError& e) {
    const bool folder = io::non_regular_kind(file) == "a folder";
    throw ConfigError(std::string(e.what()) + (folder ? " (give the YAML file itself)" : ""));
  }
}

Config Config::load_text(const Schema& schema, const std::string& yaml_text,
                         const std::string& file, const std::vector<std::string>& sets) {
  Config c;
  c.schema_ = schema;
  c.source_ = file;
  if (yaml_text.size() > io::kMaxConfigBytes)
    throw ConfigError((file.empty() ? std::string("config") : file) + ": " +
                      std::to_string(yaml_text.size()) + " bytes, more than the limit of " +
                      io::byte_size_text(io::kMaxConfigBytes) + " for a config file");
  if (!yaml_text.empty()) {
    YAML::Node root;
    try {
      root = YAML::Load(yaml_text);
    } catch (const YAML::Exception& e) {
      throw_invalid_yaml(file, e);
    }
    if (root.IsDefined() && !root.IsNull()) walk(schema, file, root, "", c.values_);
  }
  for (const auto& s : sets) {
    auto eq = s.find('=');
    if (eq == std::string::npos || eq == 0)
      throw ConfigError("--set '" + s + "': expected key=value");
    std::string path = s.substr(0, eq), text = s.substr(eq + 1);
    const KeySpec* k = schema.find(path);
    if (!k) throw ConfigError("--set: unknown key '" + path + "'");
    if (text.size() > kMaxSetValueBytes)
      throw ConfigError("--set " + path + ": the value is " + std::to_string(text.size()) +
                        " bytes, more than the limit of " + io::byte_size_text(kMaxSetValueBytes));
    YAML::Node v;
    try {
      v = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      throw ConfigError("--set " + path + ": invalid value '" + text + "': " + e.msg);
    }
    std::string err = check_value(*k, v);
    if (!err.empty()) throw ConfigError("--set: key '" + path + "': " + err);
    c.values_[path] = emit(v);
  }
  for (const auto& k : schema.keys()) {
    if (c.values_.count(k.path)) continue;
    if (k.default_yaml.empty())
      throw ConfigError((file.empty() ? std::string("config") : file) + ": missing required key '" +
                        k.path + "'");
    c.values_[k.path] = k.default_yaml;
  }
  return c;
}

std::string Config::text(const std::string& path) const {
  auto it = values_.find(path);
  if (it == values_.end()) throw std::logic_error("config: no key '" + path + "' in the schema");
  return it->second;
}

// The getters parse numbers with the same functions as validation (parse_double, parse_int), so
// that every value load_text accepted reads back: yaml-cpp's own conversion is narrower than
// std::stod (it refuses e.g. " 1" or "0x1p3", which validation accepted, found by fuzz_config).
namespace {
double number_of(const std::string& path, const YAML::Node& n) {
  double d;
  if (!n.IsScalar() || !parse_double(n.Scalar(), &d))
    throw ConfigError("config: key '" + path + "' is not a number: '" + emit(n) + "'");
  return d;
}
int64_t integer_of(const std::string& path, const YAML::Node& n) {
  int64_t i;
  if (!n.IsScalar() || !parse_int(n.Scalar(), &i))
    throw ConfigError("config: key '" + path + "' is not an integer: '" + emit(n) + "'");
  return i;
}
}  // namespace

int64_t Config::get_int(const std::string& path) const { return integer_of(path, YAML::Load(text(path))); }
double Config::get_float(const std::string& path) const { return number_of(path, YAML::Load(text(path))); }
bool Config::get_bool(const std::string& path) const { return YAML::Load(text(path)).as<bool>(); }
std::string Config::get_string(const std::string& path) const {
  return YAML::Load(text(path)).as<std::string>();
}
bool Config::is_word(const std::string& path, const std::string& word) const {
  YAML::Node n = YAML::Load(text(path));
  return n.IsScalar() && n.Scalar() == word;
}
std::pair<double, double> Config::get_pair(const std::string& path) const {
  YAML::Node n = YAML::Load(text(path));
  if (!n.IsSequence() || n.size() != 2) throw ConfigError("config: key '" + path + "' is not [lo, hi]");
  return {number_of(path, n[0]), number_of(path, n[1])};
}
std::vector<std::string> Config::get_strings(const std::string& path) const {
  return YAML::Load(text(path)).as<std::vector<std::string>>();
}
std::vector<double> Config::get_floats(const std::string& path) const {
  std::vector<double> out;
  for (const auto& e : YAML::Load(text(path))) out.push_back(number_of(path, e));
  return out;
}
std::vector<int64_t> Config::get_ints(const std::string& path) const {
  std::vector<int64_t> out;
  for (const auto& e : YAML::Load(text(path))) out.push_back(integer_of(path, e));
  return out;
}

bool Config::same_as_saved(const std::string& yaml_text) const {
  try {
    return load_text(schema_, yaml_text, "saved configuration", {}).effective_yaml() ==
           effective_yaml();
  } catch (const ConfigError&) {
    return false;
  }
}

std::string Config::effective_yaml() const {
  YAML::Node root;
  for (const auto& k : schema_.keys()) {
    std::vector<std::string> parts;
    std::stringstream ss(k.path);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    // yaml-cpp nodes are handles: walk by re-indexing from the root each time.
    YAML::Node value = YAML::Load(values_.at(k.path));
    if (parts.size() == 1) root[parts[0]] = value;
    else if (parts.size() == 2) root[parts[0]][parts[1]] = value;
    else if (parts.size() == 3) root[parts[0]][parts[1]][parts[2]] = value;
    else throw std::logic_error("config keys are at most three levels deep: " + k.path);
  }
  YAML::Emitter e;
  e << root;
  return std::string(e.c_str()) + "\n";
}

}  // namespace nns::exp
