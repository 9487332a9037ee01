// The attack benchmark (configs/attacks/benchmark.yaml) end to end at a small size: the real
// file, run as a sweep on synthetic data with LeNet-5 and tiny budgets, collected into one table
// (every unit's columns and the headline) and plotted: LeNet-5 x the four methods
// (splitter.method) x 3 seeds.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_runner.h"
#include "experiments/experiment.h"
#include "experiments/h5file.h"

namespace fs = std::filesystem;

namespace {

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void replace_once(std::string& s, const std::string& from, const std::string& to) {
  const auto at = s.find(from);
  ASSERT_NE(at, std::string::npos) << "benchmark.yaml lost: " << from;
  s.replace(at, from.size(), to);
}

}  // namespace

TEST(AttackBenchmark, SmallSweepGivesOneTableWithAttacksAndFloor) {
  const fs::path dir = nns::test::fresh_temp_dir("nns_bench", "small");
  std::string yaml = read(fs::path(NNS_SOURCE_DIR) / "configs/attacks/benchmark.yaml");
  // The full-size axes, as the benchmark promises them.
  replace_once(yaml, "  model.arch: [lenet5, resnet20]\n", "  model.arch: [lenet5]\n");
  ASSERT_NE(yaml.find("  splitter.method: [nnsplitter, quantile, permute, swap]\n"), std::string::npos);
  ASSERT_NE(yaml.find("  seed: [0, 1, 2]\n"), std::string::npos);
  const fs::path file = dir / "benchmark.yaml";
  std::ofstream(file) << yaml;

  const std::string sets =
      " --set output.dir=" + (dir / "out").string() +
      " --set dataset.name=synthetic --set victim.epochs=1 --set splitter.val_size=200"
      " --set splitter.max_steps=20 --set splitter.eval_every=10 --set splitter.target_per_layer=8"
      " --set controller.updates=1 --set controller.episodes_per_update=2"
      " --set controller.hidden=32 --set controller.token_size=32"
      " --set attacks.queries.budgets=[40,80] --set attacks.groupcover.epochs=2"
      " --set attacks.train.lrs=[0.05] --set attacks.train.min_epochs=1"
      " --set attacks.train.min_steps=4"
      " --set threads=2";
  auto r = nns::test::run_cli("sweep " + file.string() + sets);
  ASSERT_EQ(r.code, 0) << r.out;

  const fs::path out = dir / "out" / "attack-benchmark";
  auto c = nns::test::run_cli("collect " + out.string() + " --json", false);
  ASSERT_EQ(c.code, 0) << c.out;
  auto j = nlohmann::json::parse(c.out);
  const auto runs = j["runs"];
  ASSERT_EQ(runs.size(), 12u);  // 4 methods x 3 seeds
  for (const auto& run : runs) {
    const auto& a = run["attacks"];
    for (const char* col :
         {"secrets_bytes", "recall.extreme_percentile", "precision.extreme_percentile",
          "recall.extreme_percentile_layer", "recall.cv_bins", "groupcover.donor@40",
          "groupcover.donor@80", "groupcover.zero@80", "groupcover.mean@80", "floor.donor@40",
          "floor.donor@80", "floor.scratch@80", "boundary_reset", "norm_clip.k=1", "best@40",
          "floor@80", "gap@80"})
      ASSERT_TRUE(a.contains(col)) << col << " missing in " << a.dump();
    EXPECT_GT(a["secrets_bytes"].get<double>(), 0);
    for (const char* col : {"groupcover.donor@80", "floor.donor@80", "floor.scratch@80", "best@80"}) {
      const double v = a[col].get<double>();
      EXPECT_TRUE(v >= 0 && v <= 1) << col << " " << v;
    }
    EXPECT_TRUE(run["ks_distance"].is_number());
    EXPECT_TRUE(run["at_bounds_fraction"].is_number());
  }
  // The terminal table: every run, then mean ± sd over the 3 seeds.
  auto t = nns::test::run_cli("collect " + out.string(), false);
  ASSERT_EQ(t.code, 0);
  EXPECT_NE(t.out.find("groupcover.donor@80"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("mean ± sd over seeds"), std::string::npos) << t.out;
  // The CSV carries the same columns.
  EXPECT_NE(read(out / "summary.csv").find("floor.scratch@40"), std::string::npos);

  // The plot of recovered accuracy against queries.
  if (fs::exists("/usr/bin/python3")) {
    const std::string cmd = "/usr/bin/python3 " + std::string(NNS_SOURCE_DIR) +
                            "/tools/plot_results.py " + (out / "summary.h5").string() +
                            " --out " + (dir / "plots").string() + " > /dev/null 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    EXPECT_TRUE(fs::exists(dir / "plots" / "summary_recovery_groupcover.donor.png"));
  }
}
