#include "core/splitter/secrets.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "core/io/json_bounded.h"
#include "core/io/atomic_file.h"
#include "core/io/input_file.h"
#include "core/io/strict_number.h"
#include "core/io/safetensors.h"
#include "kernels/ops.h"

namespace nns::splitter {

static_assert(std::endian::native == std::endian::little,
              "secrets I/O assumes a little-endian host");

namespace {

using json = nlohmann::json;

constexpr size_t kMagicLen = 8;
constexpr size_t kNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;  // 24
constexpr size_t kTagBytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;       // 16
constexpr uint64_t kMaxSealedHeader = 1 << 20;
static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == kKeyBytes);
static_assert(kNonceBytes == 24 && kTagBytes == 16);

void ensure_sodium() {
  static const int rc = sodium_init();  // 0 ok, 1 already initialised, -1 failure
  if (rc < 0) throw std::runtime_error("libsodium failed to initialise (sodium_init)");
}

std::string errno_str(int e) { return std::strerror(e); }

bool is_hex_fingerprint(const std::string& s) {
  if (s.size() != 64) return false;
  for (char ch : s)
    if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) return false;
  return true;
}

void put_u64(std::string& out, uint64_t v) {
  char b[8];
  std::memcpy(b, &v, 8);
  out.append(b, 8);
}

uint64_t get_u64(const std::string& s, size_t at) {
  uint64_t v;
  std::memcpy(&v, s.data() + at, 8);
  return v;
}

// Streams the fingerprint encoding of one entry into the hash state.
struct Hasher {
  crypto_hash_sha256_state st;
  Hasher() {
    ensure_sodium();
    crypto_hash_sha256_init(&st);
    static const char kPrefix[] = "nnsplitter-fingerprint-1\n";
    update(kPrefix, sizeof(kPrefix) - 1);
  }
  void update(const void* p, size_t n) {
    crypto_hash_sha256_update(&st, static_cast<const unsigned char*>(p), n);
  }
  void u64(uint64_t v) { update(&v, 8); }
  void str(const std::string& s) {
    u64(s.size());
    update(s.data(), s.size());
  }
  std::string hex() {
    unsigned char out[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&st, out);
    char h[2 * crypto_hash_sha256_BYTES + 1];
    sodium_bin2hex(h, sizeof h, out, sizeof out);
    return std::string(h);
  }
};

// The fingerprint of the model, as it would be with the secrets' original values written in
// (patch == nullptr: as it is). The secrets must have been checked against the model.
std::string fingerprint_impl(models::Model& m, const Secrets* patch) {
  std::unordered_map<std::string, const SecretTensor*> patches;
  if (patch)
    for (const auto& t : patch->tensors) patches[t.key] = &t;
  auto& entries = m.state();
  std::vector<size_t> order(entries.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return entries[a].key < entries[b].key; });
  Hasher h;
  for (size_t i : order) {
    const auto& e = entries[i];
    const Tensor& t = *e.tensor;
    h.str(e.key);
    h.str(dtype_name(t.dtype()));
    h.u64(uint64_t(t.ndim()));
    for (int64_t d : t.shape()) h.u64(uint64_t(d));
    h.u64(uint64_t(t.nbytes()));
    Tensor host;
    const void* data = t.raw();
    if (t.device() != Device::CPU) {
      host = t.to(Device::CPU);
      data = host.raw();
    }
    auto it = patches.find(e.key);
    if (it != patches.end() && !it->second->index.empty()) {
      if (t.dtype() != DType::F32)
        throw std::runtime_error("fingerprint: secrets for non-F32 tensor '" + e.key + "'");
      std::vector<float> copy(static_cast<const float*>(data),
                              static_cast<const float*>(data) + t.numel());
      const SecretTensor& st = *it->second;
      for (size_t k = 0; k < st.index.size(); ++k) copy[size_t(st.index[k])] = st.original[k];
      h.update(copy.data(), copy.size() * sizeof(float));
    } else if (t.nbytes()) {
      h.update(data, t.nbytes());
    }
  }
  return h.hex();
}

