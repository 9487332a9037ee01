#include "core/io/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

namespace nns::io {

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kMarker = ".nns-tmp-";
constexpr size_t kMaxNameInTemp = 96;  // keeps the temporary name under NAME_MAX (255)
constexpr size_t kMaxHost = 32;
constexpr double kForeignStaleSeconds = 3600;

// Our host name as it appears in temporary names: [A-Za-z0-9.-], at most kMaxHost bytes.
const std::string& temp_host() {
  static const std::string host = [] {
    char buf[256] = {0};
    if (::gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) std::strcpy(buf, "localhost");
    std::string h;
    for (const char* p = buf; *p && h.size() < kMaxHost; ++p)
      h += std::isalnum(static_cast<unsigned char>(*p)) || *p == '.' || *p == '-' ? *p : '_';
    return h;
  }();
  return host;
}

uint32_t random_u32() {
  uint32_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r)
    r = uint32_t(std::time(nullptr)) ^ (uint32_t(::getpid()) << 16) ^ uint32_t(std::rand());
  return r;
}

std::string temp_name(const std::string& filename) {
  char suffix[64];
  std::snprintf(suffix, sizeof suffix, "-%ld-%08x", long(::getpid()), unsigned(random_u32()));
  return "." + filename.substr(0, kMaxNameInTemp) + std::string(kMarker) + temp_host() + suffix;
}

struct TempNameParts {
  std::string host;
  pid_t pid = 0;
};

std::optional<TempNameParts> parse_temp_name(std::string_view name) {
  if (name.size() < 2 || name[0] != '.') return std::nullopt;
  const size_t m = name.rfind(kMarker);
  if (m == std::string_view::npos || m < 2) return std::nullopt;
  std::string_view rest = name.substr(m + kMarker.size());  // host-pid-rand
  const size_t r = rest.rfind('-');
  if (r == std::string_view::npos || rest.size() - r - 1 != 8) return std::nullopt;
  for (char c : rest.substr(r + 1))
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
  const size_t p = rest.rfind('-', r - 1);
  if (p == std::string_view::npos || p == 0 || r == 0 || p + 1 == r) return std::nullopt;
  std::string_view pid = rest.substr(p + 1, r - p - 1);
  if (pid.size() > 9) return std::nullopt;
  long v = 0;
  for (char c : pid) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  if (v <= 0) return std::nullopt;
  return TempNameParts{std::string(rest.substr(0, p)), pid_t(v)};
}

// When the process `pid` started, in seconds since the epoch (from /proc); nullopt if unknown.
std::optional<double> process_start_time(pid_t pid) {
  static const std::optional<double> boot = [] () -> std::optional<double> {
    std::ifstream in("/proc/stat");
    std::string key;
    double v;
    while (in >> key) {
      if (key == "btime" && in >> v) return v;
      in.ignore(1 << 20, '\n');
    }
    return std::nullopt;
  }();
  if (!boot) return std::nullopt;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return std::nullopt;
  const size_t close = line.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(line.substr(close + 1));
  std::string f;
  for (int i = 3; i <= 22 && fields >> f; ++i)
    if (i == 22) return *boot + std::strtod(f.c_str(), nullptr) / double(::sysconf(_SC_CLK_TCK));
  return std::nullopt;
}

double self_start_time() {
  static const double t = process_start_time(::getpid()).value_or(double(std::time(nullptr)));
  return t;
}

bool pid_alive(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

bool is_stale(const TempNameParts& parts, const struct stat& st) {
  const double mtime = double(st.st_mtim.tv_sec) + 1e-9 * double(st.st_mtim.tv_nsec);
  if (parts.host != temp_host())
    return mtime < self_start_time() &&
           double(std::time(nullptr)) - mtime > kForeignStaleSeconds;
  if (!pid_alive(parts.pid)) return true;
  // The pid is taken, but by a process that started after the file last changed: reused.
  auto started = process_start_time(parts.pid);
  return started && *started > mtime + 1.0;
}

// Folders already swept by this process.
void remove_stale_once(const std::string& dir) {
  static std::mutex mu;
  static std::set<std::string> done;
  std::error_code ec;
  std::string key = fs::weakly_canonical(dir, ec).string();
  if (ec) key = dir;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (!done.insert(key).second) return;
  }
  remove_stale_temporaries(dir);
}

// For the crash tests (tests/crash), NNS_TEST_CRASH_AT makes "killed during a write"
// reproducible:
//   <stage>:<n>  SIGKILL inside the n-th commit of this process (1-based) at <stage>: half (the
//                temporary cut to half its size), unsynced, synced, renamed (folder not synced);
//   log:<file>   append each committed target to <file>, one a line (what to aim at).
// Unset, it costs one getenv per process.
struct CrashPoint {
  std::string stage, log;
  long n = 0;
};
const CrashPoint& crash_point() {
  static const CrashPoint cp = [] {
    CrashPoint c;
    const char* v = std::getenv("NNS_TEST_CRASH_AT");
    if (!v) return c;
    const std::string s(v);
    const size_t colon = s.find(':');
    if (colon == std::string::npos) return c;
    c.stage = s.substr(0, colon);
    if (c.stage == "log") c.log = s.substr(colon + 1);
    else c.n = std::strtol(s.c_str() + colon + 1, nullptr, 10);
    return c;
  }();
  return cp;
}
std::atomic<long> g_commits{0};

