#include "core/io/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace nns::io {

namespace {

std::string kind_of(mode_t m) {
  if (S_ISREG(m)) return "";
  if (S_ISDIR(m)) return "a folder";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "a special file";
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw InputFileError(path + ": " + what);
}

void refuse_kind(const std::string& path, const std::string& kind, const std::string& what) {
  if (kind.empty()) return;
  if (kind == "a folder") fail(path, "is a folder, not a " + what);
  fail(path, "is " + kind + ", not a " + what + " (a " + what + " must be a regular file)");
}

void refuse_size(const std::string& path, uint64_t size, uint64_t max_bytes,
                 const std::string& what) {
  if (size > max_bytes)
    fail(path, std::to_string(size) + " bytes, more than the limit of " +
                   byte_size_text(max_bytes) + " for a " + what);
}

}  // namespace

std::string byte_size_text(uint64_t n) {
  if (n >= (uint64_t(1) << 30) && n % (uint64_t(1) << 30) == 0)
    return std::to_string(n >> 30) + " GiB";
  if (n >= (uint64_t(1) << 20) && n % (uint64_t(1) << 20) == 0)
    return std::to_string(n >> 20) + " MiB";
  if (n >= (uint64_t(1) << 10) && n % (uint64_t(1) << 10) == 0)
    return std::to_string(n >> 10) + " KiB";
  return std::to_string(n) + " bytes";
}

std::string non_regular_kind(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return errno == ENOENT ? "not found" : "";
  return kind_of(st.st_mode);
}

std::string read_input_file(const std::string& path, uint64_t max_bytes, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int e = errno;
    if (e == ENOENT) fail(path, what + " not found");
    fail(path, "cannot read the " + what + ": " + std::strerror(e));
  }
  refuse_kind(path, kind_of(st.st_mode), what);  // before opening: a FIFO would block in open()
  refuse_size(path, uint64_t(st.st_size), max_bytes, what);
  // O_NONBLOCK: should the path have become a FIFO since stat(), open() does not wait for a
  // writer (fstat below refuses it). It changes nothing for a regular file.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail(path, "cannot open the " + what + ": " + std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::fstat(fd, &st) != 0) fail(path, "cannot read the " + what + ": " + std::strerror(errno));
  refuse_kind(path, kind_of(st.st_mode), what);
  refuse_size(path, uint64_t(st.st_size), max_bytes, what);
  std::string out;
  out.reserve(size_t(st.st_size));
  char chunk[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, chunk, sizeof chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(path, "cannot read the " + what + ": " + std::strerror(errno));
    }
    if (r == 0) break;
    out.append(chunk, size_t(r));
    refuse_size(path, out.size(), max_bytes, what);  // grew while we read it
  }
  return out;
}

}  // namespace nns::io
