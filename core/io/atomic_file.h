// The one crash-safe way to write a file (every output of nnsplitter goes through it).
//
// Guarantees, for a target path P:
// - Readers only ever see the old P or the complete new P, never a part of it: the bytes go to
//   a temporary file in P's folder (same filesystem, so the rename is atomic), which is
//   fsync'ed, closed, renamed over P, and then the folder is fsync'ed so that the rename
//   survives a power loss (best effort: some filesystems refuse fsync on a folder).
// - On any failure (an exception, a full disk, the file size limit) P is untouched and the
//   temporary file is removed before the error propagates. An AtomicFile destroyed without
//   commit() removes its temporary file (RAII), so an exception thrown by a writer between
//   creation and commit leaves nothing behind.
// - Only SIGKILL (or a power loss) can leave a temporary file behind. Temporaries have our own
//   recognisable name, `.<name>.nns-tmp-<host>-<pid>-<8 hex>` (the name cut to 96 bytes), and
//   the first AtomicFile a process creates in a folder removes the stale ones there (see
//   remove_stale_temporaries: files of that pattern whose writer is gone; nothing else).
// - Errors are std::runtime_error naming P: "P: cannot write: file size limit (ulimit -f)
//   reached", "P: cannot write: disk full (no space left on device)", "P: folder 'D' does not
//   exist", "P: already exists" (Existing::Refuse)...
// - SIGXFSZ, whose default action kills a process that writes past `ulimit -f` without a word,
//   is ignored process-wide (ignore_file_size_signal(), called by main() and by the first
//   AtomicFile), so such a write fails with EFBIG and becomes the error above.
//
// One way in: bytes (write_file_atomically, or AtomicFile::write then commit()). A library
// that would write by path builds its file in memory first (HDF5: experiments/h5file.cpp).
#pragma once

#include <sys/types.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace nns::io {

enum class Existing {
  Replace,  // commit() replaces an existing target atomically
  Refuse,   // commit() fails with "already exists" and leaves the existing target alone
            // (renameat2 RENAME_NOREPLACE, or link + unlink where the filesystem lacks it)
};

// Thrown, naming the target, when Existing::Refuse meets an existing target.
struct FileExists : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct AtomicOptions {
  mode_t mode = 0644;  // permission bits of the new file (the umask applies); 0600 for secrets
  Existing existing = Existing::Replace;
};

class AtomicFile {
 public:
  // Checks that the target's folder exists, removes stale temporaries there (once per folder
  // and process), and creates the temporary file (O_EXCL, mode from `o`).
  explicit AtomicFile(std::string target, AtomicOptions o = {});
  ~AtomicFile();  // without commit(): closes and removes the temporary file
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& target() const { return target_; }
  // The temporary file (its name says whose it is: see remove_stale_temporaries).
  const std::string& temp_path() const { return temp_; }

  // Appends bytes to the temporary file (EINTR and short writes handled).
  void write(std::string_view bytes);
  // fsync, close, rename over (or, with Existing::Refuse, link to) the target, fsync of the
  // folder. After a failure the temporary file is gone and the target untouched. Once only.
  void commit();

 private:
  [[noreturn]] void fail(const std::string& what, int err) const;
  void remove_temp() noexcept;

  std::string target_, temp_, dir_;
  AtomicOptions opt_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes `bytes` to `path` atomically (everything above).
void write_file_atomically(const std::string& path, std::string_view bytes, AtomicOptions o = {});

// "file size limit (ulimit -f) reached" for EFBIG, "disk full (no space left on device)" for
// ENOSPC, "disk quota exceeded" for EDQUOT, strerror otherwise.
std::string write_errno_text(int err);

// Sets SIGXFSZ to SIG_IGN (idempotent, thread-safe). Called at startup by main().
void ignore_file_size_signal();

// True when `filename` (no folder) has the pattern of our temporary files.
bool is_temporary_name(std::string_view filename);

// Removes, in `folder` only (not below), the regular files named like our temporaries whose
// writer is gone: written on this host by a process that no longer runs (its pid is free, or
// the pid now belongs to a process started after the file's last change); written on another
// host (a shared filesystem), unchanged since before this process started and for an hour.
// Anything else is never touched. Returns how many it removed; errors are ignored (a folder we
// cannot read holds nothing we could remove).
int remove_stale_temporaries(const std::string& folder);

}  // namespace nns::io
