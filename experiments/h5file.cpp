#include "experiments/h5file.h"

#include <hdf5.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "core/io/atomic_file.h"

namespace nns::exp::h5 {

static_assert(std::is_same_v<hid_t, int64_t>, "HDF5 >= 1.10 is required (64-bit hid_t)");

namespace fs = std::filesystem;

namespace {

// ---- error handling ----

// Our messages replace HDF5's stack dump; called before every open/create (the switch is
// per-thread in thread-safe builds of the library, so it is not done once globally).
void silence_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

herr_t innermost_message(unsigned /*n*/, const H5E_error2_t* e, void* data) {
  // Walked downward: the last description seen is the innermost (the actual cause).
  if (e && e->desc && *e->desc) *static_cast<std::string*>(data) = e->desc;
  return 0;
}

// The cause recorded on HDF5's error stack by the call that just failed; clears the stack.
std::string hdf5_cause() {
  std::string cause;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost_message, &cause);
  H5Eclear2(H5E_DEFAULT);
  return cause.empty() ? std::string("no detail from HDF5") : cause;
}

[[noreturn]] void fail(const std::string& file, const std::string& object, const std::string& op,
                       const std::string& cause = "") {
  std::string msg = "HDF5 file '" + file + "': " + op + " '" + object + "' failed: ";
  msg += cause.empty() ? hdf5_cause() : cause;
  throw std::runtime_error(msg);
}

// An HDF5 identifier closed by its matching H5?close on scope exit.
class Id {
 public:
  Id() = default;
  Id(hid_t id, herr_t (*closer)(hid_t)) : id_(id), closer_(closer) {}
  Id(Id&& o) noexcept : id_(std::exchange(o.id_, -1)), closer_(o.closer_) {}
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, -1);
      closer_ = o.closer_;
    }
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  ~Id() { reset(); }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }

 private:
  void reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = -1;
  }
  hid_t id_ = -1;
  herr_t (*closer_)(hid_t) = nullptr;
};

// Checked constructors: a negative id is a failure of the named operation on the named object.
struct Ctx {
  const std::string& file;
  const std::string& object;
  Id make(hid_t id, herr_t (*closer)(hid_t), const char* op) const {
    if (id < 0) fail(file, object, op);
    return Id(id, closer);
  }
  void check(herr_t rc, const char* op) const {
    if (rc < 0) fail(file, object, op);
  }
  htri_t check_tri(htri_t rc, const char* op) const {
    if (rc < 0) fail(file, object, op);
    return rc;
  }
};

// "a/b//c/" -> "/a/b/c"; "" and "/" -> "/".
std::string normalize(const std::string& path) {
  std::string out;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '/')) {
    if (part.empty() || part == ".") continue;
    out += "/" + part;
  }
  return out.empty() ? "/" : out;
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "[";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? ", " : "") + std::to_string(s[i]);
  return t + "]";
}

Id string_type(const Ctx& c) {
  Id t = c.make(H5Tcopy(H5T_C_S1), H5Tclose, "copy string type for");
  c.check(H5Tset_size(t, H5T_VARIABLE), "set variable string size for");
  c.check(H5Tset_cset(t, H5T_CSET_UTF8), "set UTF-8 character set for");
  return t;
}

// Link creation properties that create missing intermediate groups.
Id intermediate_lcpl(const Ctx& c) {
  Id p = c.make(H5Pcreate(H5P_LINK_CREATE), H5Pclose, "create link properties for");
  c.check(H5Pset_create_intermediate_group(p, 1), "enable intermediate groups for");
  return p;
}

Id file_access_props(const Ctx& c) {
  Id p = c.make(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "create file access properties for");
  // Closing the file closes whatever an exception left open inside it.
  c.check(H5Pset_fclose_degree(p, H5F_CLOSE_STRONG), "set close degree for");
  return p;
}

void reclaim_vlen(hid_t type, hid_t space, void* buf) {
#if H5_VERSION_GE(1, 12, 0)
  H5Treclaim(type, space, H5P_DEFAULT, buf);
#else
  H5Dvlen_reclaim(type, space, H5P_DEFAULT, buf);
#endif
}

