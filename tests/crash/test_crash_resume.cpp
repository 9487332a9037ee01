// SIGKILL at random moments: `protect`, `run` and `sweep` (tiny configs: lenet5 on the
// synthetic dataset, a few search steps) are killed again and again, then resumed, and after
// every kill and at the end the output folder is checked:
//   - after each kill: every result file present is complete and parses (safetensors, JSON,
//     HDF5 with its `format` attribute, text ending in a newline): nothing half-written;
//   - after the resumed run finishes: no temporary file is left anywhere, the same files exist
//     as after an uninterrupted run, and they hold the same result: weights and secrets byte for
//     byte, JSON and HDF5 equal apart from timings.
// Kills are of two kinds, drawn from a seeded generator (kSeed: the same plan every time):
//   - at a random time within the uninterrupted run's duration (any moment: data loading,
//     training, the search, attacks, writes);
//   - inside a chosen write (NNS_TEST_CRASH_AT, core/io/atomic_file.cpp): the temporary file
//     cut to half, written but not synced, synced but not renamed, renamed but the folder not
//     synced; half of them in the last writes of the run (the final results).
// Labelled `crash` in ctest. Each test kills at least kKillsPerCommand times (3 x 7 = 21).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include "child_process.h"
#include "core/io/atomic_file.h"
#include "core/io/safetensors.h"
#include "experiments/h5file.h"

namespace fs = std::filesystem;
using nns::test::ChildOptions;
using nns::test::ChildResult;
using nns::test::run_child;