std::string counts_json(const Secrets& s) {
  json c = json::object();
  for (const auto& t : s.tensors)
    if (!t.index.empty()) c[t.key] = int64_t(t.index.size());
  return c.dump();
}

std::string read_all(const std::string& path, const char* what) {
  // Regular files only, checked before opening: a FIFO would block in open() and /dev/zero
  // would be read until memory runs out.
  const std::string kind = io::non_regular_kind(path);
  if (kind == "a folder") throw std::runtime_error(path + ": is a folder, not a " + what);
  if (!kind.empty() && kind != "not found")
    throw std::runtime_error(path + ": is " + kind + ", not a " + what + " (a " + what +
                             " must be a regular file)");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open " + what + ": " + errno_str(errno));
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw std::runtime_error(path + ": read error");
  return s;
}

bool looks_sealed(const std::string& bytes) {
  return bytes.size() >= kMagicLen && std::memcmp(bytes.data(), kSealMagic, kMagicLen) == 0;
}

// Not a sealed file by its magic, but close to one: the magic with 1 to 3 bytes changed, or the
// sealed public header where it would be. (An unsealed file starts with a small u64le header
// length: at least 5 of its first 8 bytes are zero, so it never comes within 3 bytes of
// "NNSSEAL1".)
void refuse_damaged_seal(const std::string& bytes, const std::string& name) {
  if (bytes.size() < kMagicLen || looks_sealed(bytes)) return;
  int differ = 0;
  for (size_t i = 0; i < kMagicLen; ++i) differ += bytes[i] != kSealMagic[i];
  static const std::string kHeaderStart = "{\"fingerprint\":\"";
  bool header = bytes.size() > kMagicLen + 8 + kHeaderStart.size() &&
                bytes.compare(kMagicLen + 8, kHeaderStart.size(), kHeaderStart) == 0;
  if (differ > 3 && !header) return;
  std::string found;
  for (size_t i = 0; i < kMagicLen; ++i) {
    unsigned char ch = static_cast<unsigned char>(bytes[i]);
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
      found += char(ch);
    } else {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", unsigned(ch));
      found += b;
    }
  }
  throw std::runtime_error(name + ": this looks like a sealed secrets file with a damaged header "
                                  "(its first 8 bytes are \"" + found + "\", a sealed file starts "
                                  "with \"" + std::string(kSealMagic) + "\"): the file was "
                                  "corrupted or tampered with; use an intact copy");
}

[[noreturn]] void another_model(const std::string& name, const std::string& theirs,
                                const std::string& ours) {
  throw std::runtime_error(name + ": secrets belong to another model (secrets are for " + theirs +
                           ", this model is " + ours + ")");
}

struct SealedParts {
  std::string fingerprint;
  size_t body_at = 0;  // offset of the nonce
};

// Parses and checks the public part of a sealed file.
SealedParts parse_sealed_header(const std::string& b, const std::string& name) {
  if (b.size() < kMagicLen + 8)
    throw std::runtime_error(name + ": sealed secrets file truncated (" + std::to_string(b.size()) +
                             " bytes)");
  uint64_t len = get_u64(b, kMagicLen);
  if (len > kMaxSealedHeader || kMagicLen + 8 + len + kNonceBytes + kTagBytes > b.size())
    throw std::runtime_error(name + ": sealed secrets header length " + std::to_string(len) +
                             " does not fit in the file of " + std::to_string(b.size()) +
                             " bytes (truncated or tampered file)");
  std::string text = b.substr(kMagicLen + 8, size_t(len));
  json h;
  try {
    h = io::parse_json_bounded(text, name, "sealed secrets header");
  } catch (const json::exception&) {
    throw std::runtime_error(name + ": sealed secrets header is not valid JSON (tampered file?)");
  }
  if (!h.is_object() || h.size() != 2 || !h.contains("fingerprint") || !h.contains("format") ||
      !h["fingerprint"].is_string() || !h["format"].is_string())
    throw std::runtime_error(name + ": sealed secrets header must hold exactly \"fingerprint\" "
                                    "and \"format\" strings (tampered file?)");
  if (h["format"].get<std::string>() != kSealedFormat)
    throw std::runtime_error(name + ": sealed secrets format '" + h["format"].get<std::string>() +
                             "', expected '" + kSealedFormat + "'");
  SealedParts p;
  p.fingerprint = h["fingerprint"].get<std::string>();
  if (!is_hex_fingerprint(p.fingerprint))
    throw std::runtime_error(name + ": sealed secrets header fingerprint is not 64 lower-case hex "
                                    "digits (tampered file?)");
  if (h.dump() != text)
    throw std::runtime_error(name + ": sealed secrets header is not in canonical form "
                                    "(tampered file?)");
  p.body_at = kMagicLen + 8 + size_t(len);
  return p;
}

