#include "experiments/sweep.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <numeric>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "experiments/attack_suite.h"
#include "core/io/atomic_file.h"
#include "core/io/input_file.h"
#include "experiments/h5file.h"

extern char** environ;

namespace nns::exp {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxRuns = 1000000;

std::string where(const std::string& file, const YAML::Mark& m) {
  if (m.line < 0) return file;
  return file + ":" + std::to_string(m.line + 1);
}

// Flow-style YAML text of a node, as Config stores values.
std::string emit_flow(const YAML::Node& n) {
  YAML::Emitter e;
  e.SetSeqFormat(YAML::Flow);
  e.SetMapFormat(YAML::Flow);
  e << n;
  return e.c_str();
}

// A file of the sweep's own folder (runs.tsv, the copy of the sweep file), bounded like the
// sweep file it came from.
std::string read_file(const std::string& path, uint64_t max_bytes, const std::string& what) {
  try {
    return io::read_input_file(path, max_bytes, what);
  } catch (const io::InputFileError& e) {
    throw ConfigError(e.what());
  }
}

// Keys of a top-level mapping, as text.
std::vector<std::string> top_keys(const YAML::Node& root) {
  std::vector<std::string> k;
  if (root.IsMap())
    for (const auto& kv : root) k.push_back(kv.first.IsScalar() ? kv.first.Scalar() : "?");
  return k;
}

// The sweep file without its top-level `sweep:` entry. Block-style files keep their line
// numbers (the lines of the block are blanked) so that Config's errors point at the file.
std::string remove_sweep_block(const std::string& text, const YAML::Node& root,
                               const YAML::Node& sweep_key) {
  int first = sweep_key.Mark().line, next = -1;
  for (const auto& kv : root) {
    int l = kv.first.Mark().line;
    if (l > first && (next < 0 || l < next)) next = l;
  }
  std::vector<std::string> expected;
  for (const auto& k : top_keys(root))
    if (k != "sweep") expected.push_back(k);

  if (first >= 0) {
    std::string out;
    int line = 0;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t nl = text.find('\n', pos);
      size_t end = nl == std::string::npos ? text.size() : nl;
      bool blank = line >= first && (next < 0 || line < next);
      if (!blank) out.append(text, pos, end - pos);
      if (nl != std::string::npos) out += '\n';
      pos = end + 1;
      ++line;
    }
    // Keep the result only when it reads back as the same mapping minus `sweep`.
    try {
      YAML::Node back = YAML::Load(out);
      if ((back.IsNull() && expected.empty()) || (back.IsMap() && top_keys(back) == expected))
        return out;
    } catch (const YAML::Exception&) {
    }
  }
  // Flow-style root (or anything unusual): re-emit without the block.
  YAML::Node copy(YAML::NodeType::Map);
  for (const auto& kv : root)
    if (!(kv.first.IsScalar() && kv.first.Scalar() == "sweep")) copy[kv.first] = kv.second;
  YAML::Emitter e;
  e << copy;
  return std::string(e.c_str()) + "\n";
}

struct RawKey {
  std::string path;
  YAML::Node key, value;
};

void flatten_sweep(const Schema& schema, const std::string& file, const YAML::Node& node,
                   const std::string& prefix, std::vector<RawKey>& out) {
  if (!node.IsMap())
    throw ConfigError(where(file, node.Mark()) + ": " +
                      (prefix.empty() ? std::string("sweep") : "sweep section '" + prefix + "'") +
                      " must map dotted keys to lists of values, e.g. sweep: {seed: [0, 1]}");
  for (const auto& kv : node) {
    if (!kv.first.IsScalar())
      throw ConfigError(where(file, kv.first.Mark()) + ": sweep keys must be plain names");
    std::string path = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    if (schema.find(path)) {
      out.push_back({path, kv.first, kv.second});
    } else if (schema.is_section(path)) {
      if (!kv.second.IsMap())
        throw ConfigError(where(file, kv.first.Mark()) + ": sweep key '" + path +
                          "' is a section, not a key: give values for one of its keys (" +
                          path + ".<key>)");
      flatten_sweep(schema, file, kv.second, path, out);
    } else {
      throw ConfigError(where(file, kv.first.Mark()) + ": sweep: unknown key '" + path +
                        "' (sweep keys are dotted keys of the experiment config)");
    }
  }
}

std::string tsv_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '\\': o += "\\\\"; break;
      case '\t': o += "\\t"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      default: o += c;
    }
  }
  return o;
}

