// Config validation: every error names file:line and the key; overrides apply; defaults fill.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "experiments/config.h"
#include "experiments/protect.h"

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
// The getters now parse with the validator's own functions: what loads, reads back.
TEST(Config, EveryValidatedNumberReadsBack) {
  std::string f = write_yaml("hexfloat", "splitter:\n  lr: 0x1p-3\n  l1: ' 0.5'\n  clamp: [-0x1p-2, ' 0.25']\n");
  Config c = Config::load(method_schema(), f, {});
  EXPECT_DOUBLE_EQ(c.get_float("splitter.lr"), 0.125);
  EXPECT_DOUBLE_EQ(c.get_float("splitter.l1"), 0.5);
  EXPECT_DOUBLE_EQ(c.get_pair("splitter.clamp").first, -0.25);
  EXPECT_DOUBLE_EQ(c.get_pair("splitter.clamp").second, 0.25);
  Config s = Config::load(method_schema(), "", {"controller.updates= 7", "splitter.eps=0x1p-10"});
  EXPECT_EQ(s.get_int("controller.updates"), 7);
  EXPECT_DOUBLE_EQ(s.get_float("splitter.eps"), 1.0 / 1024);
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
        }(),
        [] {  // block mappings, one more indentation per level
          std::string y;
          for (int i = 0; i < 3000; ++i) y += std::string(size_t(i), ' ') + "a:\n";
          return y;
        }()}) {
    std::string f = write_yaml("deep", deep);
    std::string e = error_of(f);
    EXPECT_EQ(e.rfind(f + ":", 0), 0u) << e;
    EXPECT_NE(e.find(": invalid YAML: nested too deep (more than "), std::string::npos) << e;
    EXPECT_EQ(e.find("bad file"), std::string::npos) << e;
  }
  // A folder is not an empty config.
  std::string dir = std::filesystem::temp_directory_path().string();
  EXPECT_EQ(error_of(dir), dir + ": is a folder, not a config file (give the YAML file itself)");
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
