// Sweeps: expansion order and numbering, validation with file:line, the run-status/resume logic
// (with pre-made result files instead of real runs), --list, the Slurm batch scripts (text only:
// no Slurm needed), collect's summary files, and the CLI's exit codes.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "cli_runner.h"
#include "core/io/atomic_file.h"
#include "experiments/experiment.h"
#include "experiments/h5file.h"
#include "experiments/protect.h"
#include "experiments/sweep.h"

namespace fs = std::filesystem;
using namespace nns::exp;

namespace {

using Result = nns::test::CliResult;
using nns::test::run_cli;

fs::path temp_dir(const std::string& name) { return nns::test::fresh_temp_dir("nns_sweep", name); }

fs::path write(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p;
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// The base of the sweep files of these tests: results under `dir`.
std::string base(const fs::path& dir, const std::string& name = "grid") {
  return "name: " + name + "\noutput:\n  dir: " + (dir / "out").string() +
         "\ndataset:\n  name: synthetic\nmodel:\n  arch: lenet5\n";
}

// A result file as run_experiment writes it (only what collect reads).
void make_complete(const fs::path& p, double obf, const std::string& run_name) {
  h5::write_atomically(p.string(), [&](h5::File& f) {
    f.attr("/", "format", "nnsplitter-run-1");
    f.attr("/", "run_name", run_name);
    f.write("accuracy/original", 0.9, "fraction");
    f.write("accuracy/obfuscated", obf, "fraction");
    f.write("accuracy/restored", 0.9, "fraction");
    f.write("weights/obfuscated_total", int64_t(42), "count");
    f.write("weights/obfuscated_fraction", 0.001, "fraction");
    f.write("stealth/at_bounds_fraction", 0.5, "fraction");
    f.write("stealth/ks_distance", 0.01, "1");
    f.write("times/total", 3.5, "seconds");
  });
}

// An HDF5 file without the `format` attribute: not a complete result.
void make_incomplete(const fs::path& p) {
  h5::File f = h5::File::create(p.string());
  f.write("accuracy/original", 0.9, "fraction");
  f.close();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("(not a ConfigError) ") + e.what();
  }
  return "(no error)";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// expansion

TEST(Sweep, CartesianProductInFileOrderLastKeyFastest) {
  auto d = temp_dir("order");
  auto f = write(d / "s.yaml", base(d) + "sweep:\n  seed: [0, 1, 2]\n  splitter.k: [1, 2]\n");
  Sweep s = Sweep::load(experiment_schema(), f.string());
  ASSERT_EQ(s.size(), 6u);
  ASSERT_EQ(s.keys().size(), 2u);
  EXPECT_EQ(s.keys()[0].key, "seed");
  EXPECT_EQ(s.keys()[1].key, "splitter.k");
  const char* expect[6] = {"seed=0 splitter.k=1", "seed=0 splitter.k=2", "seed=1 splitter.k=1",
                           "seed=1 splitter.k=2", "seed=2 splitter.k=1", "seed=2 splitter.k=2"};
  for (size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(s.run(i).index, i);
    EXPECT_EQ(s.run(i).overrides_text(), expect[i]) << i;
  }
  // The configs carry the values.
  Config c = s.config(3);
  EXPECT_EQ(c.get_int("seed"), 1);
  EXPECT_EQ(c.get_int("splitter.k"), 2);
  EXPECT_EQ(c.get_string("dataset.name"), "synthetic");
  EXPECT_THROW(s.run(6), std::out_of_range);
  EXPECT_EQ(s.dir(), d / "out" / "grid");
  EXPECT_EQ(s.run_path(5), d / "out" / "grid" / "run_0005.h5");
  EXPECT_EQ(Sweep::run_file_name(12345), "run_12345.h5");
  EXPECT_NO_THROW(s.validate_all());
}

TEST(Sweep, OrderIsTheWrittenOrderNotAlphabeticalNorFlowVsBlock) {
  auto d = temp_dir("order2");
  // Keys written in reverse alphabetical order, flow style, one of them nested.
  auto f1 = write(d / "a.yaml", base(d) + "sweep: {splitter: {k: [3, 1]}, seed: [5, 4]}\n");
  auto f2 = write(d / "b.yaml",
                  base(d) + "sweep:\n  splitter.k:\n    - 3\n    - 1\n  seed:\n    - 5\n    - 4\n");
  // The sweep block first, before the base keys.
  auto f3 = write(d / "c.yaml", "sweep:\n  splitter.k: [3, 1]\n  seed: [5, 4]\n" + base(d));
  for (auto f : {f1, f2, f3}) {
    Sweep s = Sweep::load(experiment_schema(), f.string());
    ASSERT_EQ(s.size(), 4u) << f;
    EXPECT_EQ(s.run(0).overrides_text(), "splitter.k=3 seed=5") << f;
    EXPECT_EQ(s.run(1).overrides_text(), "splitter.k=3 seed=4") << f;
    EXPECT_EQ(s.run(2).overrides_text(), "splitter.k=1 seed=5") << f;
    EXPECT_EQ(s.run(3).overrides_text(), "splitter.k=1 seed=4") << f;
    EXPECT_EQ(s.config(0).get_string("dataset.name"), "synthetic") << f;
  }
  // Loading again gives the same numbering.
  EXPECT_EQ(Sweep::load(experiment_schema(), f1.string()).runs_tsv(),
            Sweep::load(experiment_schema(), f2.string()).runs_tsv());
  EXPECT_EQ(Sweep::load(experiment_schema(), f1.string()).runs_tsv(),
            "index\tsplitter.k\tseed\n0\t3\t5\n1\t3\t4\n2\t1\t5\n3\t1\t4\n");
}

// Three keys, two of them in one section and one at the top: the YAML library's map order
// differs from the written order, so the keys must be reordered without YAML::Node assignment
// (which writes through instead of rebinding: seed's values once turned up under splitter.k).
TEST(Sweep, ThreeKeysKeepTheirOwnValues) {
  auto d = temp_dir("three");
  auto f = write(d / "s.yaml", base(d) +
                                   "sweep:\n  splitter.k: [1]\n  splitter.lr: [0.1, 0.2]\n"
                                   "  seed: [0, 1, 2]\n");
  Sweep s = Sweep::load(experiment_schema(), f.string());
  ASSERT_EQ(s.size(), 6u);
  ASSERT_EQ(s.keys().size(), 3u);
  EXPECT_EQ(s.keys()[0].key, "splitter.k");
  EXPECT_EQ(s.keys()[1].key, "splitter.lr");
  EXPECT_EQ(s.keys()[2].key, "seed");
  EXPECT_EQ(s.run(0).overrides_text(), "splitter.k=1 splitter.lr=0.1 seed=0");
  EXPECT_EQ(s.run(5).overrides_text(), "splitter.k=1 splitter.lr=0.2 seed=2");
  EXPECT_EQ(s.config(4).get_int("seed"), 1);
}

TEST(Sweep, ListValuedKeysStringsAndSets) {
  auto d = temp_dir("lists");
  auto f = write(d / "s.yaml", base(d) +
                                   "sweep:\n  attacks.kinds: [[norm_clip], [norm_clip, finetune]]\n"
                                   "  splitter.clamp: [auto, [-0.5, 0.5]]\n");
  Sweep s = Sweep::load(experiment_schema(), f.string(), {"seed=7"});
  ASSERT_EQ(s.size(), 4u);
  EXPECT_EQ(s.run(1).overrides_text(), "attacks.kinds=[norm_clip] splitter.clamp=[-0.5, 0.5]");
  Config c = s.config(3);
  EXPECT_EQ(c.get_strings("attacks.kinds"), (std::vector<std::string>{"norm_clip", "finetune"}));
  EXPECT_EQ(c.get_pair("splitter.clamp"), (std::pair<double, double>{-0.5, 0.5}));
  EXPECT_EQ(c.get_int("seed"), 7);  // --set applies to every run
  EXPECT_EQ(s.base().get_int("seed"), 7);
}

TEST(Sweep, FileWithoutSweepBlockIsOneRun) {
  auto d = temp_dir("single");
  auto f = write(d / "s.yaml", base(d));
  Sweep s = Sweep::load(experiment_schema(), f.string());
  EXPECT_EQ(s.size(), 1u);
  EXPECT_EQ(s.run(0).overrides_text(), "");
  EXPECT_EQ(s.runs_tsv(), "index\n0\n");
}

// ---------------------------------------------------------------------------------------------
// validation

TEST(Sweep, ErrorsCarryFileLineAndKey) {
  auto d = temp_dir("errors");
  const auto& schema = experiment_schema();
  auto load = [&](const std::string& name, const std::string& text,
                  std::vector<std::string> sets = {}) {
    auto f = write(d / name, text);
    return error_of([&] { Sweep::load(schema, f.string(), sets); });
  };
  const std::string b = base(d);  // 7 lines
  std::string e = load("unknown.yaml", b + "sweep:\n  seed: [0, 1]\n  splitter.kk: [1, 2]\n");
  EXPECT_TRUE(contains(e, "unknown.yaml:10:")) << e;
  EXPECT_TRUE(contains(e, "'splitter.kk'")) << e;
  EXPECT_FALSE(contains(e, "not a ConfigError")) << e;

  e = load("scalar.yaml", b + "sweep:\n  seed: 3\n");
  EXPECT_TRUE(contains(e, "scalar.yaml:9:")) << e;
  EXPECT_TRUE(contains(e, "expected a list")) << e;

  e = load("map.yaml", b + "sweep:\n  seed: {a: 1}\n");
  EXPECT_TRUE(contains(e, "map.yaml:9:")) << e;
  EXPECT_TRUE(contains(e, "expected a list")) << e;

  e = load("empty.yaml", b + "sweep:\n  seed: []\n");
  EXPECT_TRUE(contains(e, "empty.yaml:9:")) << e;
  EXPECT_TRUE(contains(e, "empty")) << e;

  e = load("badvalue.yaml", b + "sweep:\n  splitter.k:\n    - 1\n    - two\n");
  EXPECT_TRUE(contains(e, "badvalue.yaml:11:")) << e;
  EXPECT_TRUE(contains(e, "'splitter.k'")) << e;
  EXPECT_TRUE(contains(e, "two")) << e;

  e = load("range.yaml", b + "sweep:\n  splitter.k: [1, 0]\n");
  EXPECT_TRUE(contains(e, "range.yaml:9:")) << e;
  EXPECT_TRUE(contains(e, ">= 1")) << e;

  e = load("section.yaml", b + "sweep:\n  splitter: [1, 2]\n");
  EXPECT_TRUE(contains(e, "section.yaml:9:")) << e;
  EXPECT_TRUE(contains(e, "section")) << e;

  e = load("notmap.yaml", b + "sweep: [seed, 1]\n");
  EXPECT_TRUE(contains(e, "notmap.yaml:8:")) << e;

  e = load("dup.yaml", b + "sweep:\n  seed: [0, 1]\n  splitter: {k: [1]}\n  splitter.k: [2]\n");
  EXPECT_TRUE(contains(e, "dup.yaml:11:")) << e;
  EXPECT_TRUE(contains(e, "twice")) << e;

  e = load("dupvalue.yaml", b + "sweep:\n  seed: [0, 1, 0]\n");
  EXPECT_TRUE(contains(e, "dupvalue.yaml:9:")) << e;

  for (auto key : {"name", "output.dir", "slurm.time"}) {
    e = load("forbidden.yaml", b + "sweep:\n  " + std::string(key) + ": [a, b]\n");
    EXPECT_TRUE(contains(e, "forbidden.yaml:9:")) << e;
    EXPECT_TRUE(contains(e, "cannot be swept")) << e;
  }

  e = load("setswept.yaml", b + "sweep:\n  seed: [0, 1]\n", {"seed=3"});
  EXPECT_TRUE(contains(e, "setswept.yaml:9:")) << e;
  EXPECT_TRUE(contains(e, "--set")) << e;

  // An error of the base config keeps its own line although the sweep block came first.
  e = load("base.yaml", "sweep:\n  seed: [0, 1]\n\nsplitter:\n  kk: 1\n");
  EXPECT_TRUE(contains(e, "base.yaml:5:")) << e;
  EXPECT_TRUE(contains(e, "'splitter.kk'")) << e;

  e = load("yaml.yaml", b + "sweep:\n  seed: [0, 1\n");
  EXPECT_TRUE(contains(e, "yaml.yaml:")) << e;
  EXPECT_TRUE(contains(e, "invalid YAML")) << e;

  e = error_of([&] { Sweep::load(schema, (d / "nope.yaml").string()); });
  EXPECT_TRUE(contains(e, "not found")) << e;
}

TEST(Sweep, LoadTextMatchesLoad) {
  auto d = temp_dir("loadtext");
  const auto& schema = experiment_schema();
  std::string text = base(d) + "splitter:\n  k: 3\n";
  auto f = write(d / "c.yaml", text);
  Config a = Config::load(schema, f.string(), {"seed=4"});
  Config b = Config::load_text(schema, text, f.string(), {"seed=4"});
  EXPECT_EQ(a.effective_yaml(), b.effective_yaml());
  EXPECT_EQ(b.source(), f.string());
  std::string e = error_of([&] { Config::load_text(schema, "seed: 1\nfoo: 2\n", "t.yaml", {}); });
  EXPECT_TRUE(contains(e, "t.yaml:2:")) << e;
}

// ---------------------------------------------------------------------------------------------
// the folder, run status and resume

TEST(Sweep, FilesStatusAndListing) {
  auto d = temp_dir("status");
  auto f = write(d / "s.yaml", base(d) + "sweep:\n  seed: [0, 1]\n  splitter.k: [1, 2]\n");
  Sweep s = Sweep::load(experiment_schema(), f.string());
  s.write_files();
  EXPECT_EQ(read(s.dir() / "runs.tsv"), s.runs_tsv());
  EXPECT_TRUE(contains(read(s.dir() / "sweep.yaml"), read(f)));
  RunsTable t = read_runs_tsv(s.dir() / "runs.tsv");
  EXPECT_EQ(t.keys, (std::vector<std::string>{"seed", "splitter.k"}));
  EXPECT_EQ(t.index, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(t.values[2], (std::vector<std::string>{"1", "1"}));

  make_complete(s.run_path(1), 0.1, "grid/run_0001");
  make_incomplete(s.run_path(2));
  fs::create_directories(s.dir() / "run_0003");  // resumable state of an interrupted run
  EXPECT_EQ(run_status(s, 0), RunStatus::Pending);
  EXPECT_EQ(run_status(s, 1), RunStatus::Complete);
  EXPECT_EQ(run_status(s, 2), RunStatus::Incomplete);
  EXPECT_EQ(run_status(s, 3), RunStatus::Incomplete);
  std::string l = sweep_listing(s);
  EXPECT_TRUE(contains(l, "    0  pending     seed=0 splitter.k=1\n")) << l;
  EXPECT_TRUE(contains(l, "    1  complete    seed=0 splitter.k=2\n")) << l;
  EXPECT_TRUE(contains(l, "    2  incomplete  seed=1 splitter.k=1\n")) << l;
  EXPECT_TRUE(contains(l, "4 runs: 1 complete, 2 incomplete, 1 pending")) << l;

  // Writing the files again is fine; a different numbering in the same folder is refused.
  EXPECT_NO_THROW(s.write_files());
  auto g = write(d / "g.yaml", base(d) + "sweep:\n  seed: [0, 1, 2]\n  splitter.k: [1, 2]\n");
  Sweep other = Sweep::load(experiment_schema(), g.string());
  EXPECT_THROW(other.write_files(), UsageError);
}

TEST(SweepCli, ListShowsCompleteRunsAndJson) {
  auto d = temp_dir("cli_list");
  auto f = write(d / "s.yaml", base(d) + "sweep:\n  seed: [0, 1]\n  splitter.k: [1, 2]\n");
  auto r = run_cli("sweep " + f.string() + " --list", false);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "index  status      overrides\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "    3  pending     seed=1 splitter.k=2\n")) << r.out;
  EXPECT_FALSE(fs::exists(d / "out" / "grid" / "runs.tsv"));  // --list writes nothing

  fs::create_directories(d / "out" / "grid");
  make_complete(d / "out" / "grid" / "run_0002.h5", 0.1, "grid/run_0002");
  make_incomplete(d / "out" / "grid" / "run_0003.h5");
  r = run_cli("sweep " + f.string() + " --list", false);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "    2  complete    seed=1 splitter.k=1\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "    3  incomplete  seed=1 splitter.k=2\n")) << r.out;
  EXPECT_TRUE(contains(r.out, "1 complete, 1 incomplete, 2 pending")) << r.out;

  r = run_cli("sweep " + f.string() + " --list --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["runs"].size(), 4u);
  EXPECT_EQ(j["runs"][2]["complete"], true);
  EXPECT_EQ(j["runs"][2]["overrides"]["seed"], "1");
  EXPECT_EQ(j["runs"][3]["status"], "incomplete");
  EXPECT_EQ(j["keys"][1]["key"], "splitter.k");
}

TEST(SweepCli, UsageErrorsExitTwo) {
  auto d = temp_dir("cli_errors");
  auto bad = write(d / "bad.yaml", base(d) + "sweep:\n  seed: [0, 1]\n  nope: [1]\n");
  auto r = run_cli("sweep " + bad.string() + " --list");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "bad.yaml:10:")) << r.out;
  auto f = write(d / "s.yaml", base(d) + "sweep:\n  seed: [0, 1]\n");
  r = run_cli("sweep " + f.string() + " --task 2");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "0..1")) << r.out;
  r = run_cli("sweep " + f.string() + " --array-task", true, "env -u SLURM_ARRAY_TASK_ID");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "SLURM_ARRAY_TASK_ID")) << r.out;
  r = run_cli("sweep " + f.string() + " --list --task 0");
  EXPECT_EQ(r.code, 2) << r.out;
  r = run_cli("sweep " + f.string() + " --set seed=3 --list");
  EXPECT_EQ(r.code, 2) << r.out;
  r = run_cli("sweep " + (d / "missing.yaml").string());
  EXPECT_EQ(r.code, 2) << r.out;
  // `run` on a sweep file says to use `sweep`.
  r = run_cli("run " + f.string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "nnsplitter sweep")) << r.out;
  r = run_cli("run " + (d / "missing.yaml").string());
  EXPECT_EQ(r.code, 2) << r.out;
  r = run_cli("collect " + d.string());  // no runs.tsv
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "runs.tsv")) << r.out;
}

