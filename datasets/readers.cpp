#include "datasets/readers.h"

#include "core/io/input_file.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>

namespace nns::data {

namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw std::runtime_error(path + ": " + what);
}

std::string hex32(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08X", v);
  return b;
}

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::vector<uint8_t> read_raw(const std::string& path) {
  // Regular files only, checked before opening: open() of a FIFO waits for a writer.
  if (const std::string kind = nns::io::non_regular_kind(path); !kind.empty() && kind != "not found")
    fail(path, "is " + kind + ", not a dataset file (a dataset file must be a regular file)");
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
  std::streamoff n = f.tellg();
  if (n < 0) fail(path, "cannot determine the file size");
  if (uint64_t(n) > kMaxDatasetFileBytes)
    fail(path, std::to_string(n) + " bytes, more than the limit of " +
                   std::to_string(kMaxDatasetFileBytes) + " bytes for a dataset file");
  std::vector<uint8_t> buf(static_cast<size_t>(n));
  f.seekg(0);
  if (n > 0 && !f.read(reinterpret_cast<char*>(buf.data()), n))
    fail(path, "read error after " + std::to_string(f.gcount()) + " of " + std::to_string(n) +
                   " bytes");
  return buf;
}

bool is_gzip(const std::vector<uint8_t>& b, size_t at = 0) {
  return b.size() >= at + 2 && b[at] == 0x1f && b[at + 1] == 0x8b;
}

// A file's content: its bytes, or what its gzip data inflates to.
struct Content {
  std::vector<uint8_t> bytes;
  bool complete = true;  // false: the gzip stream ends before its end-of-stream marker
  bool cut = false;      // true: inflating stopped at the limit with more data to come
};

// Inflates every gzip member of `in`, at most `limit` bytes: a gzip bomb is refused by the
// caller (cut) after inflating limit + 1 bytes, not after exhausting memory.
Content gunzip(const std::string& path, const std::vector<uint8_t>& in, uint64_t limit) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) fail(path, "zlib: inflateInit2 failed");
  struct Guard {
    z_stream* z;
    ~Guard() { inflateEnd(z); }
  } guard{&zs};

  // Initial size: the gzip trailer's ISIZE (uncompressed size mod 2^32 of the last member)
  // when plausible (deflate expands at most ~1032x), else 4x the input; grown as needed, never
  // beyond limit + 1 (the one byte that tells there is more).
  limit = std::min(limit, kMaxDatasetFileBytes);
  const size_t cap = size_t(limit) + 1;
  size_t guess = in.size() * 4;
  if (in.size() >= 18) {
    const uint8_t* t = in.data() + in.size() - 4;
    const size_t isize = size_t(t[0]) | (size_t(t[1]) << 8) | (size_t(t[2]) << 16) |
                         (size_t(t[3]) << 24);
    if (isize > 0 && isize <= in.size() * 1032) guess = isize + 1;
  }
  Content c;
  std::vector<uint8_t>& out = c.bytes;
  out.resize(std::min(cap, std::max<size_t>(guess, size_t(1) << 16)));
  size_t in_pos = 0, out_pos = 0;
  c.complete = false;
  for (;;) {
    if (out_pos == cap) break;
    if (out_pos == out.size()) out.resize(std::min(cap, out.size() * 2));
    const size_t in_avail = std::min<size_t>(in.size() - in_pos, UINT_MAX);
    const size_t out_avail = std::min<size_t>(out.size() - out_pos, UINT_MAX);
    zs.next_in = const_cast<Bytef*>(in.data() + in_pos);
    zs.avail_in = static_cast<uInt>(in_avail);
    zs.next_out = out.data() + out_pos;
    zs.avail_out = static_cast<uInt>(out_avail);
    const int ret = inflate(&zs, Z_NO_FLUSH);
    const bool progress = zs.avail_in != in_avail || zs.avail_out != out_avail;
    in_pos += in_avail - zs.avail_in;
    out_pos += out_avail - zs.avail_out;
    if (ret == Z_STREAM_END) {
      if (is_gzip(in, in_pos)) {  // another member follows
        inflateReset(&zs);
        continue;
      }
      c.complete = true;  // anything after the last member is ignored, as gzip(1) does
      break;
    }
    if (ret == Z_OK && progress) continue;
    if (ret == Z_OK || ret == Z_BUF_ERROR) {
      if (in_pos == in.size() || !progress) break;  // input exhausted before the end
      continue;                                       // output full: grow and go on
    }
    fail(path, std::string("corrupt gzip data (zlib: ") + (zs.msg ? zs.msg : zError(ret)) +
                   ") after " + std::to_string(in_pos) + " compressed bytes");
  }
  c.cut = out_pos > limit;
  out.resize(std::min<size_t>(out_pos, size_t(limit)));
  out.shrink_to_fit();
  return c;
}