std::string tsv_unescape(const std::string& s) {
  std::string o;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char c = s[++i];
      o += c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c;
    } else {
      o += s[i];
    }
  }
  return o;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    size_t e = s.find(sep, pos);
    out.push_back(s.substr(pos, e == std::string::npos ? std::string::npos : e - pos));
    if (e == std::string::npos) break;
    pos = e + 1;
  }
  return out;
}

// A word for an #SBATCH line: paths with blanks are double-quoted (sbatch strips the quotes).
std::string sbatch_word(const std::string& s) {
  if (s.find_first_of(" \t") == std::string::npos) return s;
  return "\"" + s + "\"";
}

// Slurm expands %A, %a, %j... in --output/--error names: a literal % is %%.
std::string slurm_escape_percent(const std::string& s) {
  std::string o;
  for (char c : s) o += c == '%' ? std::string("%%") : std::string(1, c);
  return o;
}

std::string job_name_word(const std::string& s) {
  std::string o;
  for (char c : s)
    o += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  return o.empty() ? std::string("run") : o;
}

std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SweepRun

std::vector<std::string> SweepRun::sets() const {
  std::vector<std::string> s;
  for (const auto& [k, v] : overrides) s.push_back(k + "=" + v);
  return s;
}

std::string SweepRun::overrides_text() const {
  std::string s;
  for (const auto& [k, v] : overrides) s += (s.empty() ? "" : " ") + k + "=" + v;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Sweep

Sweep Sweep::load(const Schema& schema, const std::string& file,
                  const std::vector<std::string>& sets) {
  Sweep s;
  s.schema_ = &schema;
  s.text_ = read_config_file(file, "sweep file");
  s.file_ = fs::absolute(file).lexically_normal().string();
  s.sets_ = sets;

  YAML::Node root;
  try {
    root = YAML::Load(s.text_);
  } catch (const YAML::Exception& e) {
    throw_invalid_yaml(file, e);
  }
  YAML::Node sweep_key, sweep_value;
  bool has_sweep = false;
  if (root.IsMap()) {
    for (const auto& kv : root)
      if (kv.first.IsScalar() && kv.first.Scalar() == "sweep") {
        if (has_sweep)
          throw ConfigError(where(file, kv.first.Mark()) + ": key 'sweep' given twice");
        has_sweep = true;
        sweep_key = kv.first;
        sweep_value = kv.second;
      }
  }
  s.base_yaml_ = has_sweep ? remove_sweep_block(s.text_, root, sweep_key) : s.text_;

  // The base config (validated with its own file:line errors) with the common overrides.
  s.base_ = Config::load_text(schema, s.base_yaml_, file, sets);

  std::vector<RawKey> raw;
  if (has_sweep && !sweep_value.IsNull()) flatten_sweep(schema, file, sweep_value, "", raw);
  // Keys in the order they are written (independent of how the YAML library orders maps).
  // Sorted through indexes: YAML::Node's assignment writes into the node it refers to instead of
  // rebinding, so sorting RawKeys themselves (swaps) would mix keys and values of different
  // entries (a sweep over three keys reported one key's values under another's name).
  std::vector<size_t> order(raw.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    auto ma = raw[a].key.Mark(), mb = raw[b].key.Mark();
    return std::pair(ma.line, ma.column) < std::pair(mb.line, mb.column);
  });

  std::set<std::string> set_keys;
  for (const auto& kv : sets) set_keys.insert(kv.substr(0, kv.find('=')));
  std::set<std::string> seen;
  s.size_ = 1;
  for (size_t i : order) {
    const RawKey& r = raw[i];
    const std::string at = where(file, r.key.Mark());
    if (!seen.insert(r.path).second)
      throw ConfigError(at + ": sweep key '" + r.path + "' given twice");
    if (r.path == "name" || r.path == "output.dir")
      throw ConfigError(at + ": sweep key '" + r.path +
                        "' cannot be swept: it names the sweep's folder (<output.dir>/<name>)");
    if (r.path.rfind("slurm.", 0) == 0)
      throw ConfigError(at + ": sweep key '" + r.path +
                        "' cannot be swept: slurm.* keys describe the whole array job");
    if (set_keys.count(r.path))
      throw ConfigError(at + ": sweep key '" + r.path +
                        "' is also given with --set: drop one of the two");
    if (!r.value.IsSequence())
      throw ConfigError(where(file, r.value.Mark()) + ": sweep key '" + r.path +
                        "': expected a list of values, e.g. [1, 2], got '" + emit_flow(r.value) +
                        "'");
    if (r.value.size() == 0)
      throw ConfigError(where(file, r.value.Mark()) + ": sweep key '" + r.path +
                        "': the list of values is empty");
    SweepKey k;
    k.key = r.path;
    k.line = r.key.Mark().line + 1;
    std::set<std::string> distinct;
    for (const auto& v : r.value) {
      std::string text = emit_flow(v);
      if (!distinct.insert(text).second)
        throw ConfigError(where(file, v.Mark()) + ": sweep key '" + r.path + "': value '" + text +
                          "' is listed twice");
      // Each value must be one the key accepts: validate it like a --set, report it here.
      std::vector<std::string> one = sets;
      one.push_back(r.path + "=" + text);
      try {
        (void)Config::load_text(schema, s.base_yaml_, file, one);
      } catch (const ConfigError& e) {
        std::string msg = e.what();
        const std::string prefix = "--set: key '" + r.path + "': ";
        if (msg.rfind(prefix, 0) == 0) msg = msg.substr(prefix.size());
        throw ConfigError(where(file, v.Mark()) + ": sweep key '" + r.path + "': " + msg);
      }
      k.values.push_back(text);
    }
    if (s.size_ > kMaxRuns / k.values.size())
      throw ConfigError(at + ": the sweep has more than " + std::to_string(kMaxRuns) + " runs");
    s.size_ *= k.values.size();
    s.keys_.push_back(std::move(k));
  }
  const std::string name = s.base_.get_string("name");
  if (name.empty()) throw ConfigError(file + ": key 'name' must not be empty in a sweep");
  return s;
}