std::string seal(const std::string& plain, const std::string& fp,
                 const std::vector<uint8_t>& key) {
  ensure_sodium();
  if (key.size() != kKeyBytes)
    throw std::runtime_error("sealing key must be 32 bytes, got " + std::to_string(key.size()));
  json h = json::object();
  h["fingerprint"] = fp;
  h["format"] = kSealedFormat;
  std::string text = h.dump();
  std::string out(kSealMagic, kMagicLen);
  put_u64(out, text.size());
  out += text;
  unsigned char nonce[kNonceBytes];
  randombytes_buf(nonce, sizeof nonce);
  out.append(reinterpret_cast<const char*>(nonce), sizeof nonce);
  size_t at = out.size();
  out.resize(at + plain.size() + kTagBytes);
  unsigned long long clen = 0;
  if (crypto_aead_xchacha20poly1305_ietf_encrypt(
          reinterpret_cast<unsigned char*>(out.data() + at), &clen,
          reinterpret_cast<const unsigned char*>(plain.data()), plain.size(),
          reinterpret_cast<const unsigned char*>(fp.data()), fp.size(), nullptr, nonce,
          key.data()) != 0)
    throw std::runtime_error("sealing the secrets failed");
  out.resize(at + size_t(clen));
  return out;
}

// The dtype strings of the raw header (parse_safetensors converts F16/BF16 to F32, which must
// not pass for the originals).
std::map<std::string, std::string> raw_dtypes(const std::string& bytes) {
  std::map<std::string, std::string> out;
  uint64_t n = get_u64(bytes, 0);
  json h = json::parse(bytes.substr(8, size_t(n)));
  for (auto it = h.begin(); it != h.end(); ++it)
    if (it.key() != "__metadata__") out[it.key()] = it.value().at("dtype").get<std::string>();
  return out;
}

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

