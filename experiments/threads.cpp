#include "experiments/threads.h"

#include <sched.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/io/strict_number.h"

namespace nns::exp {

namespace {

// The words of `text` split at white space.
std::vector<std::string> words(std::string_view text) {
  std::istringstream in{std::string(text)};
  std::vector<std::string> w;
  for (std::string s; in >> s;) w.push_back(s);
  return w;
}

// The content of a small kernel file, or nullopt (absent, unreadable). Bounded: these are a
// line each.
std::optional<std::string> read_small(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::string s(4096, '\0');
  in.read(s.data(), std::streamsize(s.size()));
  s.resize(size_t(in.gcount()));
  return s;
}

void take_min(std::optional<double>& best, std::optional<double> v) {
  if (v && (!best || *v < *best)) best = v;
}

// `dir` and each folder above it up to `root` (both included; dir is under root).
std::vector<std::string> dir_and_parents(const std::string& root, std::string rel) {
  std::vector<std::string> out;
  while (!rel.empty() && rel.back() == '/') rel.pop_back();
  for (;;) {
    out.push_back(root + rel);
    if (rel.empty()) break;
    rel = rel.substr(0, rel.rfind('/'));
  }
  return out;
}

}  // namespace

std::optional<double> cpu_max_limit(std::string_view text) {
  const auto w = words(text);
  if (w.empty() || w.size() > 2 || w[0] == "max") return std::nullopt;
  const auto quota = io::parse_strict_int(w[0], 1, int64_t(1) << 50);
  // The period defaults to 100000 µs when the file holds only the quota (as the kernel reads a
  // write of one number).
  const auto period = w.size() == 2 ? io::parse_strict_int(w[1], 1, int64_t(1) << 50)
                                    : std::optional<int64_t>(100000);
  if (!quota || !period) return std::nullopt;
  return double(*quota) / double(*period);
}

std::optional<double> cfs_quota_limit(std::string_view quota_text, std::string_view period_text) {
  const auto q = words(quota_text), p = words(period_text);
  if (q.size() != 1 || p.size() != 1) return std::nullopt;
  const auto quota = io::parse_strict_int(q[0]);  // -1: no limit
  const auto period = io::parse_strict_int(p[0], 1, int64_t(1) << 50);
  if (!quota || *quota <= 0 || !period) return std::nullopt;
  return double(*quota) / double(*period);
}

std::optional<double> cgroup_cpu_limit(const std::string& cgroup_root,
                                       std::string_view proc_self_cgroup) {
  std::optional<double> best;
  std::istringstream lines{std::string(proc_self_cgroup)};
  for (std::string line; std::getline(lines, line);) {
    // "hierarchy-id:controller-list:path"; the path may itself hold ':'.
    const auto c1 = line.find(':');
    const auto c2 = c1 == std::string::npos ? c1 : line.find(':', c1 + 1);
    if (c2 == std::string::npos) continue;
    const std::string id = line.substr(0, c1), controllers = line.substr(c1 + 1, c2 - c1 - 1);
    std::string path = line.substr(c2 + 1);
    if (path.empty() || path[0] != '/' || path.find("/..") != std::string::npos) continue;
    if (path == "/") path.clear();
    if (id == "0" && controllers.empty()) {  // cgroup v2 (at the root, or "unified" in hybrid mode)
      for (const std::string mount : {"", "/unified"})
        for (const auto& d : dir_and_parents(cgroup_root + mount, path))
          if (auto t = read_small(d + "/cpu.max")) take_min(best, cpu_max_limit(*t));
      continue;
    }
    bool cpu = false;  // cgroup v1 with the cpu controller
    std::istringstream list(controllers);
    for (std::string c; std::getline(list, c, ',');) cpu = cpu || c == "cpu";
    if (!cpu) continue;
    for (const std::string mount : {"/cpu,cpuacct", "/cpuacct,cpu", "/cpu"})
      for (const auto& d : dir_and_parents(cgroup_root + mount, path)) {
        auto q = read_small(d + "/cpu.cfs_quota_us"), p = read_small(d + "/cpu.cfs_period_us");
        if (q && p) take_min(best, cfs_quota_limit(*q, *p));
      }
  }
  return best;
}

int threads_for(int affinity_cpus, std::optional<double> cpu_limit) {
  int n = affinity_cpus;
  if (cpu_limit && *cpu_limit > 0) {
    // Rounded up (1.5 CPUs -> 2 threads), with a tolerance for quota/period ratios such as
    // 200001/100000 that mean 2.
    const double up = std::ceil(*cpu_limit - 1e-3);
    if (up < double(n)) n = int(up);
  }
  return n < 1 ? 1 : n;
}

int default_threads() {
  int cpus = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
  if (cpus <= 0) cpus = int(sysconf(_SC_NPROCESSORS_ONLN));
  const auto self = read_small("/proc/self/cgroup");
  return threads_for(cpus, self ? cgroup_cpu_limit("/sys/fs/cgroup", *self) : std::nullopt);
}

SpinDecision spin_decision(const char* omp_wait_policy, const char* gomp_spincount,
                           const char* nns_spin, const char* already_reexecuted) {
  if (already_reexecuted || omp_wait_policy || gomp_spincount) return {};
  if (!nns_spin) return {std::to_string(kDefaultSpinCount), ""};
  const std::string v = nns_spin;
  if (v == "libgomp") return {};
  if (auto n = io::parse_strict_int(v, 0, int64_t(1) << 40)) return {std::to_string(*n), ""};
  return {"", "NNS_SPIN='" + v +
                  "': expected a spin count (a whole number, 0 = sleep at once) "
                  "or 'libgomp' (its own default)"};
}

void bounded_spin_reexec(char** argv) {
  const SpinDecision d =
      spin_decision(std::getenv("OMP_WAIT_POLICY"), std::getenv("GOMP_SPINCOUNT"),
                    std::getenv("NNS_SPIN"), std::getenv("NNS_SPIN_REEXEC"));
  if (!d.error.empty()) {
    std::fprintf(stderr, "nnsplitter: usage error: %s\n", d.error.c_str());
    std::exit(2);
  }
  if (d.spincount.empty()) return;
  if (::setenv("GOMP_SPINCOUNT", d.spincount.c_str(), 1) != 0 ||
      ::setenv("NNS_SPIN_REEXEC", "1", 1) != 0)
    return;
  ::execv("/proc/self/exe", argv);
  // No /proc (or no exec): go on with libgomp's default; undo the settings so that the
  // programs we start decide afresh.
  ::unsetenv("GOMP_SPINCOUNT");
  ::unsetenv("NNS_SPIN_REEXEC");
}

}  // namespace nns::exp