SweepRun Sweep::run(size_t index) const {
  if (index >= size_)
    throw std::out_of_range("sweep run " + std::to_string(index) + " does not exist (the sweep has " +
                            std::to_string(size_) + " runs, 0.." + std::to_string(size_ - 1) + ")");
  SweepRun r;
  r.index = index;
  r.overrides.resize(keys_.size());
  size_t rest = index;
  for (size_t k = keys_.size(); k-- > 0;) {  // the last key varies fastest
    const auto& vals = keys_[k].values;
    r.overrides[k] = {keys_[k].key, vals[rest % vals.size()]};
    rest /= vals.size();
  }
  return r;
}

std::vector<SweepRun> Sweep::runs() const {
  std::vector<SweepRun> out;
  out.reserve(size_);
  for (size_t i = 0; i < size_; ++i) out.push_back(run(i));
  return out;
}

Config Sweep::config(size_t index) const {
  std::vector<std::string> all = sets_;
  for (auto& s : run(index).sets()) all.push_back(s);
  return Config::load_text(*schema_, base_yaml_, file_, all);
}

void Sweep::validate_all() const {
  for (size_t i = 0; i < size_; ++i) {
    try {
      (void)config(i);
    } catch (const ConfigError& e) {
      throw ConfigError(std::string(e.what()) + " (sweep run " + std::to_string(i) + ": " +
                        run(i).overrides_text() + ")");
    }
  }
}

fs::path Sweep::dir() const {
  return fs::path(base_.get_string("output.dir")) / base_.get_string("name");
}

std::string Sweep::run_file_name(size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "run_%04zu.h5", index);
  return buf;
}

fs::path Sweep::run_path(size_t index) const { return dir() / run_file_name(index); }

std::string Sweep::runs_tsv() const {
  std::string o = "index";
  for (const auto& k : keys_) {
    o += '\t';
    o += tsv_escape(k.key);
  }
  o += "\n";
  for (size_t i = 0; i < size_; ++i) {
    SweepRun r = run(i);
    o += std::to_string(i);
    for (const auto& kv : r.overrides) {
      o += '\t';
      o += tsv_escape(kv.second);
    }
    o += "\n";
  }
  return o;
}