Secrets parse_unsealed(const std::string& bytes, const std::string& name) {
  io::SafetensorsFile f = io::parse_safetensors(bytes, name);
  auto fmt = f.metadata.find("format");
  if (fmt == f.metadata.end())
    throw std::runtime_error(name + ": not a secrets file (its metadata has no format = " +
                             kSecretsFormat + ")");
  if (fmt->second != kSecretsFormat)
    throw std::runtime_error(name + ": not a secrets file: format '" + fmt->second +
                             "', expected '" + kSecretsFormat + "'" +
                             (fmt->second == "nnsplitter-weights-1" ? " (this is a weights file)"
                                                                    : ""));
  auto dtypes = raw_dtypes(bytes);
  Secrets s;
  s.metadata = f.metadata;
  std::map<std::string, size_t> slot;  // key -> position in s.tensors
  std::map<std::string, std::pair<bool, bool>> seen;  // key -> (index, original)
  for (const auto& [tname, t] : f.tensors) {
    bool is_index = ends_with(tname, ".index"), is_orig = ends_with(tname, ".original");
    if (!is_index && !is_orig)
      throw std::runtime_error(name + ": unexpected tensor '" + tname +
                               "' (a secrets file holds <key>.index and <key>.original pairs)");
    std::string key = tname.substr(0, tname.size() - (is_index ? 6 : 9));
    if (key.empty()) throw std::runtime_error(name + ": tensor '" + tname + "' names no key");
    const std::string& dt = dtypes.at(tname);
    if (is_index && dt != "I64")
      throw std::runtime_error(name + ": '" + tname + "' has dtype " + dt + ", expected I64");
    if (is_orig && dt != "F32")
      throw std::runtime_error(name + ": '" + tname + "' has dtype " + dt + ", expected F32");
    if (t.ndim() != 1)
      throw std::runtime_error(name + ": '" + tname + "' has shape " + shape_str(t.shape()) +
                               ", expected a 1-d tensor");
    auto it = slot.find(key);
    if (it == slot.end()) {
      it = slot.emplace(key, s.tensors.size()).first;
      s.tensors.push_back(SecretTensor{key, {}, {}});
    }
    SecretTensor& st = s.tensors[it->second];
    if (is_index) {
      st.index.assign(t.i64(), t.i64() + t.numel());
      seen[key].first = true;
    } else {
      st.original.assign(t.f32(), t.f32() + t.numel());
      seen[key].second = true;
    }
  }
  for (const auto& [key, both] : seen) {
    if (!both.first)
      throw std::runtime_error(name + ": '" + key + ".original' has no matching '" + key +
                               ".index'");
    if (!both.second)
      throw std::runtime_error(name + ": '" + key + ".index' has no matching '" + key +
                               ".original'");
  }
  validate_secrets(s, name);
  auto tot = s.metadata.find("total");
  if (tot != s.metadata.end()) {
    // Strict (core/io/strict_number.h): "12junk" is not 12.
    const auto v = io::parse_strict_int(tot->second);
    if (!v || *v != s.total())
      throw std::runtime_error(name + ": metadata total = '" + tot->second + "' but the file holds " +
                               std::to_string(s.total()) + " secret entries");
  }
  // counts as written by write_secrets ({key: n}); other shapes (tools of our own that predate
  // it) are left alone.
  auto cnt = s.metadata.find("counts");
  if (cnt != s.metadata.end()) {
    json c;
    try {
      c = io::parse_json_bounded(cnt->second, name, "metadata counts");
    } catch (const json::exception&) {
      throw std::runtime_error(name + ": metadata counts is not valid JSON");
    }
    json want = json::parse(counts_json(s));
    if (c.is_object() && c != want)
      throw std::runtime_error(name + ": metadata counts " + cnt->second +
                               " disagree with the tensors in the file " + want.dump());
  }
  return s;
}

}  // namespace

int64_t Secrets::total() const {
  int64_t n = 0;
  for (const auto& t : tensors) n += int64_t(t.index.size());
  return n;
}

std::string fingerprint(models::Model& m) { return fingerprint_impl(m, nullptr); }

Secrets diff_secrets(models::Model& original, models::Model& obfuscated) {
  const auto& a = original.spec();
  const auto& b = obfuscated.spec();
  if (a.arch != b.arch || a.in_channels != b.in_channels || a.input_size != b.input_size ||
      a.num_classes != b.num_classes || a.width_mult != b.width_mult)
    throw std::runtime_error("diff_secrets: the models differ in architecture (" + a.arch + " vs " +
                             b.arch + ", or in channels, input size, classes or width)");
  auto& ea = original.state();
  auto& eb = obfuscated.state();
  if (ea.size() != eb.size())
    throw std::runtime_error("diff_secrets: the models have different state dicts");
  Secrets s;
  for (size_t i = 0; i < ea.size(); ++i) {
    const Tensor& ta = *ea[i].tensor;
    const Tensor& tb = *eb[i].tensor;
    if (ea[i].key != eb[i].key || ta.shape() != tb.shape() || ta.dtype() != tb.dtype())
      throw std::runtime_error("diff_secrets: state entry " + std::to_string(i) + " is '" +
                               ea[i].key + "' " + shape_str(ta.shape()) + " in the original, '" +
                               eb[i].key + "' " + shape_str(tb.shape()) + " in the obfuscated model");
    Tensor ha = ta.to(Device::CPU), hb = tb.to(Device::CPU);
    if (ta.dtype() != DType::F32) {
      if (ha.nbytes() && std::memcmp(ha.raw(), hb.raw(), ha.nbytes()) != 0)
        throw std::runtime_error("diff_secrets: '" + ea[i].key + "' (" + dtype_name(ta.dtype()) +
                                 ") differs between the models: only F32 tensors can hold secrets");
      continue;
    }
    const uint32_t* pa = static_cast<const uint32_t*>(ha.raw());
    const uint32_t* pb = static_cast<const uint32_t*>(hb.raw());
    SecretTensor st;
    st.key = ea[i].key;
    for (int64_t j = 0; j < ha.numel(); ++j)
      if (pa[j] != pb[j]) {
        st.index.push_back(j);
        st.original.push_back(ha.f32()[j]);
      }
    if (!st.index.empty()) s.tensors.push_back(std::move(st));
  }
  s.metadata["fingerprint"] = fingerprint(obfuscated);
  s.metadata["original_fingerprint"] = fingerprint(original);
  s.metadata["arch"] = b.arch;
  s.metadata["format"] = kSecretsFormat;
  s.metadata["total"] = std::to_string(s.total());
  s.metadata["counts"] = counts_json(s);
  return s;
}

