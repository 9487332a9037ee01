// Helpers for the dataset tests: a scratch directory and writers for small IDX and CIFAR files.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "datasets/dataset.h"

namespace nns::data::testing {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it at the end.
class ScratchDir {
 public:
  ScratchDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string tag = info ? std::string(info->test_suite_name()) + "_" + info->name() : "x";
    for (char& c : tag)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    path_ = fs::temp_directory_path() /
            ("nns_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + tag);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string sub(const std::string& name) const {
    fs::create_directories(path_ / name);
    return (path_ / name).string();
  }

 private:
  fs::path path_;
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& b, bool gz) {
  fs::create_directories(fs::path(path).parent_path());
  if (gz) {
    gzFile f = gzopen(path.c_str(), "wb");
    if (!f) throw std::runtime_error("cannot write " + path);
    if (!b.empty() && gzwrite(f, b.data(), static_cast<unsigned>(b.size())) !=
                          static_cast<int>(b.size()))
      throw std::runtime_error("gzwrite failed for " + path);
    gzclose(f);
  } else {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    if (!f) throw std::runtime_error("cannot write " + path);
  }
}

inline void put_be32(std::vector<uint8_t>& b, uint32_t v) {
  b.push_back(uint8_t(v >> 24));
  b.push_back(uint8_t(v >> 16));
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}

inline std::vector<uint8_t> idx_images_bytes(uint32_t n, uint32_t rows, uint32_t cols,
                                             const std::vector<uint8_t>& pixels,
                                             uint32_t magic = 0x00000803) {
  std::vector<uint8_t> b;
  put_be32(b, magic);
  put_be32(b, n);
  put_be32(b, rows);
  put_be32(b, cols);
  b.insert(b.end(), pixels.begin(), pixels.end());
  return b;
}

inline std::vector<uint8_t> idx_labels_bytes(uint32_t n, const std::vector<uint8_t>& labels,
                                             uint32_t magic = 0x00000801) {
  std::vector<uint8_t> b;
  put_be32(b, magic);
  put_be32(b, n);
  b.insert(b.end(), labels.begin(), labels.end());
  return b;
}

// Pixel i of image k: a pattern that differs between images.
inline std::vector<uint8_t> pattern_pixels(int64_t n, int64_t per, uint32_t salt = 0) {
  std::vector<uint8_t> p(static_cast<size_t>(n * per));
  for (int64_t k = 0; k < n; ++k)
    for (int64_t i = 0; i < per; ++i)
      p[k * per + i] = static_cast<uint8_t>((k * 31 + i * 7 + salt * 13 + (k * i) % 5) & 0xFF);
  return p;
}

inline std::vector<uint8_t> cyclic_labels(int64_t n, int classes, int offset = 0) {
  std::vector<uint8_t> l(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) l[k] = static_cast<uint8_t>((k + offset) % classes);
  return l;
}

// Writes the four IDX files of an MNIST-like dataset (rows x cols images) into dir.
inline void write_idx_dataset(const std::string& dir, int64_t n_train, int64_t n_test, bool gz,
                              int rows = 28, int cols = 28) {
  const std::string ext = gz ? ".gz" : "";
  const int64_t per = int64_t(rows) * cols;
  write_bytes(dir + "/train-images-idx3-ubyte" + ext,
              idx_images_bytes(n_train, rows, cols, pattern_pixels(n_train, per, 1)), gz);
  write_bytes(dir + "/train-labels-idx1-ubyte" + ext,
              idx_labels_bytes(n_train, cyclic_labels(n_train, 10)), gz);
  write_bytes(dir + "/t10k-images-idx3-ubyte" + ext,
              idx_images_bytes(n_test, rows, cols, pattern_pixels(n_test, per, 2)), gz);
  write_bytes(dir + "/t10k-labels-idx1-ubyte" + ext,
              idx_labels_bytes(n_test, cyclic_labels(n_test, 10, 3)), gz);
}

// CIFAR binary records: label_bytes label bytes (the last one = labels[k]; a coarse label
// 99 - fine before it for CIFAR-100) + 3072 pixel bytes.
inline std::vector<uint8_t> cifar_bytes(const std::vector<uint8_t>& labels, int label_bytes,
                                        uint32_t salt) {
  const int64_t n = static_cast<int64_t>(labels.size());
  const std::vector<uint8_t> px = pattern_pixels(n, 3072, salt);
  std::vector<uint8_t> b;
  for (int64_t k = 0; k < n; ++k) {
    if (label_bytes == 2) b.push_back(static_cast<uint8_t>(19 - labels[k] % 20));
    b.push_back(labels[k]);
    b.insert(b.end(), px.begin() + k * 3072, px.begin() + (k + 1) * 3072);
  }
  return b;
}

// A 1x4x4 dataset whose image k holds k in its first two bytes (to track samples).
inline Dataset indexed_dataset(int64_t n, int classes = 10) {
  Dataset d;
  d.name = "synthetic";
  d.channels = 1;
  d.height = d.width = 4;
  d.num_classes = classes;
  d.images.assign(static_cast<size_t>(n * 16), 0);
  d.labels.resize(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) {
    d.images[k * 16] = static_cast<uint8_t>(k & 0xFF);
    d.images[k * 16 + 1] = static_cast<uint8_t>((k >> 8) & 0xFF);
    for (int i = 2; i < 16; ++i) d.images[k * 16 + i] = static_cast<uint8_t>(k * 3 + i);
    d.labels[k] = static_cast<int32_t>(k % classes);
  }
  return d;
}
inline int64_t sample_id(const Dataset& d, int64_t i) {
  return int64_t(d.images[i * 16]) | (int64_t(d.images[i * 16 + 1]) << 8);
}

inline ::testing::AssertionResult StringContains(const char* s_expr, const char* sub_expr,
                                                const std::string& s, const std::string& sub) {
  if (s.find(sub) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << s_expr << " is\n  \"" << s << "\"\nwhich does not contain "
                                       << sub_expr << ":\n  \"" << sub << "\"";
}
#define EXPECT_CONTAINS(s, sub) EXPECT_PRED_FORMAT2(::nns::data::testing::StringContains, s, sub)

// Runs f and returns the message of the std::runtime_error it throws ("" when none).
template <class F>
std::string runtime_error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace nns::data::testing