void Sweep::write_files() const {
  const fs::path d = dir();
  fs::create_directories(d);
  const std::string tsv = runs_tsv();
  const fs::path tsv_path = d / "runs.tsv";
  if (fs::exists(tsv_path)) {
    std::string old = read_file(tsv_path.string(), io::kMaxRunsTableBytes, "sweep index");
    if (old != tsv)
      throw UsageError(d.string() + " holds another sweep: its runs.tsv numbers different runs "
                       "than " + file_ + " (the run files would not match their index); give "
                       "this sweep another name (--set name=...) or remove the folder");
  } else {
    io::write_file_atomically(tsv_path.string(), tsv);
  }
  std::string copy = "# copy of " + file_ + " (nnsplitter sweep)\n";
  for (const auto& s : sets_) copy += "# --set " + s + "\n";
  copy += text_;
  if (!copy.empty() && copy.back() != '\n') copy += '\n';
  const fs::path yaml_path = d / "sweep.yaml";
  // Rewritten unless it holds the copy already; anything that cannot (a larger file, one that
  // is unreadable or not a regular file) is replaced, or named by the writer's error.
  auto holds_copy = [&] {
    try {
      return io::read_input_file(yaml_path.string(), copy.size(), "copy of the sweep file") == copy;
    } catch (const io::InputFileError&) {
      return false;
    }
  };
  if (!holds_copy())
    io::write_file_atomically(yaml_path.string(), copy);
}

// ---------------------------------------------------------------------------------------------
// status and listing

RunStatus run_status(const Sweep& s, size_t index) {
  const fs::path p = s.run_path(index);
  if (h5::is_complete_result(p.string())) return RunStatus::Complete;
  std::error_code ec;
  fs::path state = p;
  state.replace_extension("");
  // A run that started has its state folder (a temporary of its result file lies beside it).
  if (fs::exists(p, ec) || fs::is_directory(state, ec))
    return RunStatus::Incomplete;
  return RunStatus::Pending;
}

const char* run_status_name(RunStatus st) {
  switch (st) {
    case RunStatus::Pending: return "pending";
    case RunStatus::Incomplete: return "incomplete";
    case RunStatus::Complete: return "complete";
  }
  return "?";
}

std::string sweep_listing(const Sweep& s) {
  std::ostringstream o;
  size_t counts[3] = {0, 0, 0};
  char buf[64];
  o << "index  status      overrides\n";
  for (size_t i = 0; i < s.size(); ++i) {
    RunStatus st = run_status(s, i);
    ++counts[int(st)];
    std::snprintf(buf, sizeof buf, "%5zu  %-10s  ", i, run_status_name(st));
    std::string ov = s.run(i).overrides_text();
    o << buf << (ov.empty() ? "(none)" : ov) << "\n";
  }
  o << s.size() << " run" << (s.size() == 1 ? "" : "s") << ": " << counts[int(RunStatus::Complete)]
    << " complete, " << counts[int(RunStatus::Incomplete)] << " incomplete, "
    << counts[int(RunStatus::Pending)] << " pending; results in " << s.dir().string() << "\n";
  return o.str();
}

// ---------------------------------------------------------------------------------------------
// runs.tsv

RunsTable read_runs_tsv(const fs::path& file) {
  if (io::non_regular_kind(file.string()) == "not found")
    throw UsageError(file.string() + " not found: not a sweep folder (nnsplitter sweep writes it)");
  std::istringstream in(read_file(file.string(), io::kMaxRunsTableBytes, "sweep index"));
  RunsTable t;
  std::string line;
  if (!std::getline(in, line) || split(line, '\t').at(0) != "index")
    throw std::runtime_error(file.string() + ":1: expected a header line starting with 'index'");
  auto head = split(line, '\t');
  for (size_t i = 1; i < head.size(); ++i) t.keys.push_back(tsv_unescape(head[i]));
  int lineno = 1;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    auto f = split(line, '\t');
    if (f.size() != head.size())
      throw std::runtime_error(file.string() + ":" + std::to_string(lineno) + ": expected " +
                               std::to_string(head.size()) + " tab-separated fields");
    int64_t idx = 0;
    auto r = std::from_chars(f[0].data(), f[0].data() + f[0].size(), idx);
    if (r.ec != std::errc() || r.ptr != f[0].data() + f[0].size() || idx < 0)
      throw std::runtime_error(file.string() + ":" + std::to_string(lineno) + ": bad index '" +
                               f[0] + "'");
    t.index.push_back(idx);
    std::vector<std::string> vals;
    for (size_t i = 1; i < f.size(); ++i) vals.push_back(tsv_unescape(f[i]));
    t.values.push_back(std::move(vals));
  }
  return t;
}

// ---------------------------------------------------------------------------------------------
// Slurm

