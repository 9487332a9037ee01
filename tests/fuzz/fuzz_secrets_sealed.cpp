// Fuzzes splitter::parse_secrets on sealed secrets files with a fixed test key. The first
// byte picks what the rest is:
//   even: the sealed file itself (the fuzzer mutates magic, header length, public JSON header,
//         nonce and ciphertext: everything before the authentication check);
//   odd:  the inner (unsealed) content, which the harness seals with the test key under the
//         public fingerprint "ff..f" (so the fuzzer reaches the parsing after decryption,
//         which it could not by forging a tag).
// Sealing follows the byte format of core/splitter/secrets.h.
#include <sodium.h>

#include <cstring>

#include "core/splitter/secrets.h"
#include "tests/fuzz/fuzz_common.h"

namespace {

const std::string kFingerprint(64, 'f');

std::vector<uint8_t> test_key() {
  std::vector<uint8_t> k(nns::splitter::kKeyBytes);
  for (size_t i = 0; i < k.size(); ++i) k[i] = uint8_t(i * 7 + 1);
  return k;
}

std::string seal(const std::string& plain, const std::vector<uint8_t>& key) {
  const std::string header =
      R"({"fingerprint":")" + kFingerprint + R"(","format":"nnsplitter-sealed-secrets-1"})";
  std::string out(nns::splitter::kSealMagic, 8);
  const uint64_t n = header.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += header;
  unsigned char nonce[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES] = {};  // fixed: reproducible
  out.append(reinterpret_cast<const char*>(nonce), sizeof nonce);
  const size_t at = out.size();
  out.resize(at + plain.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long clen = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      reinterpret_cast<unsigned char*>(out.data() + at), &clen,
      reinterpret_cast<const unsigned char*>(plain.data()), plain.size(),
      reinterpret_cast<const unsigned char*>(kFingerprint.data()), kFingerprint.size(), nullptr,
      nonce, key.data());
  out.resize(at + size_t(clen));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string kName = "fuzz.sealed";
  static const std::vector<uint8_t> key = [] {
    nns::fuzz::expect(sodium_init() >= 0, "sodium_init");
    return test_key();
  }();
  if (size < 1) return 0;
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1) bytes = seal(bytes, key);
  try {
    nns::splitter::Secrets s = nns::splitter::parse_secrets(bytes, kName, &key);
    nns::splitter::validate_secrets(s, kName);
    if (data[0] & 1) nns::fuzz::expect(s.metadata.at("fingerprint") == kFingerprint, "fingerprint");
  } catch (const std::runtime_error& e) {
    nns::fuzz::expect_named(e, kName);
  }
  return 0;
}