// Strings read from a dataset or attribute of n elements with file type `ftype`, variable or
// fixed length. `read` is H5Dread/H5Aread bound to the object.
template <class Read>
std::vector<std::string> read_string_data(const Ctx& c, hid_t ftype, hid_t space, size_t n,
                                          Read&& read) {
  if (H5Tget_class(ftype) != H5T_STRING)
    fail(c.file, c.object, "read strings from", "not a string type");
  std::vector<std::string> out;
  out.reserve(n);
  // Strings need no byte-order conversion: the file type serves as the memory type.
  Id mtype = c.make(H5Tcopy(ftype), H5Tclose, "copy string type of");
  if (c.check_tri(H5Tis_variable_str(ftype), "inspect string type of")) {
    std::vector<char*> ptrs(n, nullptr);
    if (n) c.check(read(mtype.get(), ptrs.data()), "read");
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    if (n) reclaim_vlen(mtype, space, ptrs.data());
  } else {
    size_t size = H5Tget_size(ftype);
    if (size == 0) fail(c.file, c.object, "read strings from", "string size 0");
    std::vector<char> buf(n * size);
    if (n) c.check(read(mtype.get(), buf.data()), "read");
    bool space_pad = H5Tget_strpad(ftype) == H5T_STR_SPACEPAD;
    for (size_t i = 0; i < n; ++i) {
      const char* b = buf.data() + i * size;
      size_t len = strnlen(b, size);
      if (space_pad)
        while (len > 0 && b[len - 1] == ' ') --len;
      out.emplace_back(b, len);
    }
  }
  return out;
}

}  // namespace

// ---- lifetime ----

File File::create(const std::string& path) {
  silence_hdf5();
  const std::string root = "/";
  Ctx c{path, root};
  fs::path parent = fs::path(path).parent_path();
  if (!parent.empty() && !fs::is_directory(parent))
    throw std::runtime_error("HDF5 file '" + path + "': cannot create it: directory '" +
                             parent.string() + "' does not exist");
  Id fapl = file_access_props(c);
  hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  if (id < 0) {
    std::string cause = hdf5_cause();
    if (cause.find("lock") != std::string::npos)
      cause += " (on a cluster filesystem without POSIX locks, set HDF5_USE_FILE_LOCKING=FALSE)";
    throw std::runtime_error("HDF5 file '" + path + "': cannot create it: " + cause);
  }
  return File(id, path);
}

File File::create_in_memory(const std::string& name) {
  silence_hdf5();
  const std::string root = "/";
  Ctx c{name, root};
  Id fapl = file_access_props(c);
  // 1 MiB growth steps; backing_store false: the image never touches the disk.
  c.check(H5Pset_fapl_core(fapl, size_t(1) << 20, false), "select the in-memory driver for");
  // HDF5 refuses to create a file under the name of one it has open (a summary being rewritten
  // may still be open for reading): the in-memory file gets a name of its own.
  static std::atomic<uint64_t> serial{0};
  const std::string memory_name = "nns-in-memory-" + std::to_string(serial++) + ":" + name;
  hid_t id = H5Fcreate(memory_name.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  if (id < 0)
    throw std::runtime_error("HDF5 file '" + name + "': cannot create it in memory: " +
                             hdf5_cause());
  return File(id, name);
}

std::string File::image() const {
  hid_t id = check_open("/", "take the image of");
  const std::string root = "/";
  Ctx c{path_, root};
  c.check(H5Fflush(id, H5F_SCOPE_GLOBAL), "flush");
  ssize_t n = H5Fget_file_image(id, nullptr, 0);
  if (n < 0) fail(path_, "/", "get the size of the image of");
  std::string bytes(size_t(n), '\0');
  if (H5Fget_file_image(id, bytes.data(), bytes.size()) != n) fail(path_, "/", "get the image of");
  return bytes;
}

File File::open_read(const std::string& path) {
  silence_hdf5();
  if (!fs::exists(path)) throw std::runtime_error("HDF5 file '" + path + "': no such file");
  if (!fs::is_regular_file(path))
    throw std::runtime_error("HDF5 file '" + path + "': not a regular file");
  const std::string root = "/";
  Ctx c{path, root};
  Id fapl = file_access_props(c);
  hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl);
  if (id < 0) {
    std::string cause = hdf5_cause();
    if (cause.find("lock") != std::string::npos)
      throw std::runtime_error("HDF5 file '" + path + "': cannot open it: " + cause +
                               " (on a cluster filesystem without POSIX locks, set "
                               "HDF5_USE_FILE_LOCKING=FALSE)");
    throw std::runtime_error(
        "HDF5 file '" + path +
        "': cannot open it (not an HDF5 file, or truncated or corrupt): " + cause);
  }
  return File(id, path);
}