SlurmScripts slurm_scripts(const Sweep& s, const std::string& binary, const std::string& workdir) {
  const Config& c = s.base();
  const fs::path dir = fs::absolute(s.dir()).lexically_normal();
  const std::string logs = slurm_escape_percent((dir / "logs").string());
  const std::string name = job_name_word("nns-" + c.get_string("name"));
  const std::string partition = c.get_string("slurm.partition");
  const int64_t gpus = c.get_int("slurm.gpus");
  const int64_t cpus = c.get_int("slurm.cpus");
  const int64_t max_parallel = c.get_int("slurm.max_parallel");

  auto common = [&](std::ostringstream& o) {
    o << "#SBATCH --chdir=" << sbatch_word(workdir) << "\n";
    o << "#SBATCH --nodes=1\n#SBATCH --ntasks=1\n";
    if (!partition.empty()) o << "#SBATCH --partition=" << sbatch_word(partition) << "\n";
  };
  auto env = [&](std::ostringstream& o, int64_t threads) {
    o << "\n";
    o << "# Threads follow the allocation; HDF5 file locking fails on many cluster filesystems.\n";
    o << "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-" << threads << "}\n";
    o << "export OPENBLAS_NUM_THREADS=$OMP_NUM_THREADS\n";
    o << "export HDF5_USE_FILE_LOCKING=${HDF5_USE_FILE_LOCKING:-FALSE}\n";
  };

  SlurmScripts out;
  {
    std::ostringstream o;
    o << "#!/bin/bash\n";
    o << "# nnsplitter sweep: " << s.size() << " run" << (s.size() == 1 ? "" : "s") << " of "
      << s.file() << ", one array task each.\n";
    o << "# Results: " << dir.string() << "/run_NNNN.h5; logs: " << dir.string()
      << "/logs/<job>_<task>.out|err.\n";
    o << "# A task whose result is complete exits at once, so submitting this script again\n";
    o << "# resumes an interrupted sweep. USR1 60 s before the time limit (TERM at it) makes a\n";
    o << "# run save its resumable state and exit 1.\n";
    o << "#SBATCH --job-name=" << name << "\n";
    o << "#SBATCH --array=0-" << (s.size() - 1) << "%" << max_parallel << "\n";
    o << "#SBATCH --output=" << sbatch_word(logs + "/%A_%a.out") << "\n";
    o << "#SBATCH --error=" << sbatch_word(logs + "/%A_%a.err") << "\n";
    common(o);
    o << "#SBATCH --cpus-per-task=" << cpus << "\n";
    o << "#SBATCH --mem=" << c.get_string("slurm.mem") << "\n";
    o << "#SBATCH --time=" << c.get_string("slurm.time") << "\n";
    if (gpus > 0) o << "#SBATCH --gres=gpu:" << gpus << "\n";
    o << "#SBATCH --signal=B:USR1@60\n";
    env(o, cpus);
    o << "\n# exec: nnsplitter is the batch shell itself and receives the signals.\n";
    o << "exec " << shell_quote(binary) << " sweep " << shell_quote(s.file())
      << " --task \"$SLURM_ARRAY_TASK_ID\"";
    for (const auto& set : s.sets()) o << " --set " << shell_quote(set);
    o << "\n";
    out.array = o.str();
  }
  {
    std::ostringstream o;
    o << "#!/bin/bash\n";
    o << "# nnsplitter collect: merges the complete runs of " << dir.string() << "\n";
    o << "# into summary.h5 and summary.csv (queued after the array job with afterok).\n";
    o << "#SBATCH --job-name=" << job_name_word(name + "-collect") << "\n";
    o << "#SBATCH --output=" << sbatch_word(logs + "/collect_%j.out") << "\n";
    o << "#SBATCH --error=" << sbatch_word(logs + "/collect_%j.err") << "\n";
    common(o);
    o << "#SBATCH --cpus-per-task=1\n";
    o << "#SBATCH --mem=1G\n";
    o << "#SBATCH --time=00:10:00\n";
    env(o, 1);
    o << "\nexec " << shell_quote(binary) << " collect " << shell_quote(dir.string()) << "\n";
    out.collect = o.str();
  }
  return out;
}

std::vector<std::string> sbatch_array_command(const std::string& script) {
  return {"sbatch", "--parsable", script};
}

std::vector<std::string> sbatch_collect_command(const std::string& script,
                                                const std::string& array_job_id) {
  return {"sbatch", "--parsable", "--dependency=afterok:" + array_job_id,
          "--kill-on-invalid-dep=yes", script};
}

