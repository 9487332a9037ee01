#include "core/io/safetensors.h"

#include "core/io/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/io/json_bounded.h"
#include "core/io/atomic_file.h"

namespace nns::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw std::runtime_error(name + ": " + what);
}

std::string errno_str(int e) { return std::strerror(e); }

// A JSON value for an error message, shortened when long.
std::string show(const json& j) {
  std::string s;
  try {
    s = j.dump();
  } catch (const json::exception&) {
    s = "<invalid UTF-8>";
  }
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

std::string sq(const std::string& s) { return "'" + s + "'"; }

// Where a safetensors dtype lands in memory.
enum class Decode { Copy, F16, BF16 };

struct DTypeInfo {
  const char* name;
  size_t file_size;  // bytes per element in the file
  bool supported;
  DType dtype;       // in-memory dtype when supported
  Decode decode;
};

// Every dtype of the safetensors format; only some are read by nnsplitter.
constexpr DTypeInfo kDTypes[] = {
    {"F32", 4, true, DType::F32, Decode::Copy},
    {"F16", 2, true, DType::F32, Decode::F16},
    {"BF16", 2, true, DType::F32, Decode::BF16},
    {"I64", 8, true, DType::I64, Decode::Copy},
    {"I32", 4, true, DType::I32, Decode::Copy},
    {"U8", 1, true, DType::U8, Decode::Copy},
    {"F64", 8, false, DType::F32, Decode::Copy},
    {"I16", 2, false, DType::F32, Decode::Copy},
    {"I8", 1, false, DType::F32, Decode::Copy},
    {"U64", 8, false, DType::F32, Decode::Copy},
    {"U32", 4, false, DType::F32, Decode::Copy},
    {"U16", 2, false, DType::F32, Decode::Copy},
    {"BOOL", 1, false, DType::F32, Decode::Copy},
    {"F8_E4M3", 1, false, DType::F32, Decode::Copy},
    {"F8_E5M2", 1, false, DType::F32, Decode::Copy},
};
constexpr const char* kSupportedList = "F32, F16, BF16, I64, I32, U8";

const DTypeInfo* find_dtype(const std::string& s) {
  for (const auto& d : kDTypes)
    if (s == d.name) return &d;
  return nullptr;
}

struct Entry {
  std::string name;
  const DTypeInfo* dtype;
  Shape shape;
  uint64_t begin, end;
  uint64_t numel;
};

// Reads a non-negative JSON integer; false when `j` is not an integer (or is negative, in
// which case *negative is set).
bool as_u64(const json& j, uint64_t* out, bool* negative) {
  *negative = false;
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer()) {  // signed: only reached for negative values
    int64_t v = j.get<int64_t>();
    if (v < 0) {
      *negative = true;
      return false;
    }
    *out = static_cast<uint64_t>(v);
    return true;
  }
  return false;
}

std::string offsets_str(uint64_t b, uint64_t e) {
  return "[" + std::to_string(b) + ", " + std::to_string(e) + "]";
}