TEST(SweepCli, CompleteRunsAreSkippedAndTheSweepResumes) {
  auto d = temp_dir("cli_resume");
  auto f = write(d / "s.yaml", base(d) + "sweep:\n  seed: [0, 1]\n  splitter.k: [1, 2]\n");
  const fs::path dir = d / "out" / "grid";
  fs::create_directories(dir);
  for (int i = 0; i < 4; ++i)
    make_complete(dir / Sweep::run_file_name(i), 0.1 * i, "grid/run_000" + std::to_string(i));
  auto before = fs::last_write_time(dir / "run_0001.h5");

  // One task: already complete, so it exits 0 at once without touching the file.
  auto r = run_cli("sweep " + f.string() + " --task 1");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "is complete")) << r.out;
  r = run_cli("sweep " + f.string() + " --array-task", true, "SLURM_ARRAY_TASK_ID=3");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "run 3/4")) << r.out;
  EXPECT_TRUE(fs::exists(dir / "runs.tsv"));

  // The whole sweep: every run is skipped, then the summary is written.
  r = run_cli("sweep " + f.string(), true);
  EXPECT_EQ(r.code, 0) << r.out;
  for (int i = 0; i < 4; ++i)
    EXPECT_TRUE(contains(r.out, "run " + std::to_string(i) + "/4")) << r.out;
  EXPECT_EQ(fs::last_write_time(dir / "run_0001.h5"), before);
  EXPECT_TRUE(fs::exists(dir / "summary.h5"));
  EXPECT_TRUE(fs::exists(dir / "summary.csv"));
  EXPECT_TRUE(fs::exists(dir / "sweep.yaml"));

  // The folder of another sweep is refused.
  auto g = write(d / "g.yaml", base(d) + "sweep:\n  seed: [0, 1, 2]\n");
  r = run_cli("sweep " + g.string() + " --task 0");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "another sweep")) << r.out;
}

