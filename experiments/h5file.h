// A small RAII layer over the HDF5 C API for result files (docs/results-format.md).
//
// Every HDF5 call is checked: a failure throws std::runtime_error naming the file, the object
// path and the operation, plus HDF5's innermost error message (e.g. "file signature not
// found" for a file that is not HDF5 or was cut short). HDF5's automatic printing of its error
// stack to stderr is switched off (H5Eset_auto2) so that only our message reaches the user.
//
// Layout conventions: paths are "a/b/c" (a leading "/" is optional); writing a dataset creates
// the intermediate groups; scalars are scalar dataspaces; doubles are IEEE f64 LE, integers
// i64 LE, strings variable-length UTF-8; every dataset carries a string attribute `units`.
// Writing a dataset or attribute that already exists replaces it.
//
// Cluster filesystems (Lustre, GPFS, NFS) often lack POSIX locks, and HDF5 >= 1.10 then fails
// to open or create a file ("unable to lock file"). Set HDF5_USE_FILE_LOCKING=FALSE in the
// environment of the job (it is read by the HDF5 library itself; nothing here needs changing).
//
// Not thread-safe (Debian's libhdf5 is the serial, non-thread-safe build): use a File from one
// thread, and do not use HDF5 from two threads at once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace nns::exp::h5 {

// Integer types other than int64_t (int, size_t, bool...): written as i64 without the
// ambiguity an `int` argument would meet between the double and int64_t overloads.
template <class T>
concept OtherInteger = std::is_integral_v<T> && !std::is_same_v<T, int64_t>;

class File {
 public:
  // Truncates or creates, read-write.
  static File create(const std::string& path);
  // Read-only; a missing, truncated or corrupt file gives an error naming it.
  static File open_read(const std::string& path);
  // A file that lives in memory only (HDF5's core driver, no backing store); `name` is used in
  // messages. image() gives its bytes; nothing is ever written to disk by HDF5 itself.
  static File create_in_memory(const std::string& name);
  // The bytes of the whole file as it would be on disk (flushes first).
  std::string image() const;

  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  const std::string& path() const { return path_; }
  bool is_open() const { return id_ >= 0; }

  // ---- writing (intermediate groups are created as needed) ----
  void write(const std::string& path, double v, const std::string& units);
  void write(const std::string& path, int64_t v, const std::string& units);
  template <OtherInteger T>
  void write(const std::string& path, T v, const std::string& units) {
    write(path, static_cast<int64_t>(v), units);
  }
  // shape {} = 1-D of v.size(); otherwise row-major N-D whose product must equal v.size().
  void write(const std::string& path, const std::vector<double>& v, const std::string& units,
             std::vector<int64_t> shape = {});
  void write(const std::string& path, const std::vector<int64_t>& v, const std::string& units,
             std::vector<int64_t> shape = {});
  // 1-D of variable-length UTF-8 strings.
  void write(const std::string& path, const std::vector<std::string>& v,
             const std::string& units = "string");

  // Scalar attributes on "/" or an existing group/dataset; a missing object is created as a
  // group (so that `search` attrs may be written before the datasets under it).
  void attr(const std::string& object_path, const std::string& name, const std::string& value);
  void attr(const std::string& object_path, const std::string& name, const char* value) {
    attr(object_path, name, std::string(value));
  }
  void attr(const std::string& object_path, const std::string& name, double value);
  void attr(const std::string& object_path, const std::string& name, int64_t value);
  template <OtherInteger T>
  void attr(const std::string& object_path, const std::string& name, T value) {
    attr(object_path, name, static_cast<int64_t>(value));
  }

  // ---- reading ----
  bool exists(const std::string& path) const;  // a group or dataset; "/" always exists
  std::vector<int64_t> shape(const std::string& path) const;  // {} for a scalar
  // Any numeric dataset, flattened row-major.
  std::vector<double> read_doubles(const std::string& path) const;
  // Integer datasets only.
  std::vector<int64_t> read_ints(const std::string& path) const;
  std::vector<std::string> read_strings(const std::string& path) const;  // variable or fixed length
  double read_double(const std::string& path) const;                     // scalar or 1-element
  std::string attr_string(const std::string& object_path, const std::string& name) const;
  double attr_double(const std::string& object_path, const std::string& name) const;  // any numeric
  int64_t attr_int(const std::string& object_path, const std::string& name) const;  // integer only
  bool has_attr(const std::string& object_path, const std::string& name) const;
  std::vector<std::string> list(const std::string& group_path) const;  // child names, sorted
  bool is_group(const std::string& path) const;  // an existing group ("/" included)
  std::vector<std::string> attr_names(const std::string& object_path) const;  // sorted

  void close();  // flushes and closes; a closed File throws on use; idempotent

 private:
  File(int64_t id, std::string path) : id_(id), path_(std::move(path)) {}
  int64_t check_open(const std::string& object, const char* op) const;
  void write_numeric(const std::string& path, const void* data, size_t n, bool is_int,
                     const std::string& units, std::vector<int64_t> shape);
  void write_units(int64_t dset, const std::string& path, const std::string& units);
  int64_t open_attr(const std::string& object_path, const std::string& name) const;
  void prepare_attr(const std::string& object_path, const std::string& name);

  int64_t id_ = -1;  // hid_t (int64_t since HDF5 1.10)
  std::string path_;
};

// Writes via fill(file) into a temporary file beside `path` and commits it through
// core/io/atomic_file.h (fsync, rename, fsync of the folder). On any exception the temporary
// file is removed, `path` (if it existed) is untouched, and the exception propagates; a full
// disk or the file size limit is named as the cause.
void write_atomically(const std::string& path, const std::function<void(File&)>& fill);

// True when `path` exists, opens as HDF5 and has the root attribute "format". Complete files
// only exist under their final name (write_atomically), so this is the sweeps' completeness test.
bool is_complete_result(const std::string& path);

}  // namespace nns::exp::h5
