// Fuzzes data::parse_idx_images and parse_idx_labels (MNIST / Fashion-MNIST files, raw or
// gzipped). The first byte picks:
//   bit 0: image file (0) or label file (1);
//   bit 1: the rest is the file (0), or its content, which the harness gzips (1: so that the
//          fuzzer mutates headers and sizes behind gzip, the gzip-bomb and extra-data paths).
#include "datasets/readers.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz.idx";
  if (size < 1) return 0;
  const bool labels = data[0] & 1, gz = data[0] & 2;
  std::vector<uint8_t> file = gz ? nns::fuzz::gzip_bytes(data + 1, size - 1, 1 + (data[0] >> 2) % 9)
                                 : std::vector<uint8_t>(data + 1, data + size);
  try {
    if (labels) {
      std::vector<uint8_t> l = nns::data::parse_idx_labels(std::move(file), kName);
      nns::fuzz::expect(!gz || l.size() + 8 == size - 1, "labels = content - header");
    } else {
      nns::data::IdxImages im = nns::data::parse_idx_images(std::move(file), kName);
      nns::fuzz::expect(im.pixels.size() == size_t(im.count) * im.rows * im.cols,
                        "pixels = count x rows x cols");
    }
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
  }
  return 0;
}