// ---------------------------------------------------------------------------------------------
// collect

TEST(SweepCollect, SummaryFilesListRunsAndMissing) {
  auto d = temp_dir("collect");
  auto f = write(d / "s.yaml", base(d) + "sweep:\n  seed: [0, 1]\n  splitter.k: [1, 2]\n");
  Sweep s = Sweep::load(experiment_schema(), f.string());
  s.write_files();
  make_complete(s.run_path(0), 0.125, "grid/run_0000");
  make_complete(s.run_path(3), 0.25, "grid/run_0003");
  make_incomplete(s.run_path(1));

  auto r = run_cli("collect " + s.dir().string());
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "warning")) << r.out;
  EXPECT_TRUE(contains(r.out, "1, 2")) << r.out;

  h5::File h = h5::File::open_read((s.dir() / "summary.h5").string());
  EXPECT_EQ(h.attr_string("/", "format"), "nnsplitter-summary-1");
  EXPECT_EQ(h.attr_int("/", "runs"), 2);
  EXPECT_EQ(h.attr_string("/", "missing"), "1,2");
  EXPECT_EQ(h.read_ints("runs/index"), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(h.read_strings("runs/run_name"),
            (std::vector<std::string>{"grid/run_0000", "grid/run_0003"}));
  EXPECT_EQ(h.read_strings("runs/sweep/seed"), (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(h.read_strings("runs/sweep/splitter.k"), (std::vector<std::string>{"1", "2"}));
  EXPECT_EQ(h.read_doubles("runs/obfuscated_accuracy"), (std::vector<double>{0.125, 0.25}));
  EXPECT_EQ(h.read_ints("runs/obfuscated_weights"), (std::vector<int64_t>{42, 42}));
  EXPECT_EQ(h.read_doubles("runs/seconds"), (std::vector<double>{3.5, 3.5}));
  EXPECT_EQ(h.attr_string("runs/obfuscated_accuracy", "units"), "fraction");
  for (auto k : {"original_accuracy", "restored_accuracy", "obfuscated_fraction",
                 "at_bounds_fraction", "ks_distance"})
    EXPECT_TRUE(h.exists(std::string("runs/") + k)) << k;
  h.close();

  std::string csv = read(s.dir() / "summary.csv");
  EXPECT_EQ(csv,
            "index,run_name,seed,splitter.k,original_accuracy,obfuscated_accuracy,"
            "restored_accuracy,obfuscated_weights,obfuscated_fraction,at_bounds_fraction,"
            "ks_distance,seconds\n"
            "0,grid/run_0000,0,1,0.9,0.125,0.9,42,0.001,0.5,0.01,3.5\n"
            "3,grid/run_0003,1,2,0.9,0.25,0.9,42,0.001,0.5,0.01,3.5\n");
  for (auto& e : fs::directory_iterator(s.dir()))  // no temporary file left
    EXPECT_FALSE(nns::io::is_temporary_name(e.path().filename().string())) << e.path();

  // The sweep file works as well as the folder; --json.
  r = run_cli("collect " + f.string() + " --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["missing"], (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(j["runs"][1]["sweep"]["splitter.k"], "2");

  // No complete run at all: a failure, nothing written.
  auto e = temp_dir("collect_empty");
  auto f2 = write(e / "s.yaml", base(e) + "sweep:\n  seed: [0, 1]\n");
  Sweep s2 = Sweep::load(experiment_schema(), f2.string());
  s2.write_files();
  r = run_cli("collect " + s2.dir().string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_FALSE(fs::exists(s2.dir() / "summary.h5"));
}

// ---------------------------------------------------------------------------------------------
// Slurm (script text; no Slurm needed)

TEST(SweepSlurm, ArrayScriptText) {
  auto d = temp_dir("slurm");
  auto f = write(d / "s.yaml", base(d) +
                                   "slurm:\n  partition: gpu\n  time: \"02:30:00\"\n  cpus: 6\n"
                                   "  gpus: 2\n  mem: 16G\n  max_parallel: 3\n"
                                   "sweep:\n  seed: [0, 1, 2]\n  splitter.k: [1, 2]\n");
  Sweep s = Sweep::load(experiment_schema(), f.string(), {"controller.updates=2"});
  SlurmScripts sc = slurm_scripts(s, "/opt/nns/bin/nnsplitter", "/home/me/work");
  const std::string dir = (d / "out" / "grid").string();
  const std::string& a = sc.array;
  EXPECT_EQ(a.rfind("#!/bin/bash\n", 0), 0u);
  EXPECT_TRUE(contains(a, "#SBATCH --array=0-5%3\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --output=" + dir + "/logs/%A_%a.out\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --error=" + dir + "/logs/%A_%a.err\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --job-name=nns-grid\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --partition=gpu\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --time=02:30:00\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --cpus-per-task=6\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --gres=gpu:2\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --mem=16G\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --signal=B:USR1@60\n")) << a;
  EXPECT_TRUE(contains(a, "#SBATCH --chdir=/home/me/work\n")) << a;
  EXPECT_TRUE(contains(a, "exec /opt/nns/bin/nnsplitter sweep " + s.file() +
                              " --task \"$SLURM_ARRAY_TASK_ID\" --set controller.updates=2\n"))
      << a;
  // Every #SBATCH line comes before the first command (sbatch stops reading at it).
  size_t last_directive = a.rfind("#SBATCH"), first_command = a.find("\nexport");
  EXPECT_LT(last_directive, first_command);

  const std::string& c = sc.collect;
  EXPECT_TRUE(contains(c, "exec /opt/nns/bin/nnsplitter collect " + dir + "\n")) << c;
  EXPECT_TRUE(contains(c, "#SBATCH --job-name=nns-grid-collect\n")) << c;
  EXPECT_TRUE(contains(c, "#SBATCH --output=" + dir + "/logs/collect_%j.out\n")) << c;
  EXPECT_TRUE(contains(c, "#SBATCH --partition=gpu\n")) << c;
  EXPECT_FALSE(contains(c, "--array")) << c;
  EXPECT_FALSE(contains(c, "--gres")) << c;

  // The dependency: collect after every task succeeded.
  auto cmd = sbatch_collect_command(dir + "/collect.sbatch", "1234");
  EXPECT_EQ(cmd, (std::vector<std::string>{"sbatch", "--parsable", "--dependency=afterok:1234",
                                           "--kill-on-invalid-dep=yes", dir + "/collect.sbatch"}));
  EXPECT_EQ(sbatch_array_command("x.sbatch"),
            (std::vector<std::string>{"sbatch", "--parsable", "x.sbatch"}));
  EXPECT_EQ(parse_sbatch_job_id("1234\n"), "1234");
  EXPECT_EQ(parse_sbatch_job_id("sbatch: warning: x\n77;cluster\n"), "77");
  EXPECT_THROW(parse_sbatch_job_id("Submitted batch job"), std::runtime_error);
}

TEST(SweepSlurm, DefaultsOmitPartitionAndGres) {
  auto d = temp_dir("slurm_defaults");
  auto f = write(d / "s.yaml", base(d) + "sweep:\n  seed: [0, 1]\n");
  Sweep s = Sweep::load(experiment_schema(), f.string());
  SlurmScripts sc = slurm_scripts(s, "/x/nnsplitter", "/w");
  EXPECT_TRUE(contains(sc.array, "#SBATCH --array=0-1%4\n")) << sc.array;
  EXPECT_TRUE(contains(sc.array, "#SBATCH --time=01:00:00\n")) << sc.array;
  EXPECT_TRUE(contains(sc.array, "#SBATCH --cpus-per-task=2\n")) << sc.array;
  EXPECT_TRUE(contains(sc.array, "#SBATCH --mem=4G\n")) << sc.array;
  EXPECT_FALSE(contains(sc.array, "--partition")) << sc.array;
  EXPECT_FALSE(contains(sc.array, "--gres")) << sc.array;
  EXPECT_FALSE(contains(sc.collect, "--partition")) << sc.collect;
}

TEST(SweepSlurm, QuotingOfPathsAndPercent) {
  EXPECT_EQ(shell_quote("/a/b-c_d.yaml"), "/a/b-c_d.yaml");
  EXPECT_EQ(shell_quote("a b"), "'a b'");
  EXPECT_EQ(shell_quote("it's"), "'it'\\''s'");
  EXPECT_EQ(shell_quote(""), "''");
  auto d = temp_dir("slurm quoting%");
  auto f = write(d / "s.yaml", base(d) + "sweep:\n  seed: [0, 1]\n");
  Sweep s = Sweep::load(experiment_schema(), f.string(), {"victim.weights=my model.safetensors"});
  SlurmScripts sc = slurm_scripts(s, "/x/nnsplitter", "/w");
  const std::string dir = (d / "out" / "grid").string();
  std::string escaped;
  for (char c : dir) escaped += c == '%' ? std::string("%%") : std::string(1, c);
  EXPECT_TRUE(contains(sc.array, "#SBATCH --output=\"" + escaped + "/logs/%A_%a.out\"\n"))
      << sc.array;
  EXPECT_TRUE(contains(sc.array, "sweep '" + s.file() + "' --task")) << sc.array;
  EXPECT_TRUE(contains(sc.array, "--set 'victim.weights=my model.safetensors'")) << sc.array;
  fs::remove_all(d);
}

TEST(SweepCli, SlurmWritesScriptsAndSubmitWithoutSbatchFails) {
  auto d = temp_dir("cli_slurm");
  auto f = write(d / "s.yaml", base(d) + "slurm:\n  max_parallel: 2\nsweep:\n  seed: [0, 1, 2]\n");
  auto r = run_cli("sweep " + f.string() + " --slurm");
  EXPECT_EQ(r.code, 0) << r.out;
  const fs::path dir = d / "out" / "grid";
  ASSERT_TRUE(fs::exists(dir / "sweep.sbatch"));
  ASSERT_TRUE(fs::exists(dir / "collect.sbatch"));
  EXPECT_TRUE(fs::is_directory(dir / "logs"));
  EXPECT_TRUE(fs::exists(dir / "runs.tsv"));
  std::string a = read(dir / "sweep.sbatch");
  EXPECT_TRUE(contains(a, "#SBATCH --array=0-2%2\n")) << a;
  EXPECT_TRUE(contains(a, "exec " + fs::canonical(NNS_BINARY).string() + " sweep " +
                              fs::absolute(f).string() + " --task"))
      << a;
  EXPECT_TRUE(contains(r.out, "--dependency=afterok:")) << r.out;

  r = run_cli("sweep " + f.string() + " --slurm --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["runs"], 3);
  EXPECT_EQ(j["array_script"], (dir / "sweep.sbatch").string());

  // --submit where sbatch cannot be found: a clear runtime failure (exit 1).
  r = run_cli("sweep " + f.string() + " --slurm --submit", true, "PATH=/nonexistent");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "sbatch not found")) << r.out;
}

// Every config the repository ships loads under the schema of the command it is written for:
// configs/protect and configs/bench are `protect --config` files, the rest experiment or sweep
// files (every run of a sweep validated, as `sweep` does before running anything). A key renamed
// in the code and not in a shipped file fails here, not on a user's machine.
TEST(Sweep, EveryShippedConfigValidates) {
  const fs::path root = fs::path(NNS_SOURCE_DIR) / "configs";
  int protect_files = 0, experiment_files = 0;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file() || e.path().extension() != ".yaml") continue;
    const auto dir = e.path().parent_path().filename().string();
    SCOPED_TRACE(e.path().string());
    if (dir == "protect" || dir == "bench") {
      EXPECT_NO_THROW(Config::load(method_schema(), e.path().string(), {}));
      ++protect_files;
    } else {
      EXPECT_NO_THROW(Sweep::load(experiment_schema(), e.path().string()).validate_all());
      ++experiment_files;
    }
  }
  EXPECT_GE(protect_files, 4);
  EXPECT_GE(experiment_files, 10);
}
