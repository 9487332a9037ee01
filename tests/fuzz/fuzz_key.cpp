// Fuzzes splitter::parse_key (what read_key checks of a key file's bytes). Input: the bytes.
#include <algorithm>

#include "core/splitter/secrets.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz.key";
  try {
    std::vector<uint8_t> k =
        nns::splitter::parse_key(std::string(reinterpret_cast<const char*>(data), size), kName);
    nns::fuzz::expect(k.size() == nns::splitter::kKeyBytes && size == k.size() &&
                          std::equal(k.begin(), k.end(), data),
                      "a key is the file's 32 bytes");
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
    nns::fuzz::expect(size != nns::splitter::kKeyBytes, "32 bytes are a key");
  }
  return 0;
}
