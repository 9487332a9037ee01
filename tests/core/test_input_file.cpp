// Hostile input to the readers (issue 17): strict numbers, and small files that are read only
// when they are regular files within their size bound, with the path named in every error.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/io/input_file.h"
#include "core/io/strict_number.h"

namespace fs = std::filesystem;
using namespace nns;

namespace {

TEST(StrictNumber, IntegersAreTheWholeString) {
  for (auto [text, value] : std::initializer_list<std::pair<const char*, int64_t>>{
           {"7", 7}, {"-3", -3}, {"+4", 4}, {"0", 0}, {"9223372036854775807", INT64_MAX}})
    EXPECT_EQ(io::parse_strict_int(text), value) << text;
  for (const char* bad : {"2junk", " 7", "7 ", "", "+", "-", "+-1", "0x10", "1.0", "1e3",
                          "99999999999999999999", "7\n", "١"})
    EXPECT_FALSE(io::parse_strict_int(bad).has_value()) << "'" << bad << "'";
  EXPECT_EQ(io::parse_strict_int("256", 1, 256), 256);
  EXPECT_FALSE(io::parse_strict_int("257", 1, 256).has_value());
  EXPECT_FALSE(io::parse_strict_int("0", 1, 256).has_value());
}

TEST(StrictNumber, DoublesAreFiniteAndTheWholeString) {
  for (auto [text, value] : std::initializer_list<std::pair<const char*, double>>{
           {"1.5", 1.5}, {"-0.25", -0.25}, {"1e-3", 1e-3}, {"+2", 2}, {".5", 0.5},
           {"0x1p-3", 0.125}, {"4", 4}, {"-0", 0}})
    EXPECT_EQ(io::parse_strict_double(text), value) << text;
  for (const char* bad : {"2junk", " 1", "1 ", "", "inf", "-inf", "+inf", "nan", "NaN",
                          "infinity", "1e999", "-1e999", "abc", "+ 1", "1,5", "1.5f", "--1",
                          "\t2", "2\n"})
    EXPECT_FALSE(io::parse_strict_double(bad).has_value()) << "'" << bad << "'";
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("nns_input_file_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

std::string error_of(const std::string& path, uint64_t max_bytes = io::kMaxConfigBytes) {
  try {
    io::read_input_file(path, max_bytes, "config file");
  } catch (const io::InputFileError& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(InputFile, RegularFilesWithinTheBoundAreRead) {
  TempDir d;
  const std::string p = (d.path / "c.yaml").string();
  std::ofstream(p) << "a: 1\n";
  EXPECT_EQ(io::read_input_file(p, io::kMaxConfigBytes, "config file"), "a: 1\n");
  std::ofstream(p, std::ios::trunc).close();
  EXPECT_EQ(io::read_input_file(p, io::kMaxConfigBytes, "config file"), "");
  // Exactly at the bound: read; one byte more: refused.
  std::ofstream(p, std::ios::trunc) << std::string(100, 'x');
  EXPECT_EQ(io::read_input_file(p, 100, "config file").size(), 100u);
  EXPECT_EQ(error_of(p, 99), p + ": 100 bytes, more than the limit of 99 bytes for a config file");
}

// The probe's cases: each refused at once by what it is, the path named.
TEST(InputFile, DevicesFifosFoldersAndHugeFilesAreRefusedAtOnce) {
  TempDir d;
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(error_of("/dev/zero"),
            "/dev/zero: is a character device, not a config file (a config file must be a "
            "regular file)");
  EXPECT_EQ(error_of("/dev/urandom").rfind("/dev/urandom: is a character device", 0), 0u);
  EXPECT_EQ(error_of(d.path.string()), d.path.string() + ": is a folder, not a config file");
  const std::string fifo = (d.path / "fifo.yaml").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(error_of(fifo), fifo + ": is a FIFO, not a config file (a config file must be a "
                                   "regular file)");
  // 50 MB (sparse: made in no time), refused by its size before a byte is read.
  const std::string big = (d.path / "big.yaml").string();
  std::ofstream(big).close();
  fs::resize_file(big, 50'000'000);
  EXPECT_EQ(error_of(big), big + ": 50000000 bytes, more than the limit of 1 MiB for a config file");
  const std::string missing = (d.path / "missing.yaml").string();
  EXPECT_EQ(error_of(missing), missing + ": config file not found");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  EXPECT_EQ(io::non_regular_kind(fifo), "a FIFO");
  EXPECT_EQ(io::non_regular_kind(big), "");
  EXPECT_EQ(io::non_regular_kind(missing), "not found");
}

TEST(InputFile, ByteSizesAreWordedForPeople) {
  EXPECT_EQ(io::byte_size_text(io::kMaxConfigBytes), "1 MiB");
  EXPECT_EQ(io::byte_size_text(io::kMaxRunsTableBytes), "256 MiB");
  EXPECT_EQ(io::byte_size_text(64 << 10), "64 KiB");
  EXPECT_EQ(io::byte_size_text(1536), "1536 bytes");
  EXPECT_EQ(io::byte_size_text(uint64_t(2) << 30), "2 GiB");
}

}  // namespace