File::File(File&& other) noexcept
    : id_(std::exchange(other.id_, -1)), path_(std::move(other.path_)) {}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    if (id_ >= 0) H5Fclose(id_);
    id_ = std::exchange(other.id_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

File::~File() {
  if (id_ >= 0) H5Fclose(id_);  // errors cannot be reported from a destructor; close() reports them
}

void File::close() {
  if (id_ < 0) return;
  hid_t id = std::exchange(id_, -1);
  if (H5Fclose(id) < 0) fail(path_, "/", "close file");
}

int64_t File::check_open(const std::string& object, const char* op) const {
  if (id_ < 0) fail(path_, object, op, "the file is closed");
  return id_;
}

// ---- writing ----

void File::write_units(int64_t dset, const std::string& path, const std::string& units) {
  Ctx c{path_, path};
  Id type = string_type(c);
  Id space = c.make(H5Screate(H5S_SCALAR), H5Sclose, "create units dataspace for");
  Id a = c.make(H5Acreate2(dset, "units", type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                "create attribute 'units' of");
  const char* s = units.c_str();
  c.check(H5Awrite(a, type, &s), "write attribute 'units' of");
}

namespace {

// Replaces an existing link so that writing is idempotent.
void remove_if_exists(const File& f, hid_t file, const Ctx& c) {
  if (f.exists(c.object)) c.check(H5Ldelete(file, c.object.c_str(), H5P_DEFAULT), "replace");
}

}  // namespace

void File::write_numeric(const std::string& path_in, const void* data, size_t n, bool is_int,
                         const std::string& units, std::vector<int64_t> shape) {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  hid_t file = check_open(path, "write dataset");
  if (path == "/") fail(path_, path, "write dataset", "the root is a group");
  if (shape.empty()) shape = {static_cast<int64_t>(n)};
  std::vector<hsize_t> dims;
  int64_t count = 1;
  for (int64_t d : shape) {
    if (d < 0)
      fail(path_, path, "write dataset", "negative dimension in shape " + shape_text(shape));
    dims.push_back(static_cast<hsize_t>(d));
    count *= d;
  }
  if (count != static_cast<int64_t>(n))
    fail(path_, path, "write dataset",
         "shape " + shape_text(shape) + " holds " + std::to_string(count) + " values, got " +
             std::to_string(n));
  Id space = c.make(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose,
                    "create dataspace for");
  remove_if_exists(*this, file, c);
  Id lcpl = intermediate_lcpl(c);
  hid_t ftype = is_int ? H5T_STD_I64LE : H5T_IEEE_F64LE;
  hid_t mtype = is_int ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE;
  Id d = c.make(H5Dcreate2(file, path.c_str(), ftype, space, lcpl, H5P_DEFAULT, H5P_DEFAULT),
                H5Dclose, "create dataset");
  if (n) c.check(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "write dataset");
  write_units(d, path, units);
}

namespace {

// A scalar dataset (scalar dataspace) of one value.
Id create_scalar(const File& f, hid_t file, const Ctx& c, hid_t ftype) {
  if (c.object == "/") fail(c.file, c.object, "write dataset", "the root is a group");
  Id space = c.make(H5Screate(H5S_SCALAR), H5Sclose, "create scalar dataspace for");
  remove_if_exists(f, file, c);
  Id lcpl = intermediate_lcpl(c);
  return c.make(H5Dcreate2(file, c.object.c_str(), ftype, space, lcpl, H5P_DEFAULT, H5P_DEFAULT),
                H5Dclose, "create dataset");
}

}  // namespace

void File::write(const std::string& path_in, double v, const std::string& units) {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  Id d = create_scalar(*this, check_open(path, "write dataset"), c, H5T_IEEE_F64LE);
  c.check(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v), "write dataset");
  write_units(d, path, units);
}

void File::write(const std::string& path_in, int64_t v, const std::string& units) {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  Id d = create_scalar(*this, check_open(path, "write dataset"), c, H5T_STD_I64LE);
  c.check(H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v), "write dataset");
  write_units(d, path, units);
}

void File::write(const std::string& path, const std::vector<double>& v, const std::string& units,
                 std::vector<int64_t> shape) {
  write_numeric(path, v.data(), v.size(), false, units, std::move(shape));
}

void File::write(const std::string& path, const std::vector<int64_t>& v, const std::string& units,
                 std::vector<int64_t> shape) {
  write_numeric(path, v.data(), v.size(), true, units, std::move(shape));
}

