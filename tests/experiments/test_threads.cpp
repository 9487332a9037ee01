// Threads on a shared machine (issue 15): the default thread count from the affinity mask and
// the cgroup CPU quota, and the bounded OpenMP spin that main() sets before re-executing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_runner.h"
#include "experiments/threads.h"

namespace fs = std::filesystem;
using namespace nns::exp;

namespace {

TEST(Threads, CpuMaxTextIsQuotaOverPeriod) {
  EXPECT_EQ(cpu_max_limit("200000 100000\n"), 2.0);
  EXPECT_EQ(cpu_max_limit("150000 100000"), 1.5);
  EXPECT_EQ(cpu_max_limit("50000 100000\n"), 0.5);
  EXPECT_EQ(cpu_max_limit("300000\n"), 3.0);  // period left at the kernel's 100000
  for (const char* none : {"max 100000\n", "max", "", "\n", "2junk 100000", "0 100000", "-1 100000",
                           "100000 0", "1 2 3", "100000 1e5"})
    EXPECT_FALSE(cpu_max_limit(none).has_value()) << "'" << none << "'";
}

TEST(Threads, CgroupV1QuotaOverPeriod) {
  EXPECT_EQ(cfs_quota_limit("400000\n", "100000\n"), 4.0);
  EXPECT_EQ(cfs_quota_limit("25000", "100000"), 0.25);
  for (auto [q, p] : std::initializer_list<std::pair<const char*, const char*>>{
           {"-1\n", "100000\n"}, {"0", "100000"}, {"100000", "0"}, {"x", "100000"}, {"", ""}})
    EXPECT_FALSE(cfs_quota_limit(q, p).has_value()) << q << " / " << p;
}

TEST(Threads, DefaultIsTheAffinityCappedByTheQuotaRoundedUp) {
  EXPECT_EQ(threads_for(8, std::nullopt), 8);
  EXPECT_EQ(threads_for(8, 2.0), 2);
  EXPECT_EQ(threads_for(8, 1.5), 2);      // rounded up
  EXPECT_EQ(threads_for(8, 2.00001), 2);  // 200001/100000 means 2
  EXPECT_EQ(threads_for(8, 0.25), 1);     // at least 1
  EXPECT_EQ(threads_for(2, 16.0), 2);     // the quota never adds CPUs
  EXPECT_EQ(threads_for(0, std::nullopt), 1);
}

// A fake cgroup tree: the tightest limit on the process's cgroup or any above it counts.
TEST(Threads, CgroupTreeIsWalkedUpToTheRoot) {
  const fs::path root = nns::test::fresh_temp_dir("nns_threads", "cgroup");
  auto put = [&](const fs::path& rel, const std::string& name, const std::string& text) {
    fs::create_directories(root / rel);
    std::ofstream(root / rel / name) << text;
  };
  // cgroup v2: a job of 3 CPUs inside a user slice of 1.5.
  put("user.slice", "cpu.max", "150000 100000\n");
  put("user.slice/job_7", "cpu.max", "300000 100000\n");
  put("user.slice/job_7/step_0", "cpu.max", "max 100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root.string(), "0::/user.slice/job_7/step_0\n"), 1.5);
  EXPECT_EQ(threads_for(8, cgroup_cpu_limit(root.string(), "0::/user.slice/job_7/step_0\n")), 2);
  EXPECT_FALSE(cgroup_cpu_limit(root.string(), "0::/\n").has_value());
  EXPECT_FALSE(cgroup_cpu_limit(root.string(), "0::/elsewhere\n").has_value());
  // cgroup v1 (the cpu controller mounted on its own, as on this machine, or with cpuacct).
  put("cpu/slurm/job_9", "cpu.cfs_quota_us", "400000\n");
  put("cpu/slurm/job_9", "cpu.cfs_period_us", "100000\n");
  put("cpu", "cpu.cfs_quota_us", "-1\n");
  put("cpu", "cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root.string(), "5:memory:/x\n1:cpu:/slurm/job_9\n0::/\n"), 4.0);
  put("cpu,cpuacct/k8s", "cpu.cfs_quota_us", "50000\n");
  put("cpu,cpuacct/k8s", "cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(cgroup_cpu_limit(root.string(), "3:cpuacct,cpu:/k8s\n"), 0.5);
  // Malformed lines and paths that climb out are ignored.
  EXPECT_FALSE(cgroup_cpu_limit(root.string(), "garbage\n1:cpu:/../../etc\n").has_value());
  fs::remove_all(root);
}

TEST(Threads, SpinDecision) {
  const std::string d = std::to_string(kDefaultSpinCount);
  EXPECT_EQ(spin_decision(nullptr, nullptr, nullptr, nullptr).spincount, d);
  // The user's own setting wins; after the re-exec nothing more is done.
  EXPECT_EQ(spin_decision("PASSIVE", nullptr, nullptr, nullptr).spincount, "");
  EXPECT_EQ(spin_decision(nullptr, "300000", nullptr, nullptr).spincount, "");
  EXPECT_EQ(spin_decision(nullptr, nullptr, nullptr, "1").spincount, "");
  EXPECT_EQ(spin_decision(nullptr, nullptr, "0", nullptr).spincount, "0");
  EXPECT_EQ(spin_decision(nullptr, nullptr, "250000", nullptr).spincount, "250000");
  EXPECT_EQ(spin_decision(nullptr, nullptr, "libgomp", nullptr).spincount, "");
  const SpinDecision bad = spin_decision(nullptr, nullptr, "2junk", nullptr);
  EXPECT_EQ(bad.spincount, "");
  EXPECT_NE(bad.error.find("NNS_SPIN='2junk'"), std::string::npos) << bad.error;
}

// The binary: what libgomp was started with, as bench --json reports it (an empty model list
// measures nothing and returns at once).
nlohmann::json bench_env(const std::string& env, int* code = nullptr) {
  auto r = nns::test::run_cli("bench --models , --json", false,
                              "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT -u NNS_SPIN "
                              "-u NNS_SPIN_REEXEC " +
                                  env);
  if (code) *code = r.code;
  if (r.code != 0) return nullptr;
  return nlohmann::json::parse(r.out);
}

TEST(Threads, BinaryStartsLibgompWithABoundedSpinUnlessTheUserChose) {
  auto j = bench_env("");
  EXPECT_EQ(j["gomp_spincount"], std::to_string(kDefaultSpinCount)) << j;
  j = bench_env("OMP_WAIT_POLICY=passive");
  EXPECT_TRUE(j["gomp_spincount"].is_null()) << j;
  EXPECT_EQ(j["omp_wait_policy"], "passive") << j;
  EXPECT_EQ(bench_env("GOMP_SPINCOUNT=123")["gomp_spincount"], "123");
  EXPECT_EQ(bench_env("NNS_SPIN=500")["gomp_spincount"], "500");
  EXPECT_TRUE(bench_env("NNS_SPIN=libgomp")["gomp_spincount"].is_null());
  auto r = nns::test::run_cli("bench --models , --json", true,
                              "env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY NNS_SPIN=lots");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("NNS_SPIN='lots'"), std::string::npos) << r.out;
}

TEST(Threads, BinaryDefaultsToTheCpusItMayUse) {
  // OMP_NUM_THREADS unset: the affinity mask (taskset) decides.
  auto j = bench_env("-u OMP_NUM_THREADS taskset -c 0");
  EXPECT_EQ(j["threads"], 1) << j;
  EXPECT_EQ(bench_env("-u OMP_NUM_THREADS")["threads"], default_threads());
  // The user's OMP_NUM_THREADS and --threads win.
  EXPECT_EQ(bench_env("OMP_NUM_THREADS=3")["threads"], 3);
  auto r = nns::test::run_cli("bench --models , --json --threads 5", false);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["threads"], 5);
}

}  // namespace