void validate_secrets(const Secrets& s, const std::string& what) {
  auto fp = s.metadata.find("fingerprint");
  if (fp == s.metadata.end())
    throw std::runtime_error(what + ": secrets metadata has no fingerprint of the model they "
                                    "belong to");
  if (!is_hex_fingerprint(fp->second))
    throw std::runtime_error(what + ": secrets fingerprint '" + fp->second +
                             "' is not 64 lower-case hex digits");
  auto ofp = s.metadata.find("original_fingerprint");
  if (ofp == s.metadata.end())
    throw std::runtime_error(what + ": secrets metadata has no original_fingerprint (the "
                                    "fingerprint of the model once restored), so a restoration "
                                    "could not be verified; secrets written by an older "
                                    "nnsplitter protect lack it: re-create them with this version");
  if (!is_hex_fingerprint(ofp->second))
    throw std::runtime_error(what + ": secrets original_fingerprint '" + ofp->second +
                             "' is not 64 lower-case hex digits");
  std::set<std::string> keys;
  for (const auto& t : s.tensors) {
    if (t.key.empty()) throw std::runtime_error(what + ": a secret tensor has an empty key");
    if (!keys.insert(t.key).second)
      throw std::runtime_error(what + ": key '" + t.key + "' appears twice");
    if (t.index.size() != t.original.size())
      throw std::runtime_error(what + ": '" + t.key + "' has " + std::to_string(t.index.size()) +
                               " indexes but " + std::to_string(t.original.size()) +
                               " original values (lengths must match)");
    for (size_t i = 0; i < t.index.size(); ++i) {
      if (t.index[i] < 0)
        throw std::runtime_error(what + ": '" + t.key + "' index " + std::to_string(t.index[i]) +
                                 " at position " + std::to_string(i) + " is negative");
      if (i > 0 && t.index[i] == t.index[i - 1])
        throw std::runtime_error(what + ": '" + t.key + "' has duplicate index " +
                                 std::to_string(t.index[i]) + " at position " + std::to_string(i));
      if (i > 0 && t.index[i] < t.index[i - 1])
        throw std::runtime_error(what + ": '" + t.key + "' indexes are not sorted: " +
                                 std::to_string(t.index[i]) + " at position " + std::to_string(i) +
                                 " follows " + std::to_string(t.index[i - 1]));
      if (!std::isfinite(t.original[i]))
        throw std::runtime_error(what + ": '" + t.key + "' original value at position " +
                                 std::to_string(i) + " is not finite");
    }
  }
}