std::string parse_sbatch_job_id(const std::string& out) {
  std::string s = out;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  // Take the last line (sbatch may print warnings first), then the part before ";cluster".
  auto nl = s.rfind('\n');
  if (nl != std::string::npos) s = s.substr(nl + 1);
  s = s.substr(0, s.find(';'));
  if (s.empty() || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    throw std::runtime_error("sbatch printed no job id (got '" + out + "')");
  return s;
}

std::pair<int, std::string> run_program(const std::vector<std::string>& argv) {
  if (argv.empty()) throw std::logic_error("run_program: empty command");
  std::string exe = argv[0];
  if (exe.find('/') == std::string::npos) {
    const char* path = std::getenv("PATH");
    std::string found;
    for (const auto& d : split(path ? path : "", ':')) {
      fs::path cand = fs::path(d.empty() ? "." : d) / exe;
      if (access(cand.c_str(), X_OK) == 0 && !fs::is_directory(cand)) {
        found = cand.string();
        break;
      }
    }
    if (found.empty()) throw std::runtime_error(exe + " not found on PATH");
    exe = found;
  }
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&fa, fds[0]);
  posix_spawn_file_actions_addclose(&fa, fds[1]);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    throw std::runtime_error("cannot run " + exe + ": " + std::strerror(rc));
  }
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = read(fds[0], buf, sizeof buf);
    if (n > 0) out.append(buf, size_t(n));
    else if (n < 0 && errno == EINTR) continue;
    else break;
  }
  close(fds[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) throw std::runtime_error("waitpid: " + std::string(std::strerror(errno)));
  int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  return {code, out};
}

// ---------------------------------------------------------------------------------------------
// collect

Summary read_summary(const fs::path& dir) {
  RunsTable t = read_runs_tsv(dir / "runs.tsv");
  Summary s;
  s.keys = t.keys;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (size_t r = 0; r < t.index.size(); ++r) {
    const fs::path p = dir / Sweep::run_file_name(size_t(t.index[r]));
    if (!h5::is_complete_result(p.string())) {
      s.missing.push_back(t.index[r]);
      continue;
    }
    h5::File f = h5::File::open_read(p.string());
    auto num = [&](const char* path) { return f.exists(path) ? f.read_double(path) : nan; };
    SummaryRow row;
    row.index = t.index[r];
    row.run_name = f.has_attr("/", "run_name") ? f.attr_string("/", "run_name")
                                               : p.stem().string();
    row.swept = t.values[r];
    row.original_accuracy = num("accuracy/original");
    row.obfuscated_accuracy = num("accuracy/obfuscated");
    row.restored_accuracy = num("accuracy/restored");
    double w = num("weights/obfuscated_total");
    row.obfuscated_weights = std::isnan(w) ? -1 : int64_t(std::llround(w));
    row.obfuscated_fraction = num("weights/obfuscated_fraction");
    row.at_bounds_fraction = num("stealth/at_bounds_fraction");
    row.ks_distance = num("stealth/ks_distance");
    row.seconds = num("times/total");
    for (auto& [name, v] : attack_columns(f)) {
      if (std::find(s.attack_keys.begin(), s.attack_keys.end(), name) == s.attack_keys.end())
        s.attack_keys.push_back(name);
      row.attacks[name] = v;
    }
    s.rows.push_back(std::move(row));
  }
  return s;
}