Entry parse_entry(const std::string& file, const std::string& key, const json& v,
                  uint64_t body_size) {
  const std::string t = "tensor " + sq(key);
  if (!v.is_object()) fail(file, "header entry for " + t + " is not a JSON object: " + show(v));
  Entry e;
  e.name = key;

  // dtype
  auto it = v.find("dtype");
  if (it == v.end()) fail(file, t + " has no 'dtype' field");
  if (!it->is_string()) fail(file, t + " field 'dtype' is not a string: " + show(*it));
  const std::string dt = it->get<std::string>();
  e.dtype = find_dtype(dt);
  if (!e.dtype || !e.dtype->supported)
    fail(file, t + " has unsupported dtype " + dt + " (supported: " + kSupportedList + ")");

  // shape
  it = v.find("shape");
  if (it == v.end()) fail(file, t + " has no 'shape' field");
  if (!it->is_array()) fail(file, t + " field 'shape' is not an array: " + show(*it));
  if (it->size() > kSafetensorsMaxDims)
    fail(file, t + " shape has " + std::to_string(it->size()) + " dimensions, more than the " +
                   std::to_string(kSafetensorsMaxDims) + " allowed");
  for (const json& d : *it) {
    uint64_t u;
    bool neg;
    if (!as_u64(d, &u, &neg)) {
      if (neg) fail(file, t + " shape " + show(*it) + " has a negative dimension");
      fail(file, t + " shape " + show(*it) + " has a non-integer dimension " + show(d));
    }
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail(file, t + " shape " + show(*it) + " has a dimension that is too large");
    e.shape.push_back(static_cast<int64_t>(u));
  }

  // data_offsets
  it = v.find("data_offsets");
  if (it == v.end()) fail(file, t + " has no 'data_offsets' field");
  if (!it->is_array() || it->size() != 2)
    fail(file, t + " data_offsets must be a [begin, end] pair, got " + show(*it));
  uint64_t off[2];
  for (int i = 0; i < 2; ++i) {
    bool neg;
    if (!as_u64((*it)[i], &off[i], &neg)) {
      if (neg) fail(file, t + " data_offsets " + show(*it) + " are negative");
      fail(file, t + " data_offsets " + show(*it) + " are not integers");
    }
  }
  e.begin = off[0];
  e.end = off[1];
  if (e.end < e.begin)
    fail(file, t + " data_offsets " + offsets_str(e.begin, e.end) + " end before they begin");

  // Size implied by the shape, with overflow checks (a zero dimension makes any shape empty).
  const std::string shape_text = shape_str(e.shape) + " " + e.dtype->name;
  uint64_t numel = 1;
  bool zero = std::find(e.shape.begin(), e.shape.end(), 0) != e.shape.end();
  if (zero) {
    numel = 0;
  } else {
    for (int64_t d : e.shape) {
      uint64_t u = static_cast<uint64_t>(d);
      if (numel > std::numeric_limits<uint64_t>::max() / u)
        fail(file, t + " shape " + shape_text + " is too large");
      numel *= u;
    }
  }
  if (numel > std::numeric_limits<uint64_t>::max() / e.dtype->file_size ||
      numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    fail(file, t + " shape " + shape_text + " is too large");
  e.numel = numel;
  const uint64_t need = numel * e.dtype->file_size;
  if (e.end - e.begin != need)
    fail(file, t + " data_offsets " + offsets_str(e.begin, e.end) + " but shape " + shape_text +
                   " needs " + std::to_string(need) + " bytes");
  if (e.end > body_size)
    fail(file, t + " data_offsets " + offsets_str(e.begin, e.end) +
                   " extend past the end of the data (" + std::to_string(body_size) +
                   " bytes): the file is truncated");
  return e;
}

// Parses the header JSON, rejecting duplicate keys at any level (nlohmann keeps the last one
// silently) and nesting deeper than kMaxJsonDepth (json_bounded.h: show() would overflow the
// stack dumping it).
json parse_header_json(const std::string& file, const char* p, size_t n) {
  struct Level {
    std::set<std::string> keys;
    std::string owner;  // key of this object in its parent ("" for the top level)
  };
  std::vector<Level> stack;
  std::string last_key;
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    check_json_depth(depth, ev, file, "header JSON");
    switch (ev) {
      case json::parse_event_t::object_start:
        stack.push_back(Level{{}, stack.empty() ? std::string() : last_key});
        break;
      case json::parse_event_t::object_end:
        if (!stack.empty()) stack.pop_back();
        break;
      case json::parse_event_t::key: {
        std::string k = parsed.get<std::string>();
        if (!stack.empty() && !stack.back().keys.insert(k).second) {
          if (stack.size() == 1) {
            if (k == "__metadata__") fail(file, "duplicate '__metadata__' entry in the header");
            fail(file, "duplicate tensor name " + sq(k) + " in the header");
          }
          if (stack.size() == 2 && stack.back().owner == "__metadata__")
            fail(file, "duplicate key " + sq(k) + " in __metadata__");
          fail(file, "duplicate key " + sq(k) + " in the header entry for " +
                         sq(stack.back().owner));
        }
        last_key = std::move(k);
        break;
      }
      default:
        break;
    }
    return true;
  };
  try {
    return json::parse(p, p + n, cb);
  } catch (const json::parse_error& e) {
    std::string what = e.what();
    // "[json.exception.parse_error.101] parse error at line 1, column 5: ..." -> "...".
    if (auto pos = what.find("] "); pos != std::string::npos && what.rfind("[json", 0) == 0)
      what = what.substr(pos + 2);
    if (what.rfind("parse error at line ", 0) == 0)
      if (auto pos = what.find(": "); pos != std::string::npos) what = what.substr(pos + 2);
    fail(file, "header is not valid JSON at byte " + std::to_string(e.byte) + ": " + what);
  } catch (const json::exception& e) {
    fail(file, std::string("header is not valid JSON: ") + e.what());
  }
}

