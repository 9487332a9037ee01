// CPU threads on a shared machine (cluster nodes are shared between jobs).
//
// How many: without --threads (or `threads:`) and without OMP_NUM_THREADS, a process uses the
// CPUs it may run on: those of its affinity mask (sched_getaffinity: what `taskset`, Slurm's
// task/affinity or a cpuset grants), capped by its cgroup's CPU quota (cgroup v2 `cpu.max`
// "quota period", cgroup v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`: what a container or
// Slurm's cgroup plugin grants), rounded up, at least 1.
//
// Waiting: GNU OpenMP (libgomp, also under the OpenMP build of OpenBLAS) lets a thread that waits
// at a barrier spin 300,000 rounds before it sleeps. Alone on its cores that saves a wake-up;
// beside another job it burns the core the other job's thread needs, and two 2-thread jobs on
// 2 cores each ran ~5x slower than alone. libgomp reads its setting (GOMP_SPINCOUNT,
// OMP_WAIT_POLICY) once, when it is loaded, before main(): so main() sets a bounded spin and
// re-executes the binary once (bounded_spin_reexec below). The user's own OMP_WAIT_POLICY or
// GOMP_SPINCOUNT wins; NNS_SPIN=N chooses the count, NNS_SPIN=libgomp keeps libgomp's default.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace nns::exp {

// The CPUs a cgroup v2 `cpu.max` allows ("150000 100000\n" -> 1.5); nullopt for "max ..." (no
// limit) or text that is not "QUOTA PERIOD" with positive integers.
std::optional<double> cpu_max_limit(std::string_view cpu_max_text);
// The same from cgroup v1 files: cpu.cfs_quota_us ("-1": no limit) and cpu.cfs_period_us.
std::optional<double> cfs_quota_limit(std::string_view quota_text, std::string_view period_text);
// The tightest CPU limit on the cgroup a process is in and on every cgroup above it, with the
// cgroup file system mounted at `cgroup_root` ("/sys/fs/cgroup") and `proc_self_cgroup` the text
// of /proc/self/cgroup ("0::/user.slice/job_1\n" for v2; "4:cpu,cpuacct:/job_1\n" for v1, whose
// files are under cgroup_root/cpu,cpuacct or cgroup_root/cpu). nullopt when nothing limits.
std::optional<double> cgroup_cpu_limit(const std::string& cgroup_root,
                                       std::string_view proc_self_cgroup);
// max(1, min(affinity_cpus, ceil(cpu_limit))): the default thread count from its two parts.
int threads_for(int affinity_cpus, std::optional<double> cpu_limit);
// This process's default: threads_for(CPUs in sched_getaffinity, cgroup_cpu_limit of
// /sys/fs/cgroup and /proc/self/cgroup).
int default_threads();

// The spin count main() gives libgomp when the user chose none (GOMP_SPINCOUNT; libgomp's own
// default is 300,000, ~6 ms of PAUSE on the Zen 5 development machine; 1,000 is ~20 us, and is
// also what libgomp itself uses when one process has more threads than CPUs). Measured on the
// 2-core machine loaded by other builds (README, "Threads on a shared machine"): CPU seconds per
// resnet20 training batch 0.25 with 0 spin, 0.26 with 1,000, 0.34 with 10,000, 0.9-1.5 with
// libgomp's default; throughput in the same order.
inline constexpr long kDefaultSpinCount = 1000;

// What main() should do about libgomp's spinning, from the environment's values (nullptr:
// unset): the GOMP_SPINCOUNT value to set before re-executing, "" to leave things as they are,
// or an error (a usage error: NNS_SPIN is neither a count nor "libgomp").
struct SpinDecision {
  std::string spincount;  // "" = no re-exec
  std::string error;
};
SpinDecision spin_decision(const char* omp_wait_policy, const char* gomp_spincount,
                           const char* nns_spin, const char* already_reexecuted);
// Called first in main(): applies spin_decision to this process's environment, and when a
// count is to be set, sets GOMP_SPINCOUNT and NNS_SPIN_REEXEC=1 and execv's /proc/self/exe with
// the same argv (once: the marker stops a second time). Returns normally when nothing is to be
// done or the exec failed (the run goes on with libgomp's default); exits 2 on a bad NNS_SPIN.
void bounded_spin_reexec(char** argv);

}  // namespace nns::exp