namespace {

double attack_value(const SummaryRow& r, const std::string& key) {
  auto it = r.attacks.find(key);
  return it == r.attacks.end() ? std::numeric_limits<double>::quiet_NaN() : it->second;
}

// How a column is shown: accuracies and fractions in %, counts as integers.
std::string cell(const std::string& column, double v) {
  if (std::isnan(v)) return "-";
  char b[48];
  if (column == "weights" || column == "secrets_bytes")
    std::snprintf(b, sizeof b, "%.0f", v);
  else if (column == "seconds")
    std::snprintf(b, sizeof b, "%.1f", v);
  else
    std::snprintf(b, sizeof b, "%.2f%%", 100 * v);
  return b;
}

std::string mean_sd_cell(const std::string& column, const std::vector<double>& v) {
  double s = 0;
  size_t n = 0;
  for (double x : v)
    if (!std::isnan(x)) {
      s += x;
      ++n;
    }
  if (n == 0) return "-";
  const double mean = s / double(n);
  double q = 0;
  for (double x : v)
    if (!std::isnan(x)) q += (x - mean) * (x - mean);
  const double sd = n > 1 ? std::sqrt(q / double(n - 1)) : 0.0;
  const bool scaled = column != "weights" && column != "secrets_bytes" && column != "seconds";
  char b[64];
  std::snprintf(b, sizeof b, scaled ? "%.2f±%.2f" : "%.0f±%.0f", scaled ? 100 * mean : mean,
                scaled ? 100 * sd : sd);
  return b;
}

// The numbers of a row, in the order of summary_columns.
std::vector<double> row_numbers(const Summary& s, const SummaryRow& r) {
  std::vector<double> v = {r.original_accuracy, r.obfuscated_accuracy, r.restored_accuracy,
                           r.obfuscated_weights < 0 ? std::nan("") : double(r.obfuscated_weights),
                           r.at_bounds_fraction, r.ks_distance};
  for (const auto& k : s.attack_keys) v.push_back(attack_value(r, k));
  v.push_back(r.seconds);
  return v;
}

std::vector<std::string> summary_columns(const Summary& s) {
  std::vector<std::string> c = {"original", "obfuscated", "restored", "weights", "at_bounds",
                                "ks"};
  for (const auto& k : s.attack_keys) c.push_back(k);
  c.push_back("seconds");
  return c;
}

// Columns [text_begin, text_end) are text (left-aligned), the rest numbers (right-aligned).
std::string align(const std::vector<std::vector<std::string>>& cells, size_t text_begin,
                  size_t text_end) {
  std::vector<size_t> width;
  for (const auto& row : cells) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::ostringstream o;
  for (const auto& row : cells) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      const bool left = i >= text_begin && i < text_end;
      std::string pad(width[i] - row[i].size(), ' ');
      line += (i ? "  " : "") + (left ? row[i] + pad : pad + row[i]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    o << line << "\n";
  }
  return o.str();
}

// Rows grouped by every swept key except `seed`, numbers as mean ± sd over each group.
std::string seed_table(const Summary& s, size_t seed_key) {
  const auto columns = summary_columns(s);
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> head;
  for (size_t k = 0; k < s.keys.size(); ++k)
    if (k != seed_key) head.push_back(s.keys[k]);
  head.push_back("seeds");
  for (const auto& c : columns) head.push_back(c);
  cells.push_back(head);
  std::vector<std::vector<std::string>> groups;  // first-seen order
  std::map<std::vector<std::string>, std::vector<const SummaryRow*>> members;
  for (const auto& r : s.rows) {
    std::vector<std::string> g;
    for (size_t k = 0; k < s.keys.size(); ++k)
      if (k != seed_key) g.push_back(r.swept.at(k));
    if (!members.count(g)) groups.push_back(g);
    members[g].push_back(&r);
  }
  for (const auto& g : groups) {
    std::vector<std::string> row = g;
    row.push_back(std::to_string(members[g].size()));
    for (size_t c = 0; c < columns.size(); ++c) {
      std::vector<double> v;
      for (const auto* r : members[g]) v.push_back(row_numbers(s, *r)[c]);
      row.push_back(mean_sd_cell(columns[c], v));
    }
    cells.push_back(row);
  }
  return "mean ± sd over seeds (sample sd):\n" + align(cells, 0, s.keys.size() - 1);
}

}  // namespace

std::string summary_csv(const Summary& s) {
  std::ostringstream o;
  o << "index,run_name";
  for (const auto& k : s.keys) o << "," << csv_field(k);
  o << ",original_accuracy,obfuscated_accuracy,restored_accuracy,obfuscated_weights,"
       "obfuscated_fraction,at_bounds_fraction,ks_distance,seconds";
  for (const auto& k : s.attack_keys) o << "," << csv_field(k);
  o << "\n";
  for (const auto& r : s.rows) {
    o << r.index << "," << csv_field(r.run_name);
    for (const auto& v : r.swept) o << "," << csv_field(v);
    o << "," << format_double(r.original_accuracy) << "," << format_double(r.obfuscated_accuracy)
      << "," << format_double(r.restored_accuracy) << "," << r.obfuscated_weights << ","
      << format_double(r.obfuscated_fraction) << "," << format_double(r.at_bounds_fraction) << ","
      << format_double(r.ks_distance) << "," << format_double(r.seconds);
    for (const auto& k : s.attack_keys) o << "," << format_double(attack_value(r, k));
    o << "\n";
  }
  return o.str();
}

