// Fuzzes data::parse_cifar_file (CIFAR-10/100 binary batches, raw or gzipped). The first byte
// picks: bit 0: CIFAR-10 (1 label byte, 10 classes) or CIFAR-100 (2 label bytes, 100 classes);
// bit 1: the rest is the file, or its content which the harness gzips; bit 2: append to a
// dataset that already holds one record (as for the 2nd..5th CIFAR-10 batch).
#include <cstring>

#include "datasets/readers.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz.bin";
  if (size < 1) return 0;
  const bool c100 = data[0] & 1, gz = data[0] & 2, append = data[0] & 4;
  std::vector<uint8_t> file = gz ? nns::fuzz::gzip_bytes(data + 1, size - 1, 6)
                                 : std::vector<uint8_t>(data + 1, data + size);
  nns::data::Dataset d;
  d.name = c100 ? "cifar100" : "cifar10";
  d.channels = 3;
  d.height = d.width = 32;
  d.num_classes = c100 ? 100 : 10;
  if (append) {
    d.images.assign(3072, 7);
    d.labels.assign(1, 3);
  }
  const size_t before = d.labels.size();
  try {
    nns::data::parse_cifar_file(std::move(file), kName, c100 ? 2 : 1, d);
    nns::fuzz::expect(d.labels.size() > before, "at least one record");
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
    nns::fuzz::expect(d.labels.size() == before, "nothing appended on error");
  }
  nns::fuzz::expect(d.images.size() == d.labels.size() * 3072, "images = labels x 3072");
  for (int32_t l : d.labels) nns::fuzz::expect(l >= 0 && l < d.num_classes, "label range");
  return 0;
}