void File::write(const std::string& path_in, const std::vector<std::string>& v,
                 const std::string& units) {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  hid_t file = check_open(path, "write dataset");
  if (path == "/") fail(path_, path, "write dataset", "the root is a group");
  hsize_t dims[1] = {v.size()};
  Id space = c.make(H5Screate_simple(1, dims, nullptr), H5Sclose, "create dataspace for");
  Id type = string_type(c);
  remove_if_exists(*this, file, c);
  Id lcpl = intermediate_lcpl(c);
  Id d = c.make(H5Dcreate2(file, path.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT),
                H5Dclose, "create dataset");
  std::vector<const char*> ptrs;
  ptrs.reserve(v.size());
  for (const auto& s : v) ptrs.push_back(s.c_str());
  if (!v.empty())
    c.check(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), "write dataset");
  write_units(d, path, units);
}

void File::prepare_attr(const std::string& object, const std::string& name) {
  Ctx c{path_, object};
  hid_t file = check_open(object, "write attribute");
  if (!exists(object)) {
    Id lcpl = intermediate_lcpl(c);
    Id g = c.make(H5Gcreate2(file, object.c_str(), lcpl, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
                  "create group");
  }
  if (c.check_tri(H5Aexists_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT),
                  "look up attribute of"))
    c.check(H5Adelete_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT),
            "replace attribute of");
}

void File::attr(const std::string& object_in, const std::string& name, const std::string& value) {
  const std::string object = normalize(object_in);
  const std::string what = "attribute '" + name + "' of";
  Ctx c{path_, object};
  prepare_attr(object, name);
  Id type = string_type(c);
  Id space = c.make(H5Screate(H5S_SCALAR), H5Sclose, "create scalar dataspace for");
  Id a = c.make(H5Acreate_by_name(id_, object.c_str(), name.c_str(), type, space, H5P_DEFAULT,
                                  H5P_DEFAULT, H5P_DEFAULT),
                H5Aclose, ("create " + what).c_str());
  const char* s = value.c_str();
  c.check(H5Awrite(a, type, &s), ("write " + what).c_str());
}

void File::attr(const std::string& object_in, const std::string& name, double value) {
  const std::string object = normalize(object_in);
  const std::string what = "attribute '" + name + "' of";
  Ctx c{path_, object};
  prepare_attr(object, name);
  Id space = c.make(H5Screate(H5S_SCALAR), H5Sclose, "create scalar dataspace for");
  Id a = c.make(H5Acreate_by_name(id_, object.c_str(), name.c_str(), H5T_IEEE_F64LE, space,
                                  H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                H5Aclose, ("create " + what).c_str());
  c.check(H5Awrite(a, H5T_NATIVE_DOUBLE, &value), ("write " + what).c_str());
}

void File::attr(const std::string& object_in, const std::string& name, int64_t value) {
  const std::string object = normalize(object_in);
  const std::string what = "attribute '" + name + "' of";
  Ctx c{path_, object};
  prepare_attr(object, name);
  Id space = c.make(H5Screate(H5S_SCALAR), H5Sclose, "create scalar dataspace for");
  Id a = c.make(H5Acreate_by_name(id_, object.c_str(), name.c_str(), H5T_STD_I64LE, space,
                                  H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                H5Aclose, ("create " + what).c_str());
  c.check(H5Awrite(a, H5T_NATIVE_INT64, &value), ("write " + what).c_str());
}

// ---- reading ----

bool File::exists(const std::string& path_in) const {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  hid_t file = check_open(path, "look up");
  if (path == "/") return true;
  // H5Lexists fails (rather than answering false) when a parent is missing: walk the prefixes.
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    std::string prefix = path.substr(0, pos);
    if (!c.check_tri(H5Lexists(file, prefix.c_str(), H5P_DEFAULT), "look up")) return false;
    if (pos != std::string::npos) {
      // A prefix that is a dataset cannot have children.
      Id o = c.make(H5Oopen(file, prefix.c_str(), H5P_DEFAULT), H5Oclose, "open");
      if (H5Iget_type(o) != H5I_GROUP) return false;
    }
  }
  return true;
}

namespace {

struct Dataset {
  Id dset, space, type;
  std::vector<int64_t> shape;
  size_t count = 1;
};

Dataset open_dataset(const File& f, hid_t file, const Ctx& c) {
  if (!f.exists(c.object)) fail(c.file, c.object, "open dataset", "no such dataset");
  Dataset d;
  d.dset = c.make(H5Dopen2(file, c.object.c_str(), H5P_DEFAULT), H5Dclose, "open dataset");
  d.space = c.make(H5Dget_space(d.dset), H5Sclose, "get dataspace of");
  d.type = c.make(H5Dget_type(d.dset), H5Tclose, "get type of");
  int nd = H5Sget_simple_extent_ndims(d.space);
  if (nd < 0) fail(c.file, c.object, "get rank of");
  std::vector<hsize_t> dims(static_cast<size_t>(nd));
  if (nd > 0 && H5Sget_simple_extent_dims(d.space, dims.data(), nullptr) < 0)
    fail(c.file, c.object, "get dimensions of");
  for (hsize_t x : dims) {
    d.shape.push_back(static_cast<int64_t>(x));
    d.count *= static_cast<size_t>(x);
  }
  if (H5Sget_simple_extent_type(d.space) == H5S_NULL) d.count = 0;
  return d;
}

}  // namespace

std::vector<int64_t> File::shape(const std::string& path_in) const {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  return open_dataset(*this, check_open(path, "read shape of"), c).shape;
}

std::vector<double> File::read_doubles(const std::string& path_in) const {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  Dataset d = open_dataset(*this, check_open(path, "read dataset"), c);
  H5T_class_t cls = H5Tget_class(d.type);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER)
    fail(path_, path, "read numbers from", "not a numeric dataset");
  std::vector<double> out(d.count);
  if (d.count)
    c.check(H5Dread(d.dset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()),
            "read dataset");
  return out;
}