std::string summary_text(const Summary& s) {
  const auto columns = summary_columns(s);
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> head = {"index"};
  for (const auto& k : s.keys) head.push_back(k);
  for (const auto& c : columns) head.push_back(c);
  cells.push_back(head);
  for (const auto& r : s.rows) {
    std::vector<std::string> row = {std::to_string(r.index)};
    for (const auto& v : r.swept) row.push_back(v);
    const auto nums = row_numbers(s, r);
    for (size_t c = 0; c < columns.size(); ++c) row.push_back(cell(columns[c], nums[c]));
    cells.push_back(row);
  }
  std::ostringstream o;
  o << align(cells, 1, 1 + s.keys.size());
  if (!s.missing.empty()) {
    o << "missing or incomplete:";
    for (auto m : s.missing) o << " " << m;
    o << "\n";
  }
  auto seed = std::find(s.keys.begin(), s.keys.end(), "seed");
  if (seed != s.keys.end() && !s.rows.empty())
    o << "\n" << seed_table(s, size_t(seed - s.keys.begin()));
  return o.str();
}

nlohmann::json summary_json(const Summary& s) {
  auto num = [](double v) -> nlohmann::json {
    if (std::isnan(v)) return nullptr;
    return v;
  };
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& r : s.rows) {
    nlohmann::json sw = nlohmann::json::object();
    for (size_t k = 0; k < s.keys.size(); ++k) sw[s.keys[k]] = r.swept.at(k);
    runs.push_back({{"index", r.index},
                    {"run_name", r.run_name},
                    {"sweep", sw},
                    {"original_accuracy", num(r.original_accuracy)},
                    {"obfuscated_accuracy", num(r.obfuscated_accuracy)},
                    {"restored_accuracy", num(r.restored_accuracy)},
                    {"obfuscated_weights", r.obfuscated_weights},
                    {"obfuscated_fraction", num(r.obfuscated_fraction)},
                    {"at_bounds_fraction", num(r.at_bounds_fraction)},
                    {"ks_distance", num(r.ks_distance)},
                    {"seconds", num(r.seconds)}});
    nlohmann::json att = nlohmann::json::object();
    for (const auto& k : s.attack_keys) att[k] = num(attack_value(r, k));
    runs.back()["attacks"] = att;
  }
  return {{"keys", s.keys}, {"attack_keys", s.attack_keys}, {"runs", runs},
          {"missing", s.missing}};
}

void write_summary(const fs::path& dir, const Summary& s) {
  h5::write_atomically((dir / "summary.h5").string(), [&](h5::File& f) {
    f.attr("/", "format", "nnsplitter-summary-1");
    f.attr("/", "runs", int64_t(s.rows.size()));
    std::string missing;
    for (auto m : s.missing) missing += (missing.empty() ? "" : ",") + std::to_string(m);
    f.attr("/", "missing", missing);
    std::vector<int64_t> index, weights;
    std::vector<std::string> names;
    std::vector<double> orig, obf, rest, frac, bounds, ks, secs;
    for (const auto& r : s.rows) {
      index.push_back(r.index);
      names.push_back(r.run_name);
      orig.push_back(r.original_accuracy);
      obf.push_back(r.obfuscated_accuracy);
      rest.push_back(r.restored_accuracy);
      weights.push_back(r.obfuscated_weights);
      frac.push_back(r.obfuscated_fraction);
      bounds.push_back(r.at_bounds_fraction);
      ks.push_back(r.ks_distance);
      secs.push_back(r.seconds);
    }
    f.write("runs/index", index, "1");
    f.write("runs/run_name", names);
    for (size_t k = 0; k < s.keys.size(); ++k) {
      std::vector<std::string> col;
      for (const auto& r : s.rows) col.push_back(r.swept.at(k));
      f.write("runs/sweep/" + s.keys[k], col);
    }
    f.write("runs/original_accuracy", orig, "fraction");
    f.write("runs/obfuscated_accuracy", obf, "fraction");
    f.write("runs/restored_accuracy", rest, "fraction");
    f.write("runs/obfuscated_weights", weights, "count");
    f.write("runs/obfuscated_fraction", frac, "fraction");
    f.write("runs/at_bounds_fraction", bounds, "fraction");
    f.write("runs/ks_distance", ks, "1");
    f.write("runs/seconds", secs, "seconds");
    for (const auto& k : s.attack_keys) {
      std::vector<double> col;
      for (const auto& r : s.rows) col.push_back(attack_value(r, k));
      f.write("runs/attacks/" + k, col, k == "secrets_bytes" ? "bytes" : "fraction");
    }
  });
  io::write_file_atomically((dir / "summary.csv").string(), summary_csv(s));
}

// ---------------------------------------------------------------------------------------------
// helpers

std::string self_executable() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error("cannot find the path of this executable (/proc/self/exe)");
  return p.string();
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-./=:,+@%") == std::string::npos)
    return s;
  std::string o = "'";
  for (char c : s) o += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return o + "'";
}

}  // namespace nns::exp