std::string serialize_secrets(const Secrets& s, const std::vector<uint8_t>* key) {
  validate_secrets(s, "secrets");
  std::vector<Tensor> store;
  store.reserve(2 * s.tensors.size());
  std::vector<std::pair<std::string, const Tensor*>> named;
  for (const auto& t : s.tensors) {
    if (t.index.empty()) continue;
    int64_t n = int64_t(t.index.size());
    Tensor idx({n}, DType::I64), orig({n}, DType::F32);
    std::memcpy(idx.raw(), t.index.data(), size_t(n) * sizeof(int64_t));
    std::memcpy(orig.raw(), t.original.data(), size_t(n) * sizeof(float));
    store.push_back(std::move(idx));
    named.emplace_back(t.key + ".index", &store.back());
    store.push_back(std::move(orig));
    named.emplace_back(t.key + ".original", &store.back());
  }
  std::map<std::string, std::string> meta = s.metadata;
  meta["format"] = kSecretsFormat;
  meta["total"] = std::to_string(s.total());
  meta["counts"] = counts_json(s);
  std::string plain = io::serialize_safetensors(named, meta, "secrets");
  if (!key) return plain;
  std::string out = seal(plain, s.metadata.at("fingerprint"), *key);
  sodium_memzero(plain.data(), plain.size());
  return out;
}

void write_secrets(const std::string& path, const Secrets& s, const std::vector<uint8_t>* key) {
  std::string bytes = serialize_secrets(s, key);
  io::write_file_atomically(path, bytes, {0600, io::Existing::Replace});
  if (!key) sodium_memzero(bytes.data(), bytes.size());
}

Secrets parse_secrets(const std::string& bytes, const std::string& name,
                      const std::vector<uint8_t>* key, const std::string& expected_fingerprint,
                      bool require_sealed) {
  ensure_sodium();
  refuse_damaged_seal(bytes, name);
  if (looks_sealed(bytes)) {
    SealedParts p = parse_sealed_header(bytes, name);
    if (!expected_fingerprint.empty() && p.fingerprint != expected_fingerprint)
      another_model(name, p.fingerprint, expected_fingerprint);
    if (!key)
      throw std::runtime_error(name + ": secrets file is sealed: pass --key (the 32-byte key file "
                                      "it was sealed with)");
    if (key->size() != kKeyBytes)
      throw std::runtime_error(name + ": key must be 32 bytes, got " + std::to_string(key->size()));
    const unsigned char* nonce = reinterpret_cast<const unsigned char*>(bytes.data() + p.body_at);
    size_t ct_at = p.body_at + kNonceBytes;
    size_t ct_len = bytes.size() - ct_at;
    std::string plain(ct_len - kTagBytes, '\0');
    unsigned long long plen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            reinterpret_cast<unsigned char*>(plain.data()), &plen, nullptr,
            reinterpret_cast<const unsigned char*>(bytes.data() + ct_at), ct_len,
            reinterpret_cast<const unsigned char*>(p.fingerprint.data()), p.fingerprint.size(),
            nonce, key->data()) != 0)
      throw std::runtime_error(name + ": authentication failed: wrong key or tampered file");
    plain.resize(size_t(plen));
    Secrets s;
    try {
      s = parse_unsealed(plain, name + " (sealed content)");
    } catch (...) {
      sodium_memzero(plain.data(), plain.size());
      throw;
    }
    sodium_memzero(plain.data(), plain.size());
    if (s.metadata.at("fingerprint") != p.fingerprint)
      throw std::runtime_error(name + ": the sealed content's fingerprint differs from the public "
                                      "header's");
    return s;
  }
  // Anyone can write an unsealed file: where sealed secrets are expected, accepting one would
  // let a forged file (a "downgrade") restore a model of the forger's choosing.
  if (key)
    throw std::runtime_error(name + ": secrets file is not sealed, but a key was given: sealed "
                                    "secrets are expected, and an unsealed file in their place "
                                    "is refused (it carries no authentication); pass the sealed "
                                    "file, or drop --key for secrets that were never sealed");
  if (require_sealed)
    throw std::runtime_error(name + ": secrets file is not sealed, but the obfuscated model's "
                                    "metadata says its secrets were sealed (" +
                             std::string(kSealedMark) + "): refusing an unsealed file in their "
                             "place; pass the sealed secrets file and --key");
  Secrets s = parse_unsealed(bytes, name);
  if (!expected_fingerprint.empty() && s.metadata.at("fingerprint") != expected_fingerprint)
    another_model(name, s.metadata.at("fingerprint"), expected_fingerprint);
  return s;
}