namespace {

constexpr uint64_t kSeed = 20261205;
constexpr int kKillsPerCommand = 7;
const char* const kStages[] = {"half", "unsynced", "synced", "renamed"};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

fs::path temp_root(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("nns_crash_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Every regular file below `root`, relative, sorted; cache locks left out (they carry nothing).
std::set<std::string> files_below(const fs::path& root) {
  std::set<std::string> out;
  if (!fs::exists(root)) return out;  // killed before it made its output folder
  for (auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file() && e.path().extension() != ".lock")
      out.insert(fs::relative(e.path(), root).string());
  return out;
}

bool is_temporary(const std::string& rel) {
  const std::string name = fs::path(rel).filename().string();
  return nns::io::is_temporary_name(name) || name.find(".tmp") != std::string::npos;
}

// ---- "complete and parses"

void expect_complete(const fs::path& root, const std::string& context) {
  for (const auto& rel : files_below(root)) {
    if (is_temporary(rel)) continue;  // a killed writer's leftover; checked after the resume
    const fs::path p = root / rel;
    const std::string ext = p.extension().string();
    SCOPED_TRACE(context + ": " + rel);
    try {
      if (ext == ".safetensors" || ext == ".ckpt") {
        nns::io::read_safetensors(p.string());
      } else if (ext == ".json") {
        EXPECT_FALSE(nlohmann::json::parse(read_file(p)).is_discarded());
      } else if (ext == ".h5") {
        EXPECT_TRUE(nns::exp::h5::is_complete_result(p.string())) << "incomplete HDF5 file";
      } else if (ext == ".csv" || ext == ".tsv" || ext == ".yaml") {
        const std::string t = read_file(p);
        EXPECT_TRUE(!t.empty() && t.back() == '\n') << "text cut short";
      } else {
        ADD_FAILURE() << "unexpected file";
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << "does not parse: " << e.what();
    }
  }
}

// ---- "the same result"

// JSON equal apart from timings (keys named *seconds).
nlohmann::json without_timings(nlohmann::json j) {
  if (j.is_object()) {
    nlohmann::json o = nlohmann::json::object();
    for (auto& [k, v] : j.items())
      if (k.find("seconds") == std::string::npos) o[k] = without_timings(v);
    return o;
  }
  if (j.is_array())
    for (auto& v : j) v = without_timings(v);
  return j;
}

// Timings, and the victim's provenance: a resumed run finds the victim its killed attempt
// trained in the cache, and says so ("cache:<file>" instead of "trained"); the weights and
// curves are the same.
bool run_specific(const std::string& path) {
  return path.rfind("/times", 0) == 0 || path.find("seconds") != std::string::npos ||
         path.find("start_time") != std::string::npos ||
         path.find("end_time") != std::string::npos ||
         path == "/victim/source";
}

// Every dataset and attribute of `a` equal in `b` (and the same names), timings left out.
void expect_same_h5(const nns::exp::h5::File& a, const nns::exp::h5::File& b,
                    const std::string& group) {
  auto attr_value = [](const nns::exp::h5::File& f, const std::string& o, const std::string& n) {
    try {
      return f.attr_string(o, n);
    } catch (const std::exception&) {
      return std::to_string(f.attr_double(o, n));
    }
  };
  auto data_value = [](const nns::exp::h5::File& f, const std::string& d) {
    try {
      std::ostringstream s;
      s.precision(17);
      for (double v : f.read_doubles(d)) s << v << ",";
      return s.str();
    } catch (const std::exception&) {
      std::string s;
      for (auto& v : f.read_strings(d)) s += v + "\n";
      return s;
    }
  };
  auto check_attrs = [&](const std::string& obj) {
    EXPECT_EQ(a.attr_names(obj), b.attr_names(obj)) << obj;
    for (const auto& n : a.attr_names(obj))
      if (!run_specific(obj + "/" + n) && b.has_attr(obj, n))
        EXPECT_EQ(attr_value(a, obj, n), attr_value(b, obj, n)) << obj << " @" << n;
  };
  check_attrs(group);
  ASSERT_EQ(a.list(group), b.list(group)) << group;
  for (const auto& name : a.list(group)) {
    const std::string path = (group == "/" ? "/" : group + "/") + name;
    if (a.is_group(path)) {
      expect_same_h5(a, b, path);
      continue;
    }
    check_attrs(path);
    if (!run_specific(path)) EXPECT_EQ(data_value(a, path), data_value(b, path)) << path;
  }
}

void expect_same_results(const fs::path& ref, const fs::path& got, const std::string& context) {
  SCOPED_TRACE(context);
  const auto ref_files = files_below(ref), got_files = files_below(got);
  EXPECT_EQ(ref_files, got_files) << "other files than after an uninterrupted run";
  for (const auto& rel : got_files) EXPECT_FALSE(is_temporary(rel)) << "stray temporary: " << rel;
  for (const auto& rel : ref_files) {
    if (!got_files.count(rel)) continue;
    const std::string ext = fs::path(rel).extension().string();
    SCOPED_TRACE(rel);
    if (ext == ".json") {
      EXPECT_EQ(without_timings(nlohmann::json::parse(read_file(ref / rel))),
                without_timings(nlohmann::json::parse(read_file(got / rel))));
    } else if (ext == ".h5") {
      auto a = nns::exp::h5::File::open_read((ref / rel).string());
      auto b = nns::exp::h5::File::open_read((got / rel).string());
      expect_same_h5(a, b, "/");
    } else if (rel.find("summary.csv") != std::string::npos) {
      // The column `seconds` is the run's duration: dropped by its header position (attack
      // columns follow it).
      auto strip = [](const std::string& t) {
        std::vector<std::vector<std::string>> rows;
        std::string line, field;
        std::istringstream in(t);
        while (std::getline(in, line)) {
          rows.emplace_back();
          std::istringstream fields(line);
          while (std::getline(fields, field, ',')) rows.back().push_back(field);
        }
        size_t drop = std::string::npos;
        if (!rows.empty())
          for (size_t i = 0; i < rows[0].size(); ++i)
            if (rows[0][i] == "seconds") drop = i;
        std::string o;
        for (const auto& r : rows) {
          for (size_t i = 0; i < r.size(); ++i)
            if (i != drop) o += r[i] + ",";
          o += "\n";
        }
        return o;
      };
      EXPECT_NE(read_file(ref / rel).find(",seconds"), std::string::npos);
      EXPECT_EQ(strip(read_file(ref / rel)), strip(read_file(got / rel)));
    } else {
      EXPECT_TRUE(read_file(ref / rel) == read_file(got / rel)) << "bytes differ";
    }
  }
}

// ---- the kill loop

struct Command {
  std::vector<std::string> first, resume;  // argv of the first attempt and of a resume
  fs::path work;                           // the output, wiped before each chain
};

ChildOptions base_options(const fs::path& dir) {
  ChildOptions o;
  o.env = {"NNS_PROGRESS=off", "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1"};
  o.cwd = dir.string();
  return o;
}

// The uninterrupted run: its output copied to `ref`, its duration, the files it committed in
// order (NNS_TEST_CRASH_AT=log:FILE).
struct Reference {
  fs::path ref;
  double seconds = 0;
  std::vector<std::string> commits;
};

Reference reference_run(const Command& c, const fs::path& dir) {
  Reference r;
  fs::remove_all(c.work);
  ChildOptions o = base_options(dir);
  const fs::path log = dir / "commits.log";
  fs::remove(log);
  o.env.push_back("NNS_TEST_CRASH_AT=log:" + log.string());
  ChildResult res = run_child(c.first, o);
  EXPECT_TRUE(res.exited && res.code == 0) << res.output;
  r.seconds = res.seconds;
  std::istringstream in(read_file(log));
  for (std::string line; std::getline(in, line);) r.commits.push_back(line);
  r.ref = dir / "reference";
  fs::remove_all(r.ref);
  fs::copy(c.work, r.ref, fs::copy_options::recursive);
  return r;
}

// Kills the command kKillsPerCommand times in chains (a chain: the first attempt killed, then
// resumes killed, then a resume to the end), checking the folder after each kill and at the
// end of each chain. Returns the number of kills.
int kill_and_resume(const Command& c, const fs::path& dir, uint64_t seed) {
  const Reference ref = reference_run(c, dir);
  EXPECT_GE(ref.commits.size(), 4u) << "the run committed too few files to aim at";
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> unit(0.02, 0.98);
  int kills = 0, chains = 0;
  for (int attempt = 0; kills < kKillsPerCommand && attempt < 4 * kKillsPerCommand;) {
    fs::remove_all(c.work);
    const int chain_length = 1 + int(rng() % 3);
    std::string trace = "chain " + std::to_string(++chains) + ":";
    for (int k = 0; k < chain_length && kills < kKillsPerCommand; ++k, ++attempt) {
      ChildOptions o = base_options(dir);
      // A write aimed at in the first attempt (whose writes are those of the reference run),
      // a moment anywhere in the run otherwise and for one first attempt in two.
      if (k == 0 && rng() % 2 == 0) {
        const size_t n = ref.commits.size();
        const size_t last = rng() % 2 == 0 ? n - 1 - rng() % std::min<size_t>(3, n)
                                            : rng() % n;
        const char* stage = kStages[rng() % 4];
        o.env.push_back("NNS_TEST_CRASH_AT=" + std::string(stage) + ":" + std::to_string(last + 1));
        trace += std::string(" [") + stage + " in write " + std::to_string(last + 1) + " of " +
                 std::to_string(n) + ": " + fs::path(ref.commits[last]).filename().string() + "]";
      } else {
        o.kill_after = unit(rng) * ref.seconds;
        trace += " [at " + std::to_string(*o.kill_after) + " s]";
      }
      ChildResult r = run_child(k == 0 ? c.first : c.resume, o);
      if (!r.killed()) {  // it finished first
        EXPECT_TRUE(r.exited && r.code == 0) << trace << "\n" << r.output;
        trace += " finished";
        break;
      }
      ++kills;
      expect_complete(c.work, trace);
    }
    ChildOptions o = base_options(dir);
    ChildResult r = run_child(c.resume, o);
    if (!(r.exited && r.code == 0)) {
      ADD_FAILURE() << trace << ": the resume failed\n" << r.output;
      return kills;
    }
    expect_same_results(ref.ref, c.work, trace);
    std::fprintf(stderr, "%s: resumed, same result\n", trace.c_str());
  }
  return kills;
}

fs::path binary() { return fs::path(NNS_BINARY); }

const char* kTinyMethod =
    "splitter:\n  max_steps: 4\n  val_size: 200\n  eval_every: 2\n"
    "controller:\n  updates: 3\n  episodes_per_update: 2\n  hidden: 16\n  token_size: 8\n";

std::string tiny_run_config(const std::string& name) {
  return "name: " + name +
         "\nseed: 3\ndataset:\n  name: synthetic\nmodel:\n  arch: lenet5\n"
         "victim:\n  epochs: 2\n  batch: 64\n" +
         std::string(kTinyMethod) +
         "attacks:\n  kinds: [norm_clip]\n  norm_clip:\n    k: [2]\n"
         "output:\n  dir: out\n  plots: false\n";
}

}  // namespace

TEST(CrashResume, Protect) {
  const fs::path dir = temp_root("protect");
  ChildResult t = run_child({binary().string(), "train", "--model", "lenet5", "--dataset",
                             "synthetic", "--epochs", "1", "--batch", "64", "--out",
                             "victim.safetensors"},
                            base_options(dir));
  ASSERT_TRUE(t.exited && t.code == 0) << t.output;
  write_file(dir / "method.yaml", kTinyMethod);
  Command c;
  c.first = {binary().string(), "protect", "--weights", "victim.safetensors", "--dataset",
             "synthetic", "--config", "method.yaml", "--seed", "5", "--out", "prot"};
  c.resume = c.first;
  c.resume.push_back("--resume");
  c.work = dir / "prot";
  EXPECT_GE(kill_and_resume(c, dir, kSeed), kKillsPerCommand);
  if (!HasFailure()) fs::remove_all(dir);
}

TEST(CrashResume, Run) {
  const fs::path dir = temp_root("run");
  write_file(dir / "tiny.yaml", tiny_run_config("tiny"));
  Command c;
  c.first = c.resume = {binary().string(), "run", "tiny.yaml"};
  c.work = dir / "out";
  EXPECT_GE(kill_and_resume(c, dir, kSeed + 1), kKillsPerCommand);
  if (!HasFailure()) fs::remove_all(dir);
}

TEST(CrashResume, Sweep) {
  const fs::path dir = temp_root("sweep");
  write_file(dir / "grid.yaml", tiny_run_config("grid") + "sweep:\n  splitter.k: [1, 2]\n");
  Command c;
  c.first = c.resume = {binary().string(), "sweep", "grid.yaml"};
  c.work = dir / "out";
  EXPECT_GE(kill_and_resume(c, dir, kSeed + 2), kKillsPerCommand);
  if (!HasFailure()) fs::remove_all(dir);
}
