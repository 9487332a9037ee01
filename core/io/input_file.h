// Reading a small file that someone else wrote (a YAML config, a sweep file, a settings record,
// a sweep's runs.tsv): one way in, with the guarantees stated first.
//
// - Only a regular file is read. A folder, a FIFO, a character or block device (`/dev/zero`,
//   `/dev/urandom`, a terminal) or a socket is refused by its kind before it is opened, so that
//   nothing blocks on a FIFO without a writer and nothing reads an endless device.
// - A size bound is checked before a byte is read (st_size), and again while reading (a file
//   that grows past the bound while we read it is refused too): a 50 MB "config" is refused at
//   once instead of being parsed for half a minute.
// - Every error is an InputFileError (a std::runtime_error) whose message starts with the path:
//   "P: config file not found", "P: is a folder, not a config file", "P: is a character device,
//   not a config file (a config file must be a regular file)", "P: 52428800 bytes, more than the
//   limit of 1 MiB for a config file", "P: cannot read the config file: <errno text>".
//   Callers whose input is a usage or configuration error (exit 2) rethrow it as theirs.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace nns::io {

// The bounds of the files read through read_input_file (documented in the README).
inline constexpr uint64_t kMaxConfigBytes = uint64_t(1) << 20;  // YAML configs, sweep files
inline constexpr uint64_t kMaxRecordBytes = uint64_t(1) << 20;  // JSON settings records we write
inline constexpr uint64_t kMaxRunsTableBytes = uint64_t(256) << 20;  // runs.tsv (1,000,000 runs)

struct InputFileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The whole content of `path`, a regular file of at most `max_bytes` bytes; `what` names the
// kind of file in errors ("config file", "sweep file"). Throws InputFileError.
std::string read_input_file(const std::string& path, uint64_t max_bytes, const std::string& what);

// "" when `path` names a regular file (after symbolic links), else what it is, for errors:
// "not found", "a folder", "a FIFO", "a character device", "a block device", "a socket".
// Readers that read large files their own way (safetensors, secrets, key files) check with it
// before opening.
std::string non_regular_kind(const std::string& path);

// A byte count for errors: "1 MiB", "256 MiB", "1536 bytes".
std::string byte_size_text(uint64_t n);

}  // namespace nns::io