SafetensorsFile parse_impl(const char* data, size_t size, const std::string& file) {
  if (size < 8)
    fail(file, "file is " + std::to_string(size) + " bytes, too short for the 8-byte header length");
  uint64_t n;
  std::memcpy(&n, data, 8);
  if (n > size - 8)
    fail(file, "header length " + std::to_string(n) + " exceeds file size " +
                   std::to_string(size) + " (at most " + std::to_string(size - 8) +
                   " bytes after the 8-byte length)");
  if (n > kSafetensorsMaxHeaderBytes)
    fail(file, "header length " + std::to_string(n) + " exceeds the limit of " +
                   std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  const json header = parse_header_json(file, data + 8, static_cast<size_t>(n));
  if (!header.is_object()) fail(file, "header is not a JSON object: " + show(header));

  const char* body = data + 8 + n;
  const uint64_t body_size = size - 8 - n;

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      const json& m = it.value();
      if (m.is_null()) continue;
      if (!m.is_object()) fail(file, "__metadata__ is not a JSON object: " + show(m));
      for (auto mi = m.begin(); mi != m.end(); ++mi) {
        if (!mi.value().is_string())
          fail(file, "__metadata__ value for " + sq(mi.key()) + " is not a string: " +
                         show(mi.value()));
        out.metadata.emplace(mi.key(), mi.value().get<std::string>());
      }
      continue;
    }
    entries.push_back(parse_entry(file, it.key(), it.value(), body_size));
  }

  // Layout: sorted by offset, the tensors must tile the data exactly.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < pos)
      fail(file, "tensors " + sq(prev->name) + " and " + sq(e.name) + " overlap (" +
                     offsets_str(prev->begin, prev->end) + " and " + offsets_str(e.begin, e.end) +
                     ")");
    if (e.begin > pos)
      fail(file, "gap of " + std::to_string(e.begin - pos) + " bytes before tensor " +
                     sq(e.name) + " (data_offsets " + offsets_str(e.begin, e.end) +
                     ", previous data ends at " + std::to_string(pos) + ")");
    pos = e.end;
    prev = &e;
  }
  if (pos != body_size)
    fail(file, std::to_string(body_size - pos) + " trailing bytes after the " +
                   (entries.empty() ? std::string("header (no tensors)") : "last tensor"));

  out.tensors.reserve(entries.size());
  for (const Entry& e : entries) {
    Tensor t(e.shape, e.dtype->dtype, Device::CPU);
    const char* src = body + e.begin;
    switch (e.dtype->decode) {
      case Decode::Copy:
        if (e.end > e.begin) std::memcpy(t.raw(), src, e.end - e.begin);
        break;
      case Decode::F16:
      case Decode::BF16: {
        float* dst = t.f32();
        for (uint64_t i = 0; i < e.numel; ++i) {
          uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          dst[i] = e.dtype->decode == Decode::F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        break;
      }
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

// Closes a file descriptor and removes a temporary file unless released.
struct TempFile {
  int fd = -1;
  std::string path;
  bool keep = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!keep && !path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in float.
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  return std::bit_cast<float>(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

const Tensor* SafetensorsFile::find(const std::string& key) const {
  for (const auto& [name, t] : tensors)
    if (name == key) return &t;
  return nullptr;
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name_for_errors) {
  return parse_impl(bytes.data(), bytes.size(), name_for_errors);
}

SafetensorsFile read_safetensors(const std::string& path) {
  // Regular files only, refused by kind before opening: open() of a FIFO waits for a writer,
  // and /dev/zero or /dev/urandom would be read until memory runs out.
  const std::string kind = non_regular_kind(path);
  if (kind == "a folder") fail(path, "is a directory, not a safetensors file");
  if (!kind.empty() && kind != "not found")
    fail(path, "is " + kind + ", not a safetensors file (weights must be a regular file)");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) fail(path, "file not found");
    fail(path, "cannot open: " + errno_str(e));
  }
  TempFile guard;  // only for closing
  guard.fd = fd;
  guard.keep = true;
  struct stat st {};
  if (::fstat(fd, &st) != 0) fail(path, "cannot stat: " + errno_str(errno));
  if (S_ISDIR(st.st_mode)) fail(path, "is a directory, not a safetensors file");
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file (weights must be a regular file)");
  std::string buf;
  buf.reserve(static_cast<size_t>(st.st_size));
  char chunk[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, chunk, sizeof chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(path, "read error: " + errno_str(errno));
    }
    if (r == 0) break;
    buf.append(chunk, static_cast<size_t>(r));
  }
  return parse_impl(buf.data(), buf.size(), path);
}

std::string serialize_safetensors(const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                                  const std::map<std::string, std::string>& metadata,
                                  const std::string& name_for_errors) {
  const std::string& file = name_for_errors;
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = std::move(m);
  }
  std::set<std::string> seen;
  std::vector<Tensor> cpu;  // CPU copies (shares storage for CPU tensors)
  cpu.reserve(tensors.size());
  uint64_t offset = 0;
  for (const auto& [name, ptr] : tensors) {
    const std::string t = "tensor " + sq(name);
    if (name == "__metadata__") fail(file, "'__metadata__' cannot be used as a tensor name");
    if (!seen.insert(name).second) fail(file, "duplicate tensor name " + sq(name));
    if (!ptr) fail(file, t + " is a null pointer");
    if (!ptr->defined()) fail(file, t + " is undefined (no storage)");
    const DType dt = ptr->dtype();
    if (dt != DType::F32 && dt != DType::I64 && dt != DType::I32 && dt != DType::U8)
      fail(file, t + " has unsupported dtype code " + std::to_string(static_cast<int>(dt)));
    cpu.push_back(ptr->device() == Device::CPU ? *ptr : ptr->to(Device::CPU));
    const uint64_t nb = cpu.back().nbytes();
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = dtype_name(dt);
    e["shape"] = ptr->shape();
    e["data_offsets"] = {offset, offset + nb};
    header[name] = std::move(e);
    offset += nb;
  }
  std::string h;
  try {
    h = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(file, std::string("cannot encode the header (tensor names and metadata must be valid "
                           "UTF-8): ") + e.what());
  }
  h.append((8 - (8 + h.size()) % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  const uint64_t n = h.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += h;
  for (const Tensor& c : cpu)
    if (c.nbytes()) out.append(static_cast<const char*>(c.raw()), c.nbytes());
  return out;
}

void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_file_atomically(path, serialize_safetensors(tensors, metadata, path));
}

}  // namespace nns::io