Secrets read_secrets(const std::string& path, const std::vector<uint8_t>* key,
                     const std::string& expected_fingerprint, bool require_sealed) {
  std::string bytes = read_all(path, "secrets file");
  Secrets s;
  try {
    s = parse_secrets(bytes, path, key, expected_fingerprint, require_sealed);
  } catch (...) {
    sodium_memzero(bytes.data(), bytes.size());
    throw;
  }
  sodium_memzero(bytes.data(), bytes.size());
  return s;
}

void mark_secrets_sealed(std::map<std::string, std::string>& weights_metadata) {
  weights_metadata[kSealedMark] = "true";
}

bool secrets_marked_sealed(const std::map<std::string, std::string>& weights_metadata) {
  auto it = weights_metadata.find(kSealedMark);
  return it != weights_metadata.end() && it->second == "true";
}

Secrets read_secrets_for_model(const std::string& secrets_path, const std::string& key_path,
                               models::Model& m, const std::string& weights_path,
                               const std::map<std::string, std::string>& weights_metadata) {
  std::vector<uint8_t> key;
  if (!key_path.empty()) key = read_key(key_path);
  const bool sealed = secrets_marked_sealed(weights_metadata);
  Secrets s;
  try {
    s = read_secrets(secrets_path, key_path.empty() ? nullptr : &key, fingerprint(m), sealed);
  } catch (...) {
    sodium_memzero(key.data(), key.size());
    throw;
  }
  sodium_memzero(key.data(), key.size());
  try {
    verify_secrets_for_model(m, s);
  } catch (const std::exception& e) {
    throw std::runtime_error(secrets_path + " with " + weights_path + ": " + e.what());
  }
  return s;
}

SecretsFileInfo peek_secrets(const std::string& path) {
  std::string bytes = read_all(path, "secrets file");
  SecretsFileInfo info;
  refuse_damaged_seal(bytes, path);
  if (looks_sealed(bytes)) {
    info.sealed = true;
    info.fingerprint = parse_sealed_header(bytes, path).fingerprint;
  } else {
    io::SafetensorsFile f = io::parse_safetensors(bytes, path);
    auto it = f.metadata.find("fingerprint");
    if (it != f.metadata.end()) info.fingerprint = it->second;
  }
  sodium_memzero(bytes.data(), bytes.size());
  return info;
}

void check_secrets_for_model(models::Model& m, const Secrets& s) {
  validate_secrets(s, "secrets");
  std::string have = fingerprint(m);
  const std::string& want = s.metadata.at("fingerprint");
  if (have != want)
    throw std::runtime_error("secrets belong to model " + want + ", this model is " + have);
  std::unordered_map<std::string, const nn::StateEntry*> by_key;
  for (const auto& e : m.state()) by_key[e.key] = &e;
  for (const auto& t : s.tensors) {
    auto it = by_key.find(t.key);
    if (it == by_key.end())
      throw std::runtime_error("secrets name '" + t.key + "', which " + m.spec().arch +
                               " does not have");
    const Tensor& x = *it->second->tensor;
    if (x.dtype() != DType::F32)
      throw std::runtime_error("secrets for '" + t.key + "', a " + dtype_name(x.dtype()) +
                               " tensor: only F32 tensors can hold secrets");
    if (!t.index.empty() && t.index.back() >= x.numel())
      throw std::runtime_error("secrets index " + std::to_string(t.index.back()) + " of '" + t.key +
                               "' is out of range: the tensor has " + std::to_string(x.numel()) +
                               " elements " + shape_str(x.shape()));
  }
}

void verify_secrets_for_model(models::Model& m, const Secrets& s) {
  check_secrets_for_model(m, s);
  const std::string& want = s.metadata.at("original_fingerprint");
  std::string will = fingerprint_impl(m, &s);
  if (will != want)
    throw std::runtime_error("restoring would give a model with fingerprint " + will +
                             ", but the secrets record " + want +
                             " for the original model (tampered or corrupt secrets); nothing was "
                             "changed");
}

