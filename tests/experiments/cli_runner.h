// Running the nnsplitter binary from the experiment tests: exit code and captured output.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace nns::test {

struct CliResult {
  int code;         // exit status; -1 when the command could not run or died on a signal
  std::string out;  // stdout (and stderr when merged)
};

// Runs `nnsplitter ARGS` (progress off, 2 threads) with ENV prepended (e.g. "NNS_DATA_DIR=x").
inline CliResult run_cli(const std::string& args, bool merge_stderr = true,
                         const std::string& env = "") {
  const std::string cmd = "NNS_PROGRESS=off OMP_NUM_THREADS=2 " + env + " " + NNS_BINARY + " " +
                          args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* p = popen(cmd.c_str(), "r");
  CliResult r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

// An empty folder PREFIX_NAME_PID under the temporary directory (emptied when it exists). The
// process id keeps apart the tests that ctest -j runs at once, each in its own process, when
// they share a fixture's folder (a suite's SetUpTestSuite runs in each of them).
inline std::filesystem::path fresh_temp_dir(const std::string& prefix, const std::string& name) {
  namespace fs = std::filesystem;
  fs::path d = fs::temp_directory_path() / (prefix + "_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace nns::test
