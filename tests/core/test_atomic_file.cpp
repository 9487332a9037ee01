// The crash-safe writer (core/io/atomic_file.h) and the signal guard (core/io/signal_guard.h):
// contents and modes, failures injected at every step (missing or unwritable folder, a rename
// that fails, an exception from a path writer, the file size limit, a refused overwrite) each
// leaving the target untouched and no temporary file; the stale-temporary sweep removing only
// what is ours and dead; the guard's flag, second-signal exit and handler restoration.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "core/io/atomic_file.h"
#include "core/io/signal_guard.h"

namespace fs = std::filesystem;
using nns::io::AtomicFile;
using nns::io::AtomicOptions;
using nns::io::Existing;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("nns_atomic_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void put(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// Names in `dir`, sorted.
std::vector<std::string> names(const fs::path& dir) {
  std::vector<std::string> n;
  for (auto& e : fs::directory_iterator(dir)) n.push_back(e.path().filename().string());
  std::sort(n.begin(), n.end());
  return n;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }
bool contains(const std::string& s, const std::string& p) { return s.find(p) != std::string::npos; }

mode_t mode_of(const fs::path& p) {
  struct stat st {};
  ::stat(p.c_str(), &st);
  return st.st_mode & 0777;
}

// A temporary name of ours for `target` with the given host and pid.
std::string temp_name(const std::string& target, const std::string& host, long pid) {
  return "." + target + ".nns-tmp-" + host + "-" + std::to_string(pid) + "-0123abcd";
}

std::string our_host() {
  // The host part of a temporary we create ourselves.
  fs::path d = temp_dir("host");
  AtomicFile f((d / "x").string());
  std::string name = fs::path(f.temp_path()).filename().string();
  const std::string marker = ".nns-tmp-";
  std::string rest = name.substr(name.rfind(marker) + marker.size());
  rest = rest.substr(0, rest.rfind('-'));
  return rest.substr(0, rest.rfind('-'));
}

void set_mtime(const fs::path& p, time_t seconds_ago) {
  struct timespec t[2];
  t[0].tv_sec = t[1].tv_sec = std::time(nullptr) - seconds_ago;
  t[0].tv_nsec = t[1].tv_nsec = 0;
  ::utimensat(AT_FDCWD, p.c_str(), t, 0);
}

}  // namespace

