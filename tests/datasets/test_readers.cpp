// IDX and CIFAR readers: round trips (gzipped and raw) and every malformed-file error.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/random.h"
#include "data_fixtures.h"
#include "datasets/readers.h"

namespace nns::data {
namespace {

using namespace nns::data::testing;

class IdxRoundTrip : public ::testing::TestWithParam<bool> {};

TEST_P(IdxRoundTrip, ImagesAndLabelsReadBack) {
  const bool gz = GetParam();
  ScratchDir dir;
  const auto px = pattern_pixels(7, 5 * 3);
  const auto lab = cyclic_labels(7, 10);
  const std::string ip = dir.file(gz ? "img.gz" : "img"), lp = dir.file(gz ? "lab.gz" : "lab");
  write_bytes(ip, idx_images_bytes(7, 5, 3, px), gz);
  write_bytes(lp, idx_labels_bytes(7, lab), gz);

  IdxImages im = read_idx_images(ip);
  EXPECT_EQ(im.count, 7);
  EXPECT_EQ(im.rows, 5);
  EXPECT_EQ(im.cols, 3);
  EXPECT_EQ(im.pixels, px);
  EXPECT_EQ(read_idx_labels(lp), lab);

  Dataset d = read_idx_dataset(ip, lp, "mnist", 10);
  EXPECT_EQ(d.size(), 7);
  EXPECT_EQ(d.channels, 1);
  EXPECT_EQ(d.height, 5);
  EXPECT_EQ(d.width, 3);
  EXPECT_EQ(d.images, px);
  for (int k = 0; k < 7; ++k) EXPECT_EQ(d.labels[k], lab[k]);
  EXPECT_NO_THROW(d.validate());
}

TEST_P(IdxRoundTrip, EmptyFileOfZeroImages) {
  const bool gz = GetParam();
  ScratchDir dir;
  write_bytes(dir.file("img"), idx_images_bytes(0, 28, 28, {}), gz);
  EXPECT_EQ(read_idx_images(dir.file("img")).count, 0);
}

INSTANTIATE_TEST_SUITE_P(GzAndRaw, IdxRoundTrip, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "gz" : "raw"; });

TEST(Idx, ConcatenatedGzipMembersAreJoined) {
  ScratchDir dir;
  const auto bytes = idx_images_bytes(4, 2, 2, pattern_pixels(4, 4));
  const std::vector<uint8_t> a(bytes.begin(), bytes.begin() + 10), b(bytes.begin() + 10, bytes.end());
  write_bytes(dir.file("a.gz"), a, true);
  write_bytes(dir.file("b.gz"), b, true);
  std::ifstream fa(dir.file("a.gz"), std::ios::binary), fb(dir.file("b.gz"), std::ios::binary);
  std::ofstream out(dir.file("ab.gz"), std::ios::binary);
  out << fa.rdbuf() << fb.rdbuf();
  out.close();
  EXPECT_EQ(read_idx_images(dir.file("ab.gz")).pixels, pattern_pixels(4, 4));
}

// The bytes of a gzip file of `n` zero bytes (one member).
std::vector<uint8_t> gzip_of_zeros(const ScratchDir& dir, size_t n) {
  write_bytes(dir.file("zeros.gz"), std::vector<uint8_t>(n, 0), true);
  std::ifstream f(dir.file("zeros.gz"), std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// A gzip bomb: `head` gzipped, then `copies` gzip members of 1 MiB of zeros each (a ~1 KB
// member repeated: 16 GiB inflated from a 16 MB file, made in milliseconds).
std::vector<uint8_t> gzip_bomb(const ScratchDir& dir, const std::vector<uint8_t>& head,
                               size_t copies) {
  write_bytes(dir.file("head.gz"), head, true);
  std::ifstream f(dir.file("head.gz"), std::ios::binary);
  std::vector<uint8_t> out(std::istreambuf_iterator<char>(f), {});
  const std::vector<uint8_t> member = gzip_of_zeros(dir, size_t(1) << 20);
  out.reserve(out.size() + copies * member.size());
  for (size_t i = 0; i < copies; ++i) out.insert(out.end(), member.begin(), member.end());
  return out;
}

// The probe's gzip bomb ended in std::bad_alloc: the reader inflated everything before it
// compared with the header. Now it inflates at most the announced size plus one byte.
TEST(Idx, GzipBombIsRefusedFromTheHeaderSize) {
  ScratchDir dir;
  const auto header = idx_images_bytes(10, 28, 28, {});
  const std::vector<uint8_t> bomb = gzip_bomb(dir, header, 16384);  // 16 GiB inflated
  const std::string p = dir.file("train-images-idx3-ubyte.gz");
  write_bytes(p, bomb, false);
  EXPECT_EQ(runtime_error_of([&] { read_idx_images(p); }),
            p + ": header says 10 images of 28x28 (7840 bytes) but the gzip data inflates to "
                "more than that (extra data, or a gzip bomb): refused");
  const std::string l = dir.file("train-labels-idx1-ubyte.gz");
  write_bytes(l, gzip_bomb(dir, idx_labels_bytes(3, {}), 16384), false);
  EXPECT_EQ(runtime_error_of([&] { read_idx_labels(l); }),
            l + ": header says 3 labels (3 bytes) but the gzip data inflates to more than that "
                "(extra data, or a gzip bomb): refused");
  // In memory, the same.
  EXPECT_CONTAINS(runtime_error_of([&] { parse_idx_images(bomb, "mem.gz"); }),
                  "mem.gz: header says 10 images");
}

TEST(Idx, HeaderAnnouncingMoreThanTheLimitIsRefusedBeforeReading) {
  for (bool gz : {false, true}) {
    ScratchDir dir;
    const std::string p = dir.file(gz ? "huge.gz" : "huge");
    write_bytes(p, idx_images_bytes(4000000000u, 65536, 65536, pattern_pixels(1, 64)), gz);
    EXPECT_EQ(runtime_error_of([&] { read_idx_images(p); }),
              p + ": header says 4000000000 images of 65536x65536 (17179869184000000000 bytes), "
                  "more than the limit of 2147483648 bytes for a dataset file");
    write_bytes(p, idx_images_bytes(3000, 1000, 1000, pattern_pixels(1, 64)), gz);
    EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(p); }),
                    "(3000000000 bytes), more than the limit");
  }
}

