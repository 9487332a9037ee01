// Running a program as a child process with the controls the crash tests need: extra
// environment, a file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets) and SIGKILL after a
// delay. Output (stdout and stderr) goes to a pipe and comes back as text, so that an error
// message can be read even when the limit forbids writing files.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

extern char** environ;

namespace nns::test {

struct ChildOptions {
  std::vector<std::string> env;           // "KEY=value", added to (or replacing) ours
  std::optional<double> kill_after;        // seconds; SIGKILL then
  std::optional<rlim_t> file_size_limit;  // bytes (RLIMIT_FSIZE)
  std::string cwd;                        // "" = ours
};

struct ChildResult {
  bool exited = false;  // normal exit (then `code`); otherwise `signal` ended it
  int code = -1;
  int signal = 0;
  double seconds = 0;
  std::string output;  // stdout and stderr, merged
  bool killed() const { return !exited && signal == SIGKILL; }
};

inline ChildResult run_child(const std::vector<std::string>& argv, const ChildOptions& o = {}) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    bool replaced = false;
    for (const auto& x : o.env)
      replaced = replaced || kv.compare(0, x.find('=') + 1, x, 0, x.find('=') + 1) == 0;
    if (!replaced) env.push_back(kv);
  }
  env.insert(env.end(), o.env.begin(), o.env.end());
  std::vector<char*> args, envp;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  args.push_back(nullptr);
  envp.push_back(nullptr);

  int pipefd[2];
  ChildResult r;
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return r;
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) return r;
  if (pid == 0) {  // only async-signal-safe calls from here to exec
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    if (o.file_size_limit) {
      struct rlimit lim {*o.file_size_limit, *o.file_size_limit};
      ::setrlimit(RLIMIT_FSIZE, &lim);
    }
    if (!o.cwd.empty() && ::chdir(o.cwd.c_str()) != 0) ::_exit(126);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  bool sent = false;
  for (;;) {
    int timeout_ms = -1;
    if (o.kill_after && !sent) {
      const double left = *o.kill_after - elapsed();
      if (left <= 0) {
        ::kill(pid, SIGKILL);
        sent = true;
      } else {
        timeout_ms = int(left * 1000) + 1;
      }
    }
    struct pollfd p {pipefd[0], POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) > 0) {
      char buf[4096];
      const ssize_t n = ::read(pipefd[0], buf, sizeof buf);
      if (n == 0) break;  // every writer gone: the child (and anything it started) ended
      if (n > 0) r.output.append(buf, size_t(n));
    }
  }
  ::close(pipefd[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.seconds = elapsed();
  r.exited = WIFEXITED(st);
  r.code = r.exited ? WEXITSTATUS(st) : -1;
  r.signal = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
  return r;
}

}  // namespace nns::test