void maybe_crash(long commit, const char* stage, int fd) {
  const CrashPoint& cp = crash_point();
  if (cp.n != commit || cp.stage != stage) return;
  if (cp.stage == "half") {
    struct stat st {};
    if (::fstat(fd, &st) == 0) (void)!::ftruncate(fd, st.st_size / 2);
  }
  ::kill(::getpid(), SIGKILL);
}

void log_commit(const std::string& target) {
  const std::string& log = crash_point().log;
  if (log.empty()) return;
  std::ofstream(log, std::ios::app) << fs::absolute(target).string() << "\n";
}

void sync_folder(const std::string& dir) {
  // Best effort: some filesystems refuse fsync on a folder; the rename itself is done.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace

std::string write_errno_text(int err) {
  switch (err) {
    case EFBIG: return "file size limit (ulimit -f) reached";
    case ENOSPC: return "disk full (no space left on device)";
    case EDQUOT: return "disk quota exceeded";
    default: return std::strerror(err);
  }
}

void ignore_file_size_signal() {
  static std::once_flag once;
  std::call_once(once, [] { ::signal(SIGXFSZ, SIG_IGN); });
}

bool is_temporary_name(std::string_view filename) { return parse_temp_name(filename).has_value(); }

int remove_stale_temporaries(const std::string& folder) {
  DIR* d = ::opendir(folder.empty() ? "." : folder.c_str());
  if (!d) return 0;
  int removed = 0;
  while (const dirent* e = ::readdir(d)) {
    auto parts = parse_temp_name(e->d_name);
    if (!parts) continue;
    struct stat st {};
    if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
      continue;
    if (is_stale(*parts, st) && ::unlinkat(::dirfd(d), e->d_name, 0) == 0) ++removed;
  }
  ::closedir(d);
  return removed;
}

AtomicFile::AtomicFile(std::string target, AtomicOptions o)
    : target_(std::move(target)), opt_(o) {
  ignore_file_size_signal();
  const fs::path p(target_);
  if (target_.empty() || p.filename().empty() || p.filename() == "." || p.filename() == "..")
    throw std::runtime_error(target_ + ": not a file path");
  dir_ = p.parent_path().empty() ? std::string(".") : p.parent_path().string();
  struct stat st {};
  if (::stat(dir_.c_str(), &st) != 0) {
    const int e = errno;
    if (e == ENOENT) throw std::runtime_error(target_ + ": folder '" + dir_ + "' does not exist");
    throw std::runtime_error(target_ + ": cannot access folder '" + dir_ + "': " + std::strerror(e));
  }
  if (!S_ISDIR(st.st_mode)) throw std::runtime_error(target_ + ": '" + dir_ + "' is not a folder");
  if (opt_.existing == Existing::Refuse && ::lstat(target_.c_str(), &st) == 0)
    throw FileExists(target_ + ": already exists");
  remove_stale_once(dir_);
  for (int attempt = 0; fd_ < 0; ++attempt) {
    temp_ = (fs::path(dir_) / temp_name(p.filename().string())).string();
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, opt_.mode);
    if (fd_ < 0 && (errno != EEXIST || attempt == 8)) {
      const int e = errno;
      temp_.clear();
      throw std::runtime_error(target_ + ": cannot create a temporary file in folder '" + dir_ +
                               "': " + write_errno_text(e));
    }
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) remove_temp();
}

void AtomicFile::remove_temp() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_.empty()) ::unlink(temp_.c_str());
  temp_.clear();
}

void AtomicFile::fail(const std::string& what, int err) const {
  throw std::runtime_error(target_ + ": " + what + ": " + write_errno_text(err));
}

void AtomicFile::write(std::string_view bytes) {
  if (fd_ < 0) throw std::logic_error(target_ + ": AtomicFile::write after commit");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd_, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      remove_temp();
      fail("cannot write", e);
    }
    done += size_t(w);
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw std::logic_error(target_ + ": AtomicFile::commit twice");
  const long n = ++g_commits;
  maybe_crash(n, "half", fd_);
  maybe_crash(n, "unsynced", fd_);
  if (::fsync(fd_) != 0) {
    const int e = errno;
    remove_temp();
    fail("cannot write (fsync)", e);
  }
  maybe_crash(n, "synced", fd_);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    const int e = errno;
    remove_temp();
    fail("cannot write (close)", e);
  }
  if (opt_.existing == Existing::Replace) {
    if (::rename(temp_.c_str(), target_.c_str()) != 0) {
      const int e = errno;
      remove_temp();
      fail("cannot replace it with the temporary file", e);
    }
  } else if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, target_.c_str(), RENAME_NOREPLACE) !=
             0) {
    int e = errno;
    if (e == EINVAL || e == ENOSYS || e == ENOTSUP) {
      // No RENAME_NOREPLACE on this filesystem: a hard link also refuses an existing target.
      e = ::link(temp_.c_str(), target_.c_str()) == 0 ? 0 : errno;
      if (e == 0) ::unlink(temp_.c_str());
    }
    if (e != 0) {
      remove_temp();
      if (e == EEXIST) throw FileExists(target_ + ": already exists");
      fail("cannot create it from the temporary file", e);
    }
  }
  committed_ = true;
  log_commit(target_);
  maybe_crash(n, "renamed", -1);
  sync_folder(dir_);
}

void write_file_atomically(const std::string& path, std::string_view bytes, AtomicOptions o) {
  AtomicFile f(path, o);
  f.write(bytes);
  f.commit();
}

}  // namespace nns::io