TEST(Idx, InMemoryParsersMatchTheFileReaders) {
  ScratchDir dir;
  const auto bytes = idx_images_bytes(3, 2, 5, pattern_pixels(3, 10));
  write_bytes(dir.file("i.gz"), bytes, true);
  std::ifstream f(dir.file("i.gz"), std::ios::binary);
  const std::vector<uint8_t> gz(std::istreambuf_iterator<char>(f), {});
  for (const auto& file : {bytes, gz}) {
    IdxImages im = parse_idx_images(file, "x");
    EXPECT_EQ(im.count, 3);
    EXPECT_EQ(im.rows, 2);
    EXPECT_EQ(im.cols, 5);
    EXPECT_EQ(im.pixels, pattern_pixels(3, 10));
  }
  EXPECT_EQ(parse_idx_labels(idx_labels_bytes(4, {1, 2, 3, 4}), "y"),
            (std::vector<uint8_t>{1, 2, 3, 4}));
}

TEST(Idx, TruncatedRawImagesNameTheFileAndTheSizes) {
  ScratchDir dir;
  auto bytes = idx_images_bytes(5, 4, 3, pattern_pixels(5, 12));
  bytes.resize(16 + 30);
  const std::string p = dir.file("train-images-idx3-ubyte");
  write_bytes(p, bytes, false);
  const std::string msg = runtime_error_of([&] { read_idx_images(p); });
  EXPECT_CONTAINS(msg, p + ": truncated: header says 5 images of 4x3 (60 bytes) but only "
                                 "30 bytes follow");
}