TEST(AtomicFile, WritesReplacesAndSetsTheMode) {
  auto d = temp_dir("write");
  const fs::path p = d / "out.bin";
  std::string bytes(100000, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = char(i * 7);
  nns::io::write_file_atomically(p.string(), bytes);
  EXPECT_EQ(read(p), bytes);
  const mode_t um = ::umask(0);
  ::umask(um);
  EXPECT_EQ(mode_of(p), 0644 & ~um);
  nns::io::write_file_atomically(p.string(), "second");
  EXPECT_EQ(read(p), "second");
  nns::io::write_file_atomically((d / "secret").string(), "s", {0600});
  EXPECT_EQ(mode_of(d / "secret"), 0600u);
  nns::io::write_file_atomically((d / "empty").string(), "");
  EXPECT_TRUE(fs::exists(d / "empty"));
  EXPECT_EQ(fs::file_size(d / "empty"), 0u);
  EXPECT_EQ(names(d), (std::vector<std::string>{"empty", "out.bin", "secret"}));

  // A name near NAME_MAX: the temporary's copy of it is cut, the file is written.
  const std::string long_name(250, 'n');
  nns::io::write_file_atomically((d / long_name).string(), "long");
  EXPECT_EQ(read(d / long_name), "long");
}

TEST(AtomicFile, TemporaryIsOursInTheSameFolderAndGoesAwayWithoutCommit) {
  auto d = temp_dir("raii");
  put(d / "t", "old");
  std::string tmp;
  {
    AtomicFile f((d / "t").string());
    tmp = f.temp_path();
    EXPECT_EQ(fs::path(tmp).parent_path(), d);
    EXPECT_TRUE(nns::io::is_temporary_name(fs::path(tmp).filename().string())) << tmp;
    EXPECT_TRUE(starts_with(fs::path(tmp).filename().string(), ".t.nns-tmp-")) << tmp;
    f.write("new, but never committed");
    EXPECT_TRUE(fs::exists(tmp));
  }
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_EQ(read(d / "t"), "old");
  EXPECT_EQ(names(d), (std::vector<std::string>{"t"}));
}

TEST(AtomicFile, MissingOrUnusableFolderNamesTheFile) {
  auto d = temp_dir("folder");
  const std::string missing = (d / "nope" / "x.bin").string();
  EXPECT_EQ(error_of([&] { nns::io::write_file_atomically(missing, "x"); }),
            missing + ": folder '" + (d / "nope").string() + "' does not exist");
  put(d / "file", "");
  const std::string under_file = (d / "file" / "x.bin").string();
  EXPECT_EQ(error_of([&] { nns::io::write_file_atomically(under_file, "x"); }),
            under_file + ": '" + (d / "file").string() + "' is not a folder");
  EXPECT_TRUE(contains(error_of([&] { nns::io::write_file_atomically((d / "").string(), "x"); }),
                       "not a file path"));
}

TEST(AtomicFile, UnwritableFolderFailsCleanly) {
  auto d = temp_dir("unwritable");
  fs::path ro = d / "ro";
  fs::create_directories(ro);
  put(ro / "keep", "kept");
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
  // root ignores permission bits: then use a folder nobody may create files in.
  fs::path target = ro / "keep";
  if (::access(ro.c_str(), W_OK) == 0) {
    if (::access("/sys", W_OK) == 0 && ::geteuid() != 0) GTEST_SKIP() << "no unwritable folder";
    target = "/sys/nns-test-file";
  }
  const std::string e = error_of([&] { nns::io::write_file_atomically(target.string(), "new"); });
  EXPECT_TRUE(starts_with(e, target.string() + ": cannot create a temporary file in folder '" +
                                 target.parent_path().string() + "': "))
      << e;
  if (target.parent_path() == ro) {
    EXPECT_EQ(read(ro / "keep"), "kept");
    EXPECT_EQ(names(ro), (std::vector<std::string>{"keep"}));
  } else {
    EXPECT_FALSE(fs::exists(target));
  }
  fs::permissions(ro, fs::perms::owner_all);
}

TEST(AtomicFile, RenameFailureRemovesTheTemporary) {
  auto d = temp_dir("rename");
  fs::create_directories(d / "target" / "inside");  // a non-empty folder cannot be replaced
  const std::string e =
      error_of([&] { nns::io::write_file_atomically((d / "target").string(), "bytes"); });
  EXPECT_TRUE(starts_with(e, (d / "target").string() + ": cannot replace it with the temporary "
                                                        "file: "))
      << e;
  EXPECT_TRUE(fs::is_directory(d / "target" / "inside"));
  EXPECT_EQ(names(d), (std::vector<std::string>{"target"}));
}

TEST(AtomicFile, RefuseNeverOverwrites) {
  auto d = temp_dir("refuse");
  const fs::path p = d / "key";
  nns::io::write_file_atomically(p.string(), "first", {0600, Existing::Refuse});
  EXPECT_EQ(read(p), "first");
  EXPECT_THROW(nns::io::write_file_atomically(p.string(), "second", {0600, Existing::Refuse}),
               nns::io::FileExists);
  EXPECT_EQ(read(p), "first");
  // The target appears between the start and the commit (another keygen won the race).
  const fs::path q = d / "raced";
  {
    AtomicFile f(q.string(), {0600, Existing::Refuse});
    f.write("mine");
    put(q, "theirs");
    EXPECT_THROW(f.commit(), nns::io::FileExists);
  }
  EXPECT_EQ(read(q), "theirs");
  EXPECT_EQ(names(d), (std::vector<std::string>{"key", "raced"}));
}

TEST(AtomicFile, FileSizeLimitIsAClearErrorNotADeath) {
  // In a child: the limit would stop this test process's own writes too.
  auto d = temp_dir("fsize");
  const fs::path p = d / "big.bin";
  put(p, "previous");
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    struct rlimit lim {4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &lim);
    std::string msg = "(no error)";
    try {
      nns::io::write_file_atomically(p.string(), std::string(10000, 'x'));
    } catch (const std::exception& e) {
      msg = e.what();
    }
    (void)!::write(pipefd[1], msg.data(), msg.size());
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string msg;
  char buf[512];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) msg.append(buf, size_t(n));
  ::close(pipefd[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st)) << "killed by signal " << WTERMSIG(st) << " (SIGXFSZ not ignored?)";
  EXPECT_EQ(msg, p.string() + ": cannot write: file size limit (ulimit -f) reached");
  EXPECT_EQ(read(p), "previous");
  EXPECT_EQ(names(d), (std::vector<std::string>{"big.bin"}));
}

TEST(AtomicFile, ErrnoTexts) {
  EXPECT_EQ(nns::io::write_errno_text(EFBIG), "file size limit (ulimit -f) reached");
  EXPECT_EQ(nns::io::write_errno_text(ENOSPC), "disk full (no space left on device)");
  EXPECT_EQ(nns::io::write_errno_text(EDQUOT), "disk quota exceeded");
  EXPECT_EQ(nns::io::write_errno_text(EACCES), std::strerror(EACCES));
}