std::vector<int64_t> File::read_ints(const std::string& path_in) const {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  Dataset d = open_dataset(*this, check_open(path, "read dataset"), c);
  if (H5Tget_class(d.type) != H5T_INTEGER)
    fail(path_, path, "read integers from", "not an integer dataset");
  std::vector<int64_t> out(d.count);
  if (d.count)
    c.check(H5Dread(d.dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()),
            "read dataset");
  return out;
}

std::vector<std::string> File::read_strings(const std::string& path_in) const {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  Dataset d = open_dataset(*this, check_open(path, "read dataset"), c);
  hid_t dset = d.dset;
  return read_string_data(c, d.type, d.space, d.count, [&](hid_t mtype, void* buf) {
    return H5Dread(dset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  });
}

double File::read_double(const std::string& path) const {
  std::vector<double> v = read_doubles(path);
  if (v.size() != 1)
    fail(path_, normalize(path), "read a scalar from",
         "expected a scalar or 1 element, got shape " + shape_text(shape(path)));
  return v[0];
}

int64_t File::open_attr(const std::string& object, const std::string& name) const {
  hid_t file = check_open(object, "read attribute");
  if (!has_attr(object, name))
    fail(path_, object, "read attribute '" + name + "' of", "no such attribute");
  hid_t a = H5Aopen_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT);
  if (a < 0) fail(path_, object, "open attribute '" + name + "' of");
  return a;
}

std::string File::attr_string(const std::string& object_in, const std::string& name) const {
  const std::string object = normalize(object_in);
  const std::string what = "attribute '" + name + "' of";
  Ctx c{path_, object};
  Id a(open_attr(object, name), H5Aclose);
  Id type = c.make(H5Aget_type(a), H5Tclose, ("get type of " + what).c_str());
  Id space = c.make(H5Aget_space(a), H5Sclose, ("get dataspace of " + what).c_str());
  hssize_t n = H5Sget_simple_extent_npoints(space);
  if (n != 1) fail(path_, object, "read " + what, "expected one string, got " + std::to_string(n));
  if (H5Tget_class(type) != H5T_STRING) fail(path_, object, "read " + what, "not a string");
  hid_t aid = a;
  return read_string_data(c, type, space, 1,
                          [&](hid_t mtype, void* buf) { return H5Aread(aid, mtype, buf); })[0];
}

