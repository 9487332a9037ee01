// Config validation: every error names file:line and the key; overrides apply; defaults fill.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/io/input_file.h"
#include "experiments/config.h"
#include "experiments/experiment.h"
#include "experiments/protect.h"
#include "experiments/sweep.h"

using namespace nns::exp;

namespace {

std::string write_yaml(const std::string& name, const std::string& text) {
  auto p = std::filesystem::temp_directory_path() / ("nns_cfg_" + name + ".yaml");
  std::ofstream(p) << text;
  return p.string();
}

std::string error_of(const std::string& file, std::vector<std::string> sets = {}) {
  try {
    Config::load(method_schema(), file, sets);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, UnknownKeyListsEachNameOfItsLevelOnce) {
  EXPECT_NE(error_of(write_yaml("unk_top", "bogus: 1\n")).find("(known here: splitter, controller)"),
            std::string::npos);
  // A section's own keys and its subsections (splitter.swap.*), each once.
  const std::string e = error_of(write_yaml("unk_sec", "splitter:\n  bogus: 1\n"));
  const std::string head = "unknown key 'splitter.bogus' (known here: ";
  const auto at = e.find(head);
  ASSERT_NE(at, std::string::npos) << e;
  std::vector<std::string> names;
  std::stringstream list(e.substr(at + head.size(), e.rfind(')') - at - head.size()));
  for (std::string n; std::getline(list, n, ',');) names.push_back(n.substr(n.find_first_not_of(' ')));
  for (const char* expected : {"method", "rule", "k", "eps", "lr", "quantile", "permute", "swap"})
    EXPECT_EQ(std::count(names.begin(), names.end(), expected), 1) << expected << " in " << e;
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << e;
}

TEST(Config, DefaultsAndOverrides) {
  std::string f = write_yaml("ok", "splitter:\n  k: 2\n  eps: 0.001\ncontroller:\n  cell: rnn\n");
  Config c = Config::load(method_schema(), f, {"splitter.lr=0.2", "controller.updates=3"});
  EXPECT_EQ(c.get_int("splitter.k"), 2);
  EXPECT_DOUBLE_EQ(c.get_float("splitter.eps"), 0.001);
  EXPECT_FALSE(c.is_word("splitter.eps", "auto"));
  EXPECT_EQ(c.get_string("controller.cell"), "rnn");
  EXPECT_FLOAT_EQ(float(c.get_float("splitter.lr")), 0.2f);
  EXPECT_EQ(c.get_int("controller.updates"), 3);
  EXPECT_TRUE(c.is_word("splitter.clamp", "auto"));
  EXPECT_EQ(c.get_int("controller.hidden"), 512);
  // The effective config round-trips: loading it gives the same values.
  std::string eff = write_yaml("eff", c.effective_yaml());
  Config c2 = Config::load(method_schema(), eff, {});
  EXPECT_EQ(c2.effective_yaml(), c.effective_yaml());
  Config c3 = Config::load(method_schema(), "", {"splitter.clamp=[-0.1, 0.2]"});
  EXPECT_DOUBLE_EQ(c3.get_pair("splitter.clamp").first, -0.1);
}

// A resumed search compares its saved configuration with today's: a key added since (here
// splitter.precision, absent from the saved text) at its default is the same configuration; any
// other difference, or a text that no longer loads, is not.
TEST(Config, SameAsSavedToleratesKeysAddedAtTheirDefaults) {
  Config c = Config::load(method_schema(), "", {"splitter.k=2"});
  const std::string eff = c.effective_yaml();
  EXPECT_TRUE(c.same_as_saved(eff));
  std::string older;
  std::istringstream in(eff);
  for (std::string line; std::getline(in, line);)
    if (line.find("precision:") == std::string::npos) older += line + "\n";
  ASSERT_NE(older, eff);
  EXPECT_TRUE(c.same_as_saved(older));
  EXPECT_FALSE(Config::load(method_schema(), "", {"splitter.k=2", "splitter.precision=bf16"})
                   .same_as_saved(older));
  EXPECT_FALSE(Config::load(method_schema(), "", {"splitter.k=3"}).same_as_saved(eff));
  EXPECT_FALSE(c.same_as_saved(eff + "splitter_typo: 1\n"));
  EXPECT_FALSE(c.same_as_saved("{{{"));
}

TEST(Config, UnknownKeyNamesFileLineAndKey) {
  std::string f = write_yaml("unknown", "splitter:\n  k: 1\n  epsilon: 0.1\n");
  std::string e = error_of(f);
  EXPECT_NE(e.find(f + ":3"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'splitter.epsilon'"), std::string::npos) << e;
  EXPECT_NE(e.find("eps"), std::string::npos) << e;  // the known keys are listed
  e = error_of(write_yaml("unknown_top", "splittr:\n  k: 1\n"));
  EXPECT_NE(e.find("unknown key 'splittr'"), std::string::npos) << e;
}

TEST(Config, WrongTypeAndOutOfRange) {
  std::string f = write_yaml("type", "controller:\n  updates: many\n");
  std::string e = error_of(f);
  EXPECT_NE(e.find(f + ":2"), std::string::npos) << e;
  EXPECT_NE(e.find("controller.updates"), std::string::npos) << e;
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
  f = write_yaml("range", "splitter:\n\n  k: 0\n");
  e = error_of(f);
  EXPECT_NE(e.find(f + ":3"), std::string::npos) << e;
  EXPECT_NE(e.find(">= 1"), std::string::npos) << e;
  e = error_of(write_yaml("choice", "controller:\n  cell: gru\n"));
  EXPECT_NE(e.find("'gru' is not one of: lstm, rnn"), std::string::npos) << e;
  e = error_of(write_yaml("pair", "splitter:\n  clamp: [0.3, 0.1]\n"));
  EXPECT_NE(e.find("lo must be below hi"), std::string::npos) << e;
  e = error_of(write_yaml("nan", "splitter:\n  lr: .nan\n"));
  EXPECT_NE(e.find("splitter.lr"), std::string::npos) << e;
}

// Found by fuzz_config: validation accepted numbers that yaml-cpp's as<double> refuses (hex floats,
// a quoted leading space), and reading the validated config then threw YAML::TypedBadConversion.
// The getters now parse with the validator's own functions: what loads, reads back. Numbers are
// strict (core/io/strict_number.h): a quoted ' 0.5' or '2junk' is refused by validation itself.
TEST(Config, EveryValidatedNumberReadsBack) {
  std::string f = write_yaml("hexfloat", "splitter:\n  lr: 0x1p-3\n  l1: '0.5'\n  clamp: [-0x1p-2, '0.25']\n");
  Config c = Config::load(method_schema(), f, {});
  EXPECT_DOUBLE_EQ(c.get_float("splitter.lr"), 0.125);
  EXPECT_DOUBLE_EQ(c.get_float("splitter.l1"), 0.5);
  EXPECT_DOUBLE_EQ(c.get_pair("splitter.clamp").first, -0.25);
  EXPECT_DOUBLE_EQ(c.get_pair("splitter.clamp").second, 0.25);
  Config s = Config::load(method_schema(), "", {"controller.updates= 7", "splitter.eps=0x1p-10"});
  EXPECT_EQ(s.get_int("controller.updates"), 7);
  EXPECT_DOUBLE_EQ(s.get_float("splitter.eps"), 1.0 / 1024);
}

TEST(Config, NumbersAreStrict) {
  for (const std::string v : {"' 0.5'", "'0.5 '", "2junk", "'1e999'", ".inf", "-.inf", "inf"}) {
    const std::string e = error_of(write_yaml("strict", "splitter:\n  lr: " + v + "\n"));
    EXPECT_NE(e.find("key 'splitter.lr': expected a number"), std::string::npos) << v << ": " << e;
  }
  for (const std::string v : {"' 3'", "3junk", "3.0", "0x3"}) {
    const std::string e = error_of(write_yaml("strict_int", "splitter:\n  k: " + v + "\n"));
    EXPECT_NE(e.find("key 'splitter.k': expected an integer"), std::string::npos) << v << ": " << e;
  }
  // A pair's ends are finite too ([-inf, 1] used to pass: only lo < hi was checked).
  EXPECT_NE(error_of(write_yaml("strict_pair", "splitter:\n  clamp: [-inf, 1]\n"))
                .find("expected two numbers [lo, hi]"),
            std::string::npos);
  EXPECT_NE(error_of("", {"splitter.lr=2junk"}).find("expected a number"), std::string::npos);
}

TEST(Config, MissingFileBadYamlAndBadOverrides) {
  std::string e = error_of("/nonexistent/protect.yaml");
  EXPECT_NE(e.find("/nonexistent/protect.yaml: config file not found"), std::string::npos) << e;
  std::string f = write_yaml("bad", "splitter:\n  k: [1, 2\n");
  e = error_of(f);
  EXPECT_NE(e.find(f + ":"), std::string::npos) << e;
  EXPECT_NE(e.find("invalid YAML"), std::string::npos) << e;
  EXPECT_NE(error_of("", {"splitter.nope=1"}).find("unknown key 'splitter.nope'"), std::string::npos);
  EXPECT_NE(error_of("", {"splitter.k"}).find("expected key=value"), std::string::npos);
  EXPECT_NE(error_of("", {"splitter.k=abc"}).find("integer"), std::string::npos);
  e = error_of(write_yaml("dup", "splitter:\n  k: 1\n  k: 2\n"));
  EXPECT_FALSE(e.empty());
}

// yaml-cpp refuses deep nesting with a DeepRecursion it words "bad file": the error says what
// is wrong and names the file (the probe's case: 10,000 nested flow lists).
TEST(Config, NestedTooDeepSaysSoAndNamesTheFile) {
  for (const std::string& deep :
       {"splitter:\n  k: " + std::string(10000, '[') + std::string(10000, ']') + "\n",
        [] {  // flow mappings nested as values: {a: {a: ... 1 ...}}
          std::string y;
          for (int i = 0; i < 5000; ++i) y += "{a: ";
          return y + "1" + std::string(5000, '}') + "\n";
        }()}) {
    std::string f = write_yaml("deep", deep);
    std::string e = error_of(f);
    EXPECT_EQ(e.rfind(f + ":", 0), 0u) << e;
    EXPECT_NE(e.find(": invalid YAML: nested too deep (more than "), std::string::npos) << e;
    EXPECT_EQ(e.find("bad file"), std::string::npos) << e;
  }
  // Block mappings nested 3,000 deep take 4.5 MB (one more indentation per level): refused by
  // the size bound before yaml-cpp sees them; 1 MiB holds at most ~1,450 levels, within
  // yaml-cpp's depth guard.
  std::string block;
  for (int i = 0; i < 3000; ++i) block += std::string(size_t(i), ' ') + "a:\n";
  std::string f = write_yaml("deep_block", block);
  EXPECT_EQ(error_of(f), f + ": " + std::to_string(block.size()) +
                             " bytes, more than the limit of 1 MiB for a config file");
  // A folder is not an empty config.
  std::string dir = std::filesystem::temp_directory_path().string();
  EXPECT_EQ(error_of(dir), dir + ": is a folder, not a config file (give the YAML file itself)");
}


// The probe of issue 17: `run /dev/zero` and `run /dev/urandom` never returned (the config was
// read without a bound), a 50 MB config took 33 s, a folder said "basic_filebuf::underflow"
// without the file's name. Each is now refused at once, naming the file (ConfigError: exit 2);
// so are sweep files and a sweep folder's runs.tsv.
TEST(Config, DevicesFifosAndHugeFilesAreRefusedAtOnceNamingTheFile) {
  const auto dir = std::filesystem::temp_directory_path() / ("nns_cfg_hostile_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string fifo = (dir / "fifo.yaml").string(), big = (dir / "big.yaml").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::ofstream(big).close();
  std::filesystem::resize_file(big, 50'000'000);  // sparse: made at once
  const auto t0 = std::chrono::steady_clock::now();
  for (const std::string dev : {"/dev/zero", "/dev/urandom"})
    EXPECT_EQ(error_of(dev), dev + ": is a character device, not a config file (a config file "
                                   "must be a regular file)");
  EXPECT_EQ(error_of(fifo), fifo + ": is a FIFO, not a config file (a config file must be a "
                                   "regular file)");
  EXPECT_EQ(error_of(big), big + ": 50000000 bytes, more than the limit of 1 MiB for a config file");
  auto sweep_error = [](const std::string& f) -> std::string {
    try {
      Sweep::load(experiment_schema(), f);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "<no error>";
  };
  EXPECT_EQ(sweep_error("/dev/zero"), "/dev/zero: is a character device, not a sweep file (a "
                                      "sweep file must be a regular file)");
  EXPECT_EQ(sweep_error(big), big + ": 50000000 bytes, more than the limit of 1 MiB for a sweep file");
  EXPECT_EQ(sweep_error(dir.string()), dir.string() + ": is a folder, not a sweep file (give the "
                                                      "YAML file itself)");
  const auto tsv = dir / "runs.tsv";
  ASSERT_EQ(::mkfifo(tsv.c_str(), 0600), 0);
  try {
    read_runs_tsv(tsv);
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), tsv.string() + ": is a FIFO, not a sweep index (a sweep "
                                                    "index must be a regular file)");
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  std::filesystem::remove_all(dir);
}

// The same bound on text given directly (the fuzz harness's way in) and on a --set value.
TEST(Config, TextAndSetValuesAreBounded) {
  const std::string text = "name: " + std::string(nns::io::kMaxConfigBytes, 'x') + "\n";
  try {
    Config::load_text(experiment_schema(), text, "t.yaml", {});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "t.yaml: " + std::to_string(text.size()) +
                                         " bytes, more than the limit of 1 MiB for a config file");
  }
  const std::string set = "splitter.method=" + std::string(kMaxSetValueBytes + 1, 'x');
  EXPECT_EQ(error_of("", {set}),
            "--set splitter.method: the value is 65537 bytes, more than the limit of 64 KiB");
  Config c = Config::load(experiment_schema(), "", {"name=" + std::string(1000, 'y')});
  EXPECT_EQ(c.get_string("name"), std::string(1000, 'y'));
}
}  // namespace

namespace {
// docs/config-reference.md is generated by `nnsplitter config-reference`: keep them in sync.
TEST(Config, ReferenceDocIsUpToDate) {
  std::string cmd = std::string(NNS_BINARY) + " config-reference";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  ASSERT_EQ(pclose(p), 0);
  std::ifstream f(std::string(NNS_SOURCE_DIR) + "/docs/config-reference.md");
  std::string doc((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(doc, out) << "regenerate: build/nnsplitter config-reference --out docs/config-reference.md";
  for (auto key : {"splitter.eps", "controller.cell", "attacks.finetune.fractions", "slurm.max_parallel"})
    EXPECT_NE(out.find(key), std::string::npos) << key;
}
}  // namespace
