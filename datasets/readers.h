// File readers: IDX (MNIST, Fashion-MNIST; gzipped or raw) and the CIFAR binary format.
// Every error is a std::runtime_error whose message starts with the file's path. Each reader
// of a path has a parse_ twin taking the file's bytes and the name to use in errors (the path
// version reads the file and calls it; the fuzz harnesses in tests/fuzz call it directly).
//
// Limits: a dataset file is at most kMaxDatasetFileBytes, on disk and once inflated. gzip data
// is inflated only as far as needed: an IDX file up to the size its header announces (plus one
// byte to notice more), a CIFAR file up to kMaxCifarFileBytes; a stream that goes on (a gzip
// bomb) is refused without inflating more.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "datasets/dataset.h"

namespace nns::data {

// 2 GiB: the largest IDX/CIFAR file we know (EMNIST byclass images) is 550 MB inflated.
inline constexpr uint64_t kMaxDatasetFileBytes = uint64_t(1) << 31;
// 256 MiB: CIFAR files announce no size; the largest (CIFAR-100 train.bin) is 154 MB.
inline constexpr uint64_t kMaxCifarFileBytes = uint64_t(1) << 28;

// The bytes of a file, gunzipped when it starts with the gzip magic 1f 8b (concatenated gzip
// members are joined). *gzip_complete (optional) is set to false when the gzip stream ends
// before its end-of-stream marker (a cut-short file), true otherwise. Throws when the file
// cannot be opened or the gzip data is corrupt.
std::vector<uint8_t> read_file_maybe_gz(const std::string& path, bool* gzip_complete = nullptr);

struct IdxImages {
  int64_t count = 0;
  int rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // [count, rows, cols]
};
// IDX image file: magic 0x00000803, then count, rows, cols (big-endian uint32), then the pixels.
IdxImages read_idx_images(const std::string& path);
IdxImages parse_idx_images(std::vector<uint8_t> file, const std::string& name_for_errors);
// IDX label file: magic 0x00000801, then count, then one byte per label.
std::vector<uint8_t> read_idx_labels(const std::string& path);
std::vector<uint8_t> parse_idx_labels(std::vector<uint8_t> file, const std::string& name_for_errors);

// An image file and its label file as a 1-channel dataset; checks that the counts agree and
// that labels are below num_classes.
Dataset read_idx_dataset(const std::string& images_path, const std::string& labels_path,
                         const std::string& name, int num_classes);

// Appends the records of a CIFAR binary file to d (3x32x32 images): each record is label_bytes
// label bytes (1 for CIFAR-10; 2 for CIFAR-100: coarse then fine, the last one is used) and
// 3072 image bytes. The file size must be a non-zero multiple of the record size and every
// label below d.num_classes. d.channels/height/width must be 3/32/32.
void read_cifar_file(const std::string& path, int label_bytes, Dataset& d);
void parse_cifar_file(std::vector<uint8_t> file, const std::string& name_for_errors,
                      int label_bytes, Dataset& d);

}  // namespace nns::data