int64_t apply_secrets(models::Model& m, const Secrets& s) {
  verify_secrets_for_model(m, s);
  std::unordered_map<std::string, Tensor*> by_key;
  for (auto& e : m.state()) by_key[e.key] = e.tensor;
  for (const auto& t : s.tensors) {
    if (t.index.empty()) continue;
    Tensor& x = *by_key.at(t.key);
    int64_t n = int64_t(t.index.size());
    if (x.device() == Device::CPU) {
      float* p = x.f32();
      for (int64_t i = 0; i < n; ++i) std::memcpy(&p[t.index[size_t(i)]], &t.original[size_t(i)], 4);
    } else {
      Tensor idx({n}, DType::I64), val({n}, DType::F32);
      std::memcpy(idx.raw(), t.index.data(), size_t(n) * sizeof(int64_t));
      std::memcpy(val.raw(), t.original.data(), size_t(n) * sizeof(float));
      Tensor di = idx.to(x.device()), dv = val.to(x.device());
      ops::Context ctx{x.device(), nullptr};
      ops::scatter(ctx, n, di.i64(), dv.f32(), x.f32());
      ops::synchronize(ctx);
    }
  }
  return s.total();
}

[[noreturn]] static void bad_key_size(const std::string& name, uint64_t size) {
  throw std::runtime_error(name + ": a key file holds exactly 32 bytes, this one has " +
                           std::to_string(size) + " (not a key made by 'nnsplitter keygen')");
}

std::vector<uint8_t> parse_key(const std::string& bytes, const std::string& name) {
  if (bytes.size() != kKeyBytes) bad_key_size(name, bytes.size());
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

std::vector<uint8_t> read_key(const std::string& path) {
  // O_NONBLOCK: a FIFO given as the key does not block open() (fstat then refuses it).
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0)
    throw std::runtime_error(path + ": cannot open key file: " + errno_str(errno) +
                             " (create one with 'nnsplitter keygen --out " + path + "')");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(path + ": key file is not a regular file");
  }
  if (st.st_size != off_t(kKeyBytes)) {  // refused before reading a file of any size
    ::close(fd);
    bad_key_size(path, uint64_t(st.st_size));
  }
  std::string bytes(kKeyBytes, '\0');
  size_t done = 0;
  while (done < kKeyBytes) {
    ssize_t r = ::read(fd, bytes.data() + done, kKeyBytes - done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      ::close(fd);
      sodium_memzero(bytes.data(), bytes.size());
      throw std::runtime_error(path + ": cannot read key file");
    }
    done += size_t(r);
  }
  ::close(fd);
  std::vector<uint8_t> key = parse_key(bytes, path);
  sodium_memzero(bytes.data(), bytes.size());
  if (st.st_mode & 077)
    std::fprintf(stderr, "%s: warning: key file is readable by others (mode %03o); chmod 600 it\n",
                 path.c_str(), unsigned(st.st_mode & 0777));
  return key;
}

void write_new_key(const std::string& path) {
  ensure_sodium();
  try {
    // Built in a temporary file and linked to `path` only when complete and synced: a crash
    // leaves no empty key file behind to block the next keygen.
    io::AtomicFile file(path, {0600, io::Existing::Refuse});
    unsigned char key[kKeyBytes];
    randombytes_buf(key, sizeof key);
    std::string_view bytes(reinterpret_cast<const char*>(key), sizeof key);
    try {
      file.write(bytes);
    } catch (...) {
      sodium_memzero(key, sizeof key);
      throw;
    }
    sodium_memzero(key, sizeof key);
    file.commit();
  } catch (const io::FileExists&) {
    throw std::runtime_error(path + " already exists: refusing to overwrite a key (secrets "
                                    "sealed with it could no longer be opened); choose another "
                                    "path or remove the file first");
  }
}

}  // namespace nns::splitter