// The content of `file` up to `limit` bytes: a gzip file is inflated (at most limit + 1
// bytes), a plain one moved in whole (its size is what it is; callers compare).
Content content_of(const std::string& path, std::vector<uint8_t>&& file, uint64_t limit) {
  if (is_gzip(file)) return gunzip(path, file, limit);
  Content c;
  c.bytes = std::move(file);
  return c;
}

// The first n bytes of the content (fewer when it is shorter), without inflating the rest.
Content content_head(const std::string& path, const std::vector<uint8_t>& file, size_t n) {
  if (is_gzip(file)) return gunzip(path, file, n);
  Content c;
  c.bytes.assign(file.begin(), file.begin() + std::min(n, file.size()));
  return c;
}

const char* gz_note(bool complete) {
  return complete ? "" : " (the gzip stream also ends early: the file itself is cut short)";
}

// Checks the magic number of an IDX file of the wanted kind (0x08 = unsigned byte data).
void check_idx_magic(const std::string& path, const std::vector<uint8_t>& buf, uint32_t want,
                     const char* want_what, bool complete) {
  if (buf.size() < 4)
    fail(path, "truncated: " + std::to_string(buf.size()) +
                   " bytes, too short for an IDX header" + gz_note(complete));
  const uint32_t magic = be32(buf.data());
  if (magic == want) return;
  std::string what;
  if (magic == 0x00000803)
    what = " (that of an IDX image file)";
  else if (magic == 0x00000801)
    what = " (that of an IDX label file)";
  else if ((magic >> 16) != 0)
    what = " (not an IDX file)";
  fail(path, "bad magic number " + hex32(magic) + what + ", expected " + hex32(want) + " (" +
                 want_what + ")");
}

// A gzip stream that inflates past `limit` (text: "the limit of N bytes").
[[noreturn]] void bomb(const std::string& path, const std::string& limit) {
  fail(path, "the gzip data inflates to more than " + limit +
                 " (a gzip bomb or not a dataset file): refused");
}

// The content of an IDX file against the size its header announces: `header` bytes of header
// and `expected` bytes of data.
void check_idx_size(const std::string& path, const std::string& says, const Content& c,
                    uint64_t header, uint64_t expected, const char* kind) {
  const uint64_t size = c.bytes.size() - header;  // the caller checked the header is there
  if (size < expected)
    fail(path, "truncated: " + says + " but only " + std::to_string(size) +
                   " bytes follow" + gz_note(c.complete));
  if (size > expected)
    fail(path, says + " but " + std::to_string(size) +
                   " bytes follow (extra data: a corrupt header or not an " + kind + " file)");
  if (!c.complete)
    fail(path, "truncated: the gzip stream ends early (the data is all there but the gzip "
               "trailer is missing)");
}

}  // namespace

std::vector<uint8_t> read_file_maybe_gz(const std::string& path, bool* gzip_complete) {
  Content c = content_of(path, read_raw(path), kMaxDatasetFileBytes);
  if (c.cut)
    bomb(path, "the limit of " + std::to_string(kMaxDatasetFileBytes) + " bytes for a dataset file");
  if (gzip_complete) *gzip_complete = c.complete;
  return std::move(c.bytes);
}

IdxImages parse_idx_images(std::vector<uint8_t> file, const std::string& path) {
  const Content head = content_head(path, file, 16);
  const bool head_complete = head.complete || head.cut;
  check_idx_magic(path, head.bytes, 0x00000803, "an IDX image file of unsigned bytes",
                  head_complete);
  if (head.bytes.size() < 16)
    fail(path, "truncated: " + std::to_string(head.bytes.size()) +
                   " bytes, too short for the 16-byte IDX image header" + gz_note(head_complete));
  const uint32_t count = be32(head.bytes.data() + 4), rows = be32(head.bytes.data() + 8),
                 cols = be32(head.bytes.data() + 12);
  if (rows == 0 || cols == 0 || rows > 65536 || cols > 65536)
    fail(path, "bad dimensions in the header: " + std::to_string(rows) + "x" +
                   std::to_string(cols) + " images");
  const uint64_t expected = uint64_t(count) * rows * cols;  // < 2^64: 2^32 * 2^16 * 2^16
  const std::string says = "header says " + std::to_string(count) + " images of " +
                           std::to_string(rows) + "x" + std::to_string(cols) + " (" +
                           std::to_string(expected) + " bytes)";
  if (expected > kMaxDatasetFileBytes - 16)
    fail(path, says + ", more than the limit of " + std::to_string(kMaxDatasetFileBytes) +
                   " bytes for a dataset file");
  Content c = content_of(path, std::move(file), 16 + expected);
  if (c.cut)
    fail(path, says + " but the gzip data inflates to more than that (extra data, or a gzip "
                      "bomb): refused");
  check_idx_size(path, says, c, 16, expected, "IDX image");
  IdxImages r;
  r.count = count;
  r.rows = static_cast<int>(rows);
  r.cols = static_cast<int>(cols);
  c.bytes.erase(c.bytes.begin(), c.bytes.begin() + 16);
  r.pixels = std::move(c.bytes);
  return r;
}

IdxImages read_idx_images(const std::string& path) { return parse_idx_images(read_raw(path), path); }