TEST(Idx, TruncatedGzImagesNameTheFile) {
  ScratchDir dir;
  // Incompressible-ish pixels so that cutting the file cuts the data.
  std::vector<uint8_t> px(200 * 784);
  uint64_t s = 12345;
  for (auto& v : px) v = static_cast<uint8_t>(Rng::splitmix64(s) >> 56);
  const std::string p = dir.file("train-images-idx3-ubyte.gz");
  write_bytes(p, idx_images_bytes(200, 28, 28, px), true);
  const auto full = fs::file_size(p);
  fs::resize_file(p, full * 6 / 10);
  const std::string msg = runtime_error_of([&] { read_idx_images(p); });
  EXPECT_CONTAINS(msg, p + ": truncated: header says 200 images of 28x28 (156800 bytes) "
                                 "but only ");
  EXPECT_CONTAINS(msg, "gzip stream also ends early");
}

TEST(Idx, GzipWithoutTrailerIsTruncated) {
  ScratchDir dir;
  const std::string p = dir.file("lab.gz");
  write_bytes(p, idx_labels_bytes(50, cyclic_labels(50, 10)), true);
  fs::resize_file(p, fs::file_size(p) - 4);  // drop ISIZE from the 8-byte trailer
  const std::string msg = runtime_error_of([&] { read_idx_labels(p); });
  EXPECT_CONTAINS(msg, p + ": truncated");
  EXPECT_CONTAINS(msg, "gzip");
}

TEST(Idx, TruncatedLabelsRawAndGz) {
  for (bool gz : {false, true}) {
    ScratchDir dir;
    auto bytes = idx_labels_bytes(100, cyclic_labels(100, 10));
    bytes.resize(8 + 40);
    const std::string p = dir.file(gz ? "labels.gz" : "labels");
    write_bytes(p, bytes, gz);
    const std::string msg = runtime_error_of([&] { read_idx_labels(p); });
    EXPECT_CONTAINS(msg, p + ": truncated: header says 100 labels (100 bytes) but only 40 "
                                   "bytes follow");
  }
}

TEST(Idx, TruncatedHeader) {
  ScratchDir dir;
  write_bytes(dir.file("a"), {0, 0, 8, 3, 0, 0}, false);
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(dir.file("a")); }),
              dir.file("a") + ": truncated");
  write_bytes(dir.file("b"), {0, 0}, false);
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_labels(dir.file("b")); }),
              dir.file("b") + ": truncated");
  write_bytes(dir.file("c.gz"), {}, true);  // a gzip stream of nothing
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_labels(dir.file("c.gz")); }),
              dir.file("c.gz") + ": truncated");
}

TEST(Idx, BadMagic) {
  ScratchDir dir;
  // A label file passed as images, and an image file passed as labels.
  write_bytes(dir.file("labels"), idx_labels_bytes(3, {1, 2, 3}), false);
  write_bytes(dir.file("images.gz"), idx_images_bytes(1, 2, 2, {1, 2, 3, 4}), true);
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(dir.file("labels")); }),
              dir.file("labels") + ": bad magic number 0x00000801 (that of an IDX "
                                             "label file), expected 0x00000803");
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_labels(dir.file("images.gz")); }),
              dir.file("images.gz") + ": bad magic number 0x00000803");
  // Not IDX at all; and IDX of another element type (0x0D = float).
  write_bytes(dir.file("text"), {'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd', '!', '!',
                                 '!', '!', '!'},
              false);
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(dir.file("text")); }),
              "not an IDX file");
  write_bytes(dir.file("float"), idx_images_bytes(1, 1, 1, {0, 0, 0, 0}, 0x00000D03), false);
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(dir.file("float")); }),
              "bad magic number 0x00000D03");
}

