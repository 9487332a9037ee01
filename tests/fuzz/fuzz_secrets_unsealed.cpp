// Fuzzes splitter::parse_secrets on unsealed secrets files (safetensors holding <key>.index /
// <key>.original pairs and metadata), with no key, and with an expected fingerprint when the
// first byte is odd. Input: the file's bytes after that first byte.
#include "core/splitter/secrets.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz.secrets";
  static const std::string kFingerprint(64, 'a');
  if (size < 1) return 0;
  const std::string expected = (data[0] & 1) ? kFingerprint : std::string();
  const std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    nns::splitter::Secrets s = nns::splitter::parse_secrets(bytes, kName, nullptr, expected);
    nns::splitter::validate_secrets(s, kName);  // what parse promises
    if (!expected.empty())
      nns::fuzz::expect(s.metadata.at("fingerprint") == expected, "expected fingerprint");
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
  }
  return 0;
}