std::vector<uint8_t> parse_idx_labels(std::vector<uint8_t> file, const std::string& path) {
  const Content head = content_head(path, file, 8);
  const bool head_complete = head.complete || head.cut;
  check_idx_magic(path, head.bytes, 0x00000801, "an IDX label file of unsigned bytes",
                  head_complete);
  if (head.bytes.size() < 8)
    fail(path, "truncated: " + std::to_string(head.bytes.size()) +
                   " bytes, too short for the 8-byte IDX label header" + gz_note(head_complete));
  const uint64_t count = be32(head.bytes.data() + 4);
  const std::string says = "header says " + std::to_string(count) + " labels (" +
                           std::to_string(count) + " bytes)";
  Content c = content_of(path, std::move(file), 8 + count);
  if (c.cut)
    fail(path, says + " but the gzip data inflates to more than that (extra data, or a gzip "
                      "bomb): refused");
  check_idx_size(path, says, c, 8, count, "IDX label");
  c.bytes.erase(c.bytes.begin(), c.bytes.begin() + 8);
  return std::move(c.bytes);
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  return parse_idx_labels(read_raw(path), path);
}

Dataset read_idx_dataset(const std::string& images_path, const std::string& labels_path,
                         const std::string& name, int num_classes) {
  IdxImages im = read_idx_images(images_path);
  std::vector<uint8_t> lab = read_idx_labels(labels_path);
  if (static_cast<int64_t>(lab.size()) != im.count)
    fail(labels_path, "holds " + std::to_string(lab.size()) + " labels but " + images_path +
                          " holds " + std::to_string(im.count) + " images");
  Dataset d;
  d.name = name;
  d.channels = 1;
  d.height = im.rows;
  d.width = im.cols;
  d.num_classes = num_classes;
  d.images = std::move(im.pixels);
  d.labels.resize(lab.size());
  for (size_t i = 0; i < lab.size(); ++i) {
    if (lab[i] >= num_classes)
      fail(labels_path, "label " + std::to_string(lab[i]) + " at index " + std::to_string(i) +
                            " is out of range (" + std::to_string(num_classes) + " classes)");
    d.labels[i] = lab[i];
  }
  d.source = images_path + ", " + labels_path;
  return d;
}

void read_cifar_file(const std::string& path, int label_bytes, Dataset& d) {
  parse_cifar_file(read_raw(path), path, label_bytes, d);
}

void parse_cifar_file(std::vector<uint8_t> file, const std::string& path, int label_bytes,
                      Dataset& d) {
  if (label_bytes < 1) throw std::invalid_argument("read_cifar_file: label_bytes must be >= 1");
  if (d.channels != 3 || d.height != 32 || d.width != 32)
    throw std::invalid_argument("read_cifar_file: the dataset must be 3x32x32, not " +
                                std::to_string(d.channels) + "x" + std::to_string(d.height) +
                                "x" + std::to_string(d.width));
  Content c = content_of(path, std::move(file), kMaxCifarFileBytes);
  if (c.cut)
    bomb(path, "the limit of " + std::to_string(kMaxCifarFileBytes) + " bytes for a CIFAR file");
  const std::vector<uint8_t>& buf = c.bytes;
  constexpr size_t kImage = 3 * 32 * 32;
  const size_t rec = static_cast<size_t>(label_bytes) + kImage;
  const std::string layout = std::to_string(rec) + "-byte records (" +
                             std::to_string(label_bytes) + " label byte" +
                             (label_bytes > 1 ? "s" : "") + " + 3072 image bytes)";
  if (buf.empty()) fail(path, "empty file, expected " + layout);
  if (buf.size() % rec != 0)
    fail(path, "truncated or not a CIFAR binary file: " + std::to_string(buf.size()) +
                   " bytes is not a whole number of " + layout + ": " +
                   std::to_string(buf.size() / rec) + " records and " +
                   std::to_string(buf.size() % rec) + " bytes left over");
  const size_t n = buf.size() / rec;
  const size_t old_n = d.labels.size();
  if (d.images.size() != old_n * kImage)
    throw std::invalid_argument("read_cifar_file: dataset holds " +
                                std::to_string(d.images.size()) + " image bytes for " +
                                std::to_string(old_n) + " labels");
  d.images.resize((old_n + n) * kImage);
  d.labels.resize(old_n + n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* r = buf.data() + i * rec;
    const int label = r[label_bytes - 1];
    if (label >= d.num_classes) {
      d.images.resize(old_n * kImage);
      d.labels.resize(old_n);
      fail(path, "record " + std::to_string(i) + ": label " + std::to_string(label) +
                     " is out of range (" + std::to_string(d.num_classes) +
                     " classes; is this the right CIFAR variant?)");
    }
    d.labels[old_n + i] = label;
    std::memcpy(d.images.data() + (old_n + i) * kImage, r + label_bytes, kImage);
  }
  d.source += (d.source.empty() ? "" : ", ") + path;
}

}  // namespace nns::data