double File::attr_double(const std::string& object_in, const std::string& name) const {
  const std::string object = normalize(object_in);
  const std::string what = "attribute '" + name + "' of";
  Ctx c{path_, object};
  Id a(open_attr(object, name), H5Aclose);
  Id type = c.make(H5Aget_type(a), H5Tclose, ("get type of " + what).c_str());
  Id space = c.make(H5Aget_space(a), H5Sclose, ("get dataspace of " + what).c_str());
  H5T_class_t cls = H5Tget_class(type);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) fail(path_, object, "read " + what, "not numeric");
  if (H5Sget_simple_extent_npoints(space) != 1)
    fail(path_, object, "read " + what, "expected a single value");
  double v = 0;
  c.check(H5Aread(a, H5T_NATIVE_DOUBLE, &v), ("read " + what).c_str());
  return v;
}

int64_t File::attr_int(const std::string& object_in, const std::string& name) const {
  const std::string object = normalize(object_in);
  const std::string what = "attribute '" + name + "' of";
  Ctx c{path_, object};
  Id a(open_attr(object, name), H5Aclose);
  Id type = c.make(H5Aget_type(a), H5Tclose, ("get type of " + what).c_str());
  Id space = c.make(H5Aget_space(a), H5Sclose, ("get dataspace of " + what).c_str());
  if (H5Tget_class(type) != H5T_INTEGER) fail(path_, object, "read " + what, "not an integer");
  if (H5Sget_simple_extent_npoints(space) != 1)
    fail(path_, object, "read " + what, "expected a single value");
  int64_t v = 0;
  c.check(H5Aread(a, H5T_NATIVE_INT64, &v), ("read " + what).c_str());
  return v;
}

bool File::has_attr(const std::string& object_in, const std::string& name) const {
  const std::string object = normalize(object_in);
  Ctx c{path_, object};
  hid_t file = check_open(object, "look up attribute of");
  if (!exists(object)) return false;
  return c.check_tri(H5Aexists_by_name(file, object.c_str(), name.c_str(), H5P_DEFAULT),
                     ("look up attribute '" + name + "' of").c_str()) > 0;
}

std::vector<std::string> File::list(const std::string& group_in) const {
  const std::string group = normalize(group_in);
  Ctx c{path_, group};
  hid_t file = check_open(group, "list group");
  if (!exists(group)) fail(path_, group, "list group", "no such group");
  H5G_info_t info;
  c.check(H5Gget_info_by_name(file, group.c_str(), &info, H5P_DEFAULT), "list group");
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t len = H5Lget_name_by_idx(file, group.c_str(), H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0,
                                     H5P_DEFAULT);
    if (len < 0) fail(path_, group, "list group");
    std::string name(static_cast<size_t>(len) + 1, '\0');
    if (H5Lget_name_by_idx(file, group.c_str(), H5_INDEX_NAME, H5_ITER_INC, i, name.data(),
                           name.size(), H5P_DEFAULT) < 0)
      fail(path_, group, "list group");
    name.resize(static_cast<size_t>(len));
    names.push_back(std::move(name));
  }
  return names;
}

bool File::is_group(const std::string& path_in) const {
  const std::string path = normalize(path_in);
  Ctx c{path_, path};
  hid_t file = check_open(path, "look up");
  if (!exists(path)) return false;
  Id o = c.make(H5Oopen(file, path.c_str(), H5P_DEFAULT), H5Oclose, "open");
  return H5Iget_type(o) == H5I_GROUP;
}

namespace {
herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* data) {
  static_cast<std::vector<std::string>*>(data)->emplace_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> File::attr_names(const std::string& object_in) const {
  const std::string object = normalize(object_in);
  Ctx c{path_, object};
  hid_t file = check_open(object, "list attributes of");
  if (!exists(object)) fail(path_, object, "list attributes of", "no such object");
  std::vector<std::string> names;
  c.check(H5Aiterate_by_name(file, object.c_str(), H5_INDEX_NAME, H5_ITER_INC, nullptr,
                             collect_attr_name, &names, H5P_DEFAULT),
          "list attributes of");
  return names;
}

// ---- whole files ----

// The file is built in memory and its bytes go through the one crash-safe writer: HDF5 never
// writes to disk itself. (Writing through HDF5's own file driver, a failed H5Fclose under
// `ulimit -f` left the file in HDF5's open list, and libhdf5's atexit handler retried the
// flush and crashed the process after the clean error had been printed.)
void write_atomically(const std::string& path, const std::function<void(File&)>& fill) {
  std::string bytes;
  {
    File f = File::create_in_memory(path);
    fill(f);
    bytes = f.image();
    f.close();
  }
  io::write_file_atomically(path, bytes);
}

bool is_complete_result(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  try {
    File f = File::open_read(path);
    return f.has_attr("/", "format");
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace nns::exp::h5