TEST(Idx, ExtraBytesAndBadDimensions) {
  ScratchDir dir;
  auto bytes = idx_images_bytes(2, 2, 2, pattern_pixels(2, 4));
  bytes.push_back(7);
  write_bytes(dir.file("extra"), bytes, false);
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(dir.file("extra")); }),
              "header says 2 images of 2x2 (8 bytes) but 9 bytes follow");
  write_bytes(dir.file("zero"), idx_images_bytes(2, 0, 2, {}), false);
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(dir.file("zero")); }),
              "bad dimensions");
}

TEST(Idx, CountMismatchNamesBothFiles) {
  ScratchDir dir;
  write_bytes(dir.file("img"), idx_images_bytes(10, 2, 2, pattern_pixels(10, 4)), false);
  write_bytes(dir.file("lab"), idx_labels_bytes(9, cyclic_labels(9, 10)), false);
  const std::string msg =
      runtime_error_of([&] { read_idx_dataset(dir.file("img"), dir.file("lab"), "mnist", 10); });
  EXPECT_CONTAINS(msg, dir.file("lab") + ": holds 9 labels but " + dir.file("img") +
                             " holds 10 images");
}

TEST(Idx, LabelOutOfRange) {
  ScratchDir dir;
  write_bytes(dir.file("img"), idx_images_bytes(3, 2, 2, pattern_pixels(3, 4)), false);
  write_bytes(dir.file("lab"), idx_labels_bytes(3, {1, 10, 2}), false);
  EXPECT_CONTAINS(
      runtime_error_of([&] { read_idx_dataset(dir.file("img"), dir.file("lab"), "mnist", 10); }),
      dir.file("lab") + ": label 10 at index 1 is out of range (10 classes)");
}

TEST(Idx, MissingAndCorruptFiles) {
  ScratchDir dir;
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(dir.file("nope")); }),
              dir.file("nope") + ": cannot open");
  // gzip magic followed by garbage.
  std::vector<uint8_t> junk = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
  for (int i = 0; i < 64; ++i) junk.push_back(static_cast<uint8_t>(0xFF - i));
  write_bytes(dir.file("junk.gz"), junk, false);
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(dir.file("junk.gz")); }),
              dir.file("junk.gz") + ": corrupt gzip data");
}

// A FIFO or a device in place of a dataset file: refused by what it is (open() of a FIFO used
// to wait for a writer forever).
TEST(Idx, FifosAndDevicesAreRefusedByKind) {
  ScratchDir dir;
  const std::string fifo = dir.file("train-images-idx3-ubyte");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_images(fifo); }),
                  fifo + ": is a FIFO, not a dataset file");
  EXPECT_CONTAINS(runtime_error_of([&] { read_idx_labels("/dev/zero"); }),
                  "/dev/zero: is a character device, not a dataset file");
}

Dataset cifar_shell(int classes) {
  Dataset d;
  d.name = classes == 100 ? "cifar100" : "cifar10";
  d.channels = 3;
  d.height = d.width = 32;
  d.num_classes = classes;
  return d;
}

TEST(Cifar, Cifar10RecordsReadBackAndAppend) {
  ScratchDir dir;
  const auto l1 = cyclic_labels(5, 10), l2 = cyclic_labels(3, 10, 7);
  write_bytes(dir.file("a.bin"), cifar_bytes(l1, 1, 1), false);
  write_bytes(dir.file("b.bin"), cifar_bytes(l2, 1, 2), false);
  Dataset d = cifar_shell(10);
  read_cifar_file(dir.file("a.bin"), 1, d);
  read_cifar_file(dir.file("b.bin"), 1, d);
  ASSERT_EQ(d.size(), 8);
  ASSERT_EQ(d.images.size(), 8u * 3072);
  const auto p1 = pattern_pixels(5, 3072, 1), p2 = pattern_pixels(3, 3072, 2);
  EXPECT_TRUE(std::equal(p1.begin(), p1.end(), d.images.begin()));
  EXPECT_TRUE(std::equal(p2.begin(), p2.end(), d.images.begin() + 5 * 3072));
  for (int k = 0; k < 5; ++k) EXPECT_EQ(d.labels[k], l1[k]);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(d.labels[5 + k], l2[k]);
  EXPECT_NO_THROW(d.validate());
}