TEST(AtomicFile, TemporaryNamePattern) {
  using nns::io::is_temporary_name;
  EXPECT_TRUE(is_temporary_name(".run.h5.nns-tmp-host-12-0123abcd"));
  EXPECT_TRUE(is_temporary_name(".a.nns-tmp-node-1.cluster-7-ffffffff"));  // dashes in the host
  EXPECT_FALSE(is_temporary_name("run.h5.nns-tmp-host-12-0123abcd"));      // not hidden
  EXPECT_FALSE(is_temporary_name(".run.h5.nns-tmp-host-12-0123abc"));      // 7 hex digits
  EXPECT_FALSE(is_temporary_name(".run.h5.nns-tmp-host-12-0123abcg"));
  EXPECT_FALSE(is_temporary_name(".run.h5.nns-tmp-host-x2-0123abcd"));     // pid not a number
  EXPECT_FALSE(is_temporary_name(".run.h5.nns-tmp--12-0123abcd"));         // no host
  EXPECT_FALSE(is_temporary_name(".run.h5.nns-tmp-host-0-0123abcd"));      // pid 0
  EXPECT_FALSE(is_temporary_name(".nns-tmp-host-12-0123abcd"));            // no target name
  EXPECT_FALSE(is_temporary_name(".run.h5.tmp-AbC123"));                   // mkstemp style
  EXPECT_FALSE(is_temporary_name("run.h5.tmp"));
}

TEST(AtomicFile, StaleTemporariesOfOursAreRemovedNothingElse) {
  auto d = temp_dir("stale");
  const std::string host = our_host();
  // A pid that is certainly free: a child that has been reaped.
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  const std::string dead_tmp = temp_name("a.h5", host, dead);
  const std::string live_tmp = temp_name("b.h5", host, ::getpid());     // ours, being written
  const std::string reused_tmp = temp_name("c.h5", host, ::getpid());   // our pid, older file
  const std::string foreign_new = temp_name("d.h5", "elsewhere", 4242);  // another host, fresh
  const std::string foreign_old = temp_name("e.h5", "elsewhere", 4243);  // another host, old
  for (const auto& n : {dead_tmp, live_tmp, reused_tmp, foreign_new, foreign_old}) put(d / n, "x");
  set_mtime(d / reused_tmp, 365 * 24 * 3600);  // before this process started: pid reused
  set_mtime(d / foreign_old, 2 * 3600);
  // Never touched: other names, and a folder with our pattern.
  const std::vector<std::string> others = {".a.h5.tmp-Xy12Zq", "a.h5.tmp", "a.h5",
                                           ".a.h5.nns-tmp-host-1-zzzzzzzz"};
  for (const auto& n : others) put(d / n, "keep");
  fs::create_directories(d / temp_name("dir", host, dead));
  set_mtime(d / ".a.h5.tmp-Xy12Zq", 365 * 24 * 3600);

  EXPECT_EQ(nns::io::remove_stale_temporaries(d.string()), 3);
  std::vector<std::string> expect = others;
  expect.push_back(live_tmp);
  expect.push_back(foreign_new);
  expect.push_back(temp_name("dir", host, dead));
  std::sort(expect.begin(), expect.end());
  EXPECT_EQ(names(d), expect);
  EXPECT_EQ(nns::io::remove_stale_temporaries(d.string()), 0);
  EXPECT_EQ(nns::io::remove_stale_temporaries((d / "missing").string()), 0);

  // The first write in a folder sweeps it.
  auto w = temp_dir("stale_write");
  put(w / temp_name("r.h5", host, dead), "left by a killed run");
  nns::io::write_file_atomically((w / "r.h5").string(), "result");
  EXPECT_EQ(names(w), (std::vector<std::string>{"r.h5"}));
}

// ---- the signal guard

TEST(SignalGuard, FirstSignalSetsTheFlagAndHandlersComeBack) {
  struct sigaction before;
  sigaction(SIGUSR1, nullptr, &before);
  {
    nns::io::SignalGuard sig;
    EXPECT_FALSE(sig.stopped());
    raise(SIGUSR1);
    EXPECT_TRUE(sig.stopped());
    EXPECT_TRUE(sig.flag()->load());
    EXPECT_EQ(sig.last_signal(), SIGUSR1);
    EXPECT_THROW(nns::io::SignalGuard second, std::logic_error);  // one at a time
  }
  {
    nns::io::SignalGuard sig;  // a fresh guard starts cleared
    EXPECT_FALSE(sig.stopped());
    raise(SIGTERM);
    EXPECT_EQ(sig.last_signal(), SIGTERM);
  }
  struct sigaction after;
  sigaction(SIGUSR1, nullptr, &after);
  EXPECT_EQ(before.sa_handler, after.sa_handler);
}

TEST(SignalGuard, SecondSignalEndsTheProcessAtOnce) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(2);  // keep the guard's messages out of the test log
    nns::io::SignalGuard sig;
    raise(SIGINT);
    if (!sig.stopped()) ::_exit(3);
    raise(SIGINT);
    ::_exit(4);  // not reached
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st)) << "exit code " << WEXITSTATUS(st);
  EXPECT_EQ(WTERMSIG(st), SIGINT);
}