TEST(Cifar, Cifar100UsesTheFineLabel) {
  ScratchDir dir;
  std::vector<uint8_t> fine = {0, 42, 99, 57};
  write_bytes(dir.file("train.bin"), cifar_bytes(fine, 2, 3), false);
  Dataset d = cifar_shell(100);
  read_cifar_file(dir.file("train.bin"), 2, d);
  ASSERT_EQ(d.size(), 4);
  for (int k = 0; k < 4; ++k) EXPECT_EQ(d.labels[k], fine[k]);
  EXPECT_EQ(d.images, pattern_pixels(4, 3072, 3));
}

TEST(Cifar, TruncatedFileNamesTheFile) {
  ScratchDir dir;
  auto bytes = cifar_bytes(cyclic_labels(4, 10), 1, 0);
  bytes.resize(bytes.size() - 100);
  write_bytes(dir.file("data_batch_1.bin"), bytes, false);
  Dataset d = cifar_shell(10);
  const std::string msg = runtime_error_of([&] { read_cifar_file(dir.file("data_batch_1.bin"), 1, d); });
  EXPECT_CONTAINS(msg, dir.file("data_batch_1.bin") + ": truncated");
  EXPECT_CONTAINS(msg, "3 records and 2973 bytes left over");
  EXPECT_EQ(d.size(), 0);
}

TEST(Cifar, GzipBombIsRefusedAtTheLimit) {
  ScratchDir dir;
  // 1 GiB of zeros after one record: more than kMaxCifarFileBytes once inflated.
  const auto record = cifar_bytes(cyclic_labels(1, 10), 1, 0);
  const std::string p = dir.file("data_batch_1.bin.gz");
  write_bytes(p, gzip_bomb(dir, record, 1024), false);
  Dataset d = cifar_shell(10);
  EXPECT_EQ(runtime_error_of([&] { read_cifar_file(p, 1, d); }),
            p + ": the gzip data inflates to more than the limit of 268435456 bytes for a CIFAR "
                "file (a gzip bomb or not a dataset file): refused");
  EXPECT_EQ(d.size(), 0);
  // A gzipped CIFAR file within the limit reads like the raw one.
  write_bytes(dir.file("ok.bin.gz"), cifar_bytes(cyclic_labels(3, 10), 1, 0), true);
  read_cifar_file(dir.file("ok.bin.gz"), 1, d);
  EXPECT_EQ(d.size(), 3);
  Dataset m = cifar_shell(10);
  parse_cifar_file(cifar_bytes(cyclic_labels(2, 10), 1, 0), "mem.bin", 1, m);
  EXPECT_EQ(m.size(), 2);
  EXPECT_EQ(m.labels, (std::vector<int32_t>{0, 1}));
}

TEST(Cifar, EmptyAndOutOfRangeLabels) {
  ScratchDir dir;
  write_bytes(dir.file("empty.bin"), {}, false);
  Dataset d = cifar_shell(10);
  EXPECT_CONTAINS(runtime_error_of([&] { read_cifar_file(dir.file("empty.bin"), 1, d); }),
              dir.file("empty.bin") + ": empty file");
  // A CIFAR-100 file (2 label bytes) read as CIFAR-10 fails on size; fine labels >= 10 as
  // CIFAR-10 with 1 label byte fail on range.
  write_bytes(dir.file("big.bin"), cifar_bytes({3, 25}, 1, 0), false);
  EXPECT_CONTAINS(runtime_error_of([&] { read_cifar_file(dir.file("big.bin"), 1, d); }),
              dir.file("big.bin") + ": record 1: label 25 is out of range (10 classes");
  EXPECT_EQ(d.size(), 0);
  EXPECT_TRUE(d.images.empty());
}

}  // namespace
}  // namespace nns::data
