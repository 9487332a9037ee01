// Secrets (core/splitter/secrets.h) and split inference (core/splitter/split_inference.h):
// exact round trips, fingerprints, sealing (right key, wrong key, every flipped byte, another
// model), strict validation, the restore/keygen/infer CLI (when the binary has them), the
// numpy-only tools/apply_secrets.py, and O_n − O_s on convolutions, linears and grouped
// convolutions.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/io/model_io.h"
#include "core/io/safetensors.h"
#include "core/models/zoo.h"
#include "core/splitter/secrets.h"
#include "core/splitter/split_inference.h"

namespace fs = std::filesystem;
using namespace nns;
using splitter::Secrets;
using splitter::SecretTensor;

namespace {

struct SecretsTempDir {
  fs::path path;
  SecretsTempDir() {
    std::string templ = (fs::temp_directory_path() / "nns-secrets-XXXXXX").string();
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp failed");
    path = templ;
  }
  ~SecretsTempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

models::ModelSpec lenet_spec() {
  models::ModelSpec s;
  s.arch = "lenet5";
  s.in_channels = 1;
  s.input_size = 28;
  s.num_classes = 10;
  return s;
}

models::ModelSpec small_spec(const std::string& arch) {
  models::ModelSpec s;
  s.arch = arch;
  s.in_channels = 3;
  s.input_size = 32;
  s.num_classes = 10;
  s.width_mult = 0.25f;
  return s;
}

std::unique_ptr<models::Model> clone(models::Model& m) {
  auto c = models::build_model(m.spec(), 12345);
  auto& a = m.state();
  auto& b = c->state();
  for (size_t i = 0; i < a.size(); ++i) b[i].tensor->copy_from(*a[i].tensor);
  return c;
}

Tensor* entry(models::Model& m, const std::string& key) {
  for (auto& e : m.state())
    if (e.key == key) return e.tensor;
  throw std::runtime_error("no key " + key);
}

// Mimics obfuscation: in a few filters of each listed tensor, pushes `per_tensor` entries to a
// clamp bound (alternating) or far from their value. Returns the number of changed entries.
int64_t perturb(models::Model& m, const std::vector<std::string>& keys, int per_tensor,
                uint64_t seed, float magnitude = 0.5f) {
  std::mt19937_64 rng(seed);
  int64_t changed = 0;
  for (const auto& key : keys) {
    Tensor* t = entry(m, key);
    Tensor h = t->to(Device::CPU);
    int64_t rows = t->dim(0);
    int64_t row = t->numel() / rows;
    // A few filters (as the controller picks k filters per layer).
    std::vector<int64_t> filters;
    int nf = int(std::min<int64_t>(3, rows));
    while (int(filters.size()) < nf) {
      int64_t f = int64_t(rng() % uint64_t(rows));
      if (std::find(filters.begin(), filters.end(), f) == filters.end()) filters.push_back(f);
    }
    std::set<int64_t> picked;
    int want = int(std::min<int64_t>(per_tensor, nf * row));
    while (int(picked.size()) < want) {
      int64_t f = filters[rng() % filters.size()];
      picked.insert(f * row + int64_t(rng() % uint64_t(row)));
    }
    int k = 0;
    for (int64_t j : picked) {
      float v = h.f32()[j];
      float nv = (k++ % 2) ? magnitude : -magnitude;
      if (nv == v) nv = -nv;
      h.f32()[j] = nv;
      ++changed;
    }
    t->copy_from(h);
  }
  return changed;
}

void expect_bit_identical(models::Model& a, models::Model& b) {
  auto& ea = a.state();
  auto& eb = b.state();
  ASSERT_EQ(ea.size(), eb.size());
  for (size_t i = 0; i < ea.size(); ++i) {
    Tensor ha = ea[i].tensor->to(Device::CPU), hb = eb[i].tensor->to(Device::CPU);
    ASSERT_EQ(ha.nbytes(), hb.nbytes()) << ea[i].key;
    EXPECT_EQ(0, std::memcmp(ha.raw(), hb.raw(), ha.nbytes())) << ea[i].key << " differs";
  }
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

#define EXPECT_THROW_HAS(stmt, needle)                                           \
  do {                                                                           \
    std::string msg_ = error_of([&] { stmt; });                                  \
    EXPECT_NE(msg_.find(needle), std::string::npos) << "message: " << msg_;      \
  } while (0)

// An original model and an obfuscated copy with several perturbed weight tensors.
struct Pair {
  std::unique_ptr<models::Model> orig, obf;
  int64_t changed = 0;
};

Pair lenet_pair(uint64_t seed = 1) {
  Pair p;
  p.orig = models::build_model(lenet_spec(), seed);
  p.obf = clone(*p.orig);
  p.changed = perturb(*p.obf, {"conv1.weight", "conv2.weight", "fc1.weight", "fc3.weight"}, 80,
                      seed * 7 + 3);
  return p;
}

std::string fixed_fp(char c) { return std::string(64, c); }

// ------------------------------------------------------------------------------- popen helpers
struct RunResult {
  int code = -1;
  std::string output;
};

RunResult run_cmd(const std::string& cmd) {
  RunResult r;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int st = ::pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

std::string binary() { return std::string(NNS_BINARY_DIR) + "/nnsplitter"; }

// Whether the binary exists and has the subcommand.
bool has_command(const std::string& cmd) {
  if (!fs::exists(binary())) return false;
  return run_cmd(q(binary()) + " " + cmd + " --help").code == 0;
}

}  // namespace

// ------------------------------------------------------------------------------------- basics
TEST(Secrets, FingerprintStableAndSensitiveToOneBit) {
  auto a = models::build_model(lenet_spec(), 3);
  auto b = models::build_model(lenet_spec(), 3);
  std::string fa = splitter::fingerprint(*a);
  EXPECT_EQ(fa.size(), 64u);
  EXPECT_EQ(fa.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(fa, splitter::fingerprint(*a));
  EXPECT_EQ(fa, splitter::fingerprint(*b));
  // Flip the lowest bit of one weight.
  Tensor* w = entry(*b, "fc2.weight");
  Tensor h = w->to(Device::CPU);
  uint32_t bits;
  std::memcpy(&bits, &h.f32()[17], 4);
  bits ^= 1u;
  std::memcpy(&h.f32()[17], &bits, 4);
  w->copy_from(h);
  EXPECT_NE(fa, splitter::fingerprint(*b));
  bits ^= 1u;
  std::memcpy(&h.f32()[17], &bits, 4);
  w->copy_from(h);
  EXPECT_EQ(fa, splitter::fingerprint(*b));
  // -0.0 and +0.0 are different bit patterns.
  h.f32()[17] = 0.0f;
  w->copy_from(h);
  std::string pz = splitter::fingerprint(*b);
  h.f32()[17] = -0.0f;
  w->copy_from(h);
  EXPECT_NE(pz, splitter::fingerprint(*b));
  // A different model.
  auto c = models::build_model(lenet_spec(), 4);
  EXPECT_NE(fa, splitter::fingerprint(*c));
}

TEST(Secrets, DiffWriteReadApplyIsBitExact) {
  SecretsTempDir dir;
  for (const char* arch : {"lenet5", "resnet20"}) {
    SCOPED_TRACE(arch);
    auto spec = std::string(arch) == "lenet5" ? lenet_spec() : small_spec(arch);
    auto orig = models::build_model(spec, 11);
    auto obf = clone(*orig);
    std::vector<std::string> keys;
    if (spec.arch == "lenet5")
      keys = {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"};
    else
      keys = {"conv1.weight", "layer1.0.conv1.weight", "layer2.1.conv2.weight",
              "layer3.2.conv1.weight", "fc.weight"};
    int64_t changed = perturb(*obf, keys, 60, 99);
    ASSERT_GT(changed, 200);

    Secrets s = splitter::diff_secrets(*orig, *obf);
    EXPECT_EQ(s.total(), changed);
    EXPECT_EQ(s.tensors.size(), keys.size());
    EXPECT_EQ(s.metadata.at("fingerprint"), splitter::fingerprint(*obf));
    EXPECT_EQ(s.metadata.at("original_fingerprint"), splitter::fingerprint(*orig));
    EXPECT_EQ(s.metadata.at("arch"), spec.arch);
    for (const auto& t : s.tensors) {
      EXPECT_TRUE(std::is_sorted(t.index.begin(), t.index.end()));
      EXPECT_EQ(t.index.size(), t.original.size());
    }
    s.metadata["c"] = "-0.0012";
    s.metadata["eps"] = "8e-05";

    std::string path = dir.file(spec.arch + ".secrets.safetensors");
    splitter::write_secrets(path, s);
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    // Plain safetensors layout.
    io::SafetensorsFile f = io::read_safetensors(path);
    EXPECT_EQ(f.metadata.at("format"), "nnsplitter-secrets-1");
    EXPECT_EQ(f.metadata.at("total"), std::to_string(changed));
    EXPECT_EQ(f.tensors.size(), 2 * keys.size());
    ASSERT_NE(f.find(keys[0] + ".index"), nullptr);
    EXPECT_EQ(f.find(keys[0] + ".index")->dtype(), DType::I64);
    EXPECT_EQ(f.find(keys[0] + ".original")->dtype(), DType::F32);

    Secrets r = splitter::read_secrets(path);
    ASSERT_EQ(r.tensors.size(), s.tensors.size());
    for (size_t i = 0; i < r.tensors.size(); ++i) {
      EXPECT_EQ(r.tensors[i].key, s.tensors[i].key);
      EXPECT_EQ(r.tensors[i].index, s.tensors[i].index);
      EXPECT_EQ(0, std::memcmp(r.tensors[i].original.data(), s.tensors[i].original.data(),
                               4 * s.tensors[i].original.size()));
    }
    EXPECT_EQ(r.metadata.at("c"), "-0.0012");
    EXPECT_EQ(r.metadata.at("fingerprint"), s.metadata.at("fingerprint"));

    EXPECT_EQ(splitter::apply_secrets(*obf, r), changed);
    expect_bit_identical(*orig, *obf);
    EXPECT_EQ(splitter::fingerprint(*obf), s.metadata.at("original_fingerprint"));
    // Applying again: the model is no longer the obfuscated one.
    EXPECT_THROW_HAS(splitter::apply_secrets(*obf, r), "secrets belong to model");
  }
}

TEST(Secrets, DiffRequiresSameArchitecture) {
  auto a = models::build_model(lenet_spec(), 1);
  auto b = models::build_model(small_spec("resnet20"), 1);
  EXPECT_THROW_HAS(splitter::diff_secrets(*a, *b), "architecture");
  auto c = clone(*a);
  EXPECT_EQ(splitter::diff_secrets(*a, *c).total(), 0);
}

// ------------------------------------------------------------------------------------ sealing
TEST(Secrets, KeyFiles) {
  SecretsTempDir dir;
  std::string k = dir.file("k.key");
  splitter::write_new_key(k);
  struct stat st {};
  ASSERT_EQ(::stat(k.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_size, 32);
  auto key = splitter::read_key(k);
  EXPECT_EQ(key.size(), 32u);
  std::string before = slurp(k);
  EXPECT_THROW_HAS(splitter::write_new_key(k), "refusing to overwrite");
  EXPECT_EQ(slurp(k), before);
  std::string k2 = dir.file("k2.key");
  splitter::write_new_key(k2);
  EXPECT_NE(slurp(k2), before);
  spit(dir.file("short.key"), std::string(31, 'x'));
  EXPECT_THROW_HAS(splitter::read_key(dir.file("short.key")), "exactly 32 bytes");
  spit(dir.file("long.key"), std::string(33, 'x'));
  EXPECT_THROW_HAS(splitter::read_key(dir.file("long.key")), "exactly 32 bytes");
  EXPECT_THROW_HAS(splitter::read_key(dir.file("missing.key")), "cannot open key file");
}

TEST(Secrets, KeyBytesAreCheckedInMemoryLikeFiles) {
  const std::string bytes(32, '\x5a');
  auto key = splitter::parse_key(bytes, "mem.key");
  EXPECT_EQ(key, std::vector<uint8_t>(32, 0x5a));
  for (size_t n : {size_t(0), size_t(31), size_t(33), size_t(1) << 20})
    EXPECT_EQ(error_of([&] { splitter::parse_key(std::string(n, 'k'), "mem.key"); }),
              "mem.key: a key file holds exactly 32 bytes, this one has " + std::to_string(n) +
                  " (not a key made by 'nnsplitter keygen')");
}

// nlohmann parses deep JSON but dumps and compares it recursively: the sealed public header
// and the counts metadata (JSON inside a string) are parsed with the depth limit.
TEST(Secrets, DeeplyNestedJsonIsRefused) {
  const std::string deep = std::string(70000, '[') + std::string(70000, ']');
  std::string sealed = std::string(splitter::kSealMagic, 8);
  const uint64_t n = deep.size();
  sealed.append(reinterpret_cast<const char*>(&n), 8);
  sealed += deep + std::string(64, '\0');
  std::vector<uint8_t> key(32, 1);
  EXPECT_EQ(error_of([&] { splitter::parse_secrets(sealed, "deep.secrets", &key); }),
            "deep.secrets: sealed secrets header is nested more than 64 levels deep");
  SecretsTempDir dir;
  const std::string path = dir.file("deep.secrets");
  spit(path, sealed);
  EXPECT_EQ(error_of([&] { splitter::peek_secrets(path); }),
            path + ": sealed secrets header is nested more than 64 levels deep");

  std::map<std::string, std::string> meta = {{"format", splitter::kSecretsFormat},
                                             {"fingerprint", std::string(64, 'a')},
                                             {"original_fingerprint", std::string(64, 'b')},
                                             {"counts", "{\"w\":" + deep + "}"}};
  const std::string plain = nns::io::serialize_safetensors({}, meta);
  EXPECT_EQ(error_of([&] { splitter::parse_secrets(plain, "deep.secrets"); }),
            "deep.secrets: metadata counts is nested more than 64 levels deep");
}

TEST(Secrets, SealedRoundTripWrongKeyAndUnsealedWithKey) {
  SecretsTempDir dir;
  Pair p = lenet_pair();
  Secrets s = splitter::diff_secrets(*p.orig, *p.obf);
  splitter::write_new_key(dir.file("a.key"));
  splitter::write_new_key(dir.file("b.key"));
  auto ka = splitter::read_key(dir.file("a.key"));
  auto kb = splitter::read_key(dir.file("b.key"));
  std::string path = dir.file("sealed.secrets");
  splitter::write_secrets(path, s, &ka);
  std::string bytes = slurp(path);
  ASSERT_GT(bytes.size(), 64u);
  EXPECT_EQ(bytes.substr(0, 8), "NNSSEAL1");
  // The original values do not appear in clear.
  std::string needle(reinterpret_cast<const char*>(s.tensors[0].original.data()), 16);
  EXPECT_EQ(bytes.find(needle), std::string::npos);
  auto info = splitter::peek_secrets(path);
  EXPECT_TRUE(info.sealed);
  EXPECT_EQ(info.fingerprint, s.metadata.at("fingerprint"));

  EXPECT_THROW_HAS(splitter::read_secrets(path), "is sealed: pass --key");
  EXPECT_THROW_HAS(splitter::read_secrets(path, &kb), "authentication failed: wrong key or tampered file");
  Secrets r = splitter::read_secrets(path, &ka, splitter::fingerprint(*p.obf));
  EXPECT_EQ(r.total(), p.changed);
  splitter::apply_secrets(*p.obf, r);
  expect_bit_identical(*p.orig, *p.obf);

  // Two seals of the same secrets differ (fresh nonce) and both open.
  EXPECT_NE(splitter::serialize_secrets(s, &ka), splitter::serialize_secrets(s, &ka));

  // An unsealed file read with a key is refused (a downgrade: anyone can write one), and so is
  // one read where sealed secrets are required.
  std::string plain = dir.file("plain.secrets");
  splitter::write_secrets(plain, s);
  EXPECT_FALSE(splitter::peek_secrets(plain).sealed);
  EXPECT_THROW_HAS(splitter::read_secrets(plain, &ka), "not sealed, but a key was given");
  EXPECT_THROW_HAS(splitter::read_secrets(plain, nullptr, "", true),
                   "not sealed, but the obfuscated model's metadata");
  EXPECT_EQ(splitter::read_secrets(plain).total(), p.changed);
  EXPECT_EQ(splitter::read_secrets(path, &ka, "", true).total(), p.changed);
  // The weights-metadata mark that requires sealed secrets.
  std::map<std::string, std::string> meta{{"dataset", "x"}};
  EXPECT_FALSE(splitter::secrets_marked_sealed(meta));
  splitter::mark_secrets_sealed(meta);
  EXPECT_TRUE(splitter::secrets_marked_sealed(meta));
  EXPECT_EQ(meta.at(splitter::kSealedMark), "true");
}

TEST(Secrets, ReadSecretsForModelVerifiesEverything) {
  SecretsTempDir dir;
  Pair p = lenet_pair(9);
  Secrets s = splitter::diff_secrets(*p.orig, *p.obf);
  splitter::write_new_key(dir.file("k"));
  auto key = splitter::read_key(dir.file("k"));
  splitter::write_secrets(dir.file("plain"), s);
  splitter::write_secrets(dir.file("sealed"), s, &key);
  std::map<std::string, std::string> none, marked;
  splitter::mark_secrets_sealed(marked);
  const std::string fp = splitter::fingerprint(*p.obf);
  EXPECT_EQ(splitter::read_secrets_for_model(dir.file("plain"), "", *p.obf, "w", none).total(),
            p.changed);
  EXPECT_EQ(
      splitter::read_secrets_for_model(dir.file("sealed"), dir.file("k"), *p.obf, "w", marked)
          .total(),
      p.changed);
  EXPECT_THROW_HAS(splitter::read_secrets_for_model(dir.file("plain"), "", *p.obf, "w", marked),
                   "not sealed");
  EXPECT_THROW_HAS(
      splitter::read_secrets_for_model(dir.file("plain"), dir.file("k"), *p.obf, "w", none),
      "not sealed, but a key was given");
  // A changed original value: refused with both paths named, the model untouched.
  Secrets bad = s;
  bad.tensors[0].original[0] += 1.0f;
  splitter::write_secrets(dir.file("bad"), bad);
  std::string msg = error_of(
      [&] { splitter::read_secrets_for_model(dir.file("bad"), "", *p.obf, "obf.st", none); });
  EXPECT_NE(msg.find(dir.file("bad") + " with obf.st: restoring would give a model"),
            std::string::npos)
      << msg;
  EXPECT_EQ(splitter::fingerprint(*p.obf), fp);
}

TEST(Secrets, OriginalFingerprintIsRequired) {
  SecretsTempDir dir;
  Pair p = lenet_pair(10);
  Secrets s = splitter::diff_secrets(*p.orig, *p.obf);
  s.metadata.erase("original_fingerprint");
  EXPECT_THROW_HAS(splitter::write_secrets(dir.file("x"), s), "no original_fingerprint");
  EXPECT_FALSE(fs::exists(dir.file("x")));
  // A file written without it (as protect wrote before it was required) is refused on reading.
  Secrets full = splitter::diff_secrets(*p.orig, *p.obf);
  io::SafetensorsFile f = io::parse_safetensors(splitter::serialize_secrets(full), "f");
  f.metadata.erase("original_fingerprint");
  std::vector<std::pair<std::string, const Tensor*>> named;
  for (const auto& [n, t] : f.tensors) named.emplace_back(n, &t);
  io::write_safetensors(dir.file("old"), named, f.metadata);
  EXPECT_THROW_HAS(splitter::read_secrets(dir.file("old")),
                   "no original_fingerprint (the fingerprint of the model once restored)");
  s.metadata["original_fingerprint"] = "ABC";
  EXPECT_THROW_HAS(splitter::write_secrets(dir.file("x"), s), "not 64 lower-case hex digits");
}

TEST(Secrets, DamagedSealedMagicAndFoldersAreNamed) {
  SecretsTempDir dir;
  Pair p = lenet_pair(11);
  Secrets s = splitter::diff_secrets(*p.orig, *p.obf);
  std::vector<uint8_t> key(32, 3);
  std::string bytes = splitter::serialize_secrets(s, &key);
  for (size_t at = 0; at < 8; ++at)
    for (uint8_t mask : {uint8_t(0x01), uint8_t(0x40)}) {
      std::string b = bytes;
      b[at] = char(uint8_t(b[at]) ^ mask);
      EXPECT_THROW_HAS(splitter::parse_secrets(b, "f", &key),
                       "f: this looks like a sealed secrets file with a damaged header");
    }
  // An unsealed file never looks like one (its first bytes are a small length).
  std::string plain = splitter::serialize_secrets(s);
  EXPECT_EQ(splitter::parse_secrets(plain, "f").total(), p.changed);
  spit(dir.file("dm"), bytes.replace(0, 8, std::string("\x00\x01\x02\x03\x04\x05\x06\x07", 8)));
  EXPECT_THROW_HAS(splitter::peek_secrets(dir.file("dm")), "damaged header");
  EXPECT_THROW_HAS(splitter::read_secrets(dir.path.string()), ": is a folder, not a secrets file");
  // A device or a FIFO: refused by what it is, before it is opened (a FIFO blocked in open(),
  // /dev/zero was read until memory ran out); the same for key files.
  EXPECT_THROW_HAS(splitter::read_secrets("/dev/zero"),
                   "/dev/zero: is a character device, not a secrets file");
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THROW_HAS(splitter::read_secrets(fifo), fifo + ": is a FIFO, not a secrets file");
  EXPECT_THROW_HAS(splitter::read_key(fifo), fifo + ": key file is not a regular file");
  EXPECT_THROW_HAS(splitter::read_key("/dev/zero"), "/dev/zero: key file is not a regular file");
}

TEST(Secrets, SealedFileWithAnyFlippedByteIsRefused) {
  Pair p = lenet_pair(2);
  // A small secrets file so that every byte can be flipped.
  Secrets s = splitter::diff_secrets(*p.orig, *p.obf);
  s.tensors.resize(1);
  s.tensors[0].index.resize(5);
  s.tensors[0].original.resize(5);
  s.metadata["original_fingerprint"] = fixed_fp('b');  // any: only parsing is checked here
  std::vector<uint8_t> key(32);
  for (int i = 0; i < 32; ++i) key[size_t(i)] = uint8_t(i * 7 + 1);
  std::string bytes = splitter::serialize_secrets(s, &key);
  ASSERT_EQ(splitter::parse_secrets(bytes, "x", &key).total(), 5);
  size_t header_len = 0;
  std::memcpy(&header_len, bytes.data() + 8, 8);
  size_t nonce_at = 16 + header_len;
  int auth_failures = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t mask : {uint8_t(0x01), uint8_t(0x80)}) {
      std::string t = bytes;
      t[i] = char(uint8_t(t[i]) ^ mask);
      std::string msg = error_of([&] { splitter::parse_secrets(t, "x", &key); });
      EXPECT_NE(msg, "<no exception>") << "flipping byte " << i << " was not detected";
      if (i >= nonce_at) {
        EXPECT_NE(msg.find("authentication failed: wrong key or tampered file"), std::string::npos)
            << "byte " << i << ": " << msg;
        ++auth_failures;
      }
    }
  }
  EXPECT_GT(auth_failures, 100);
  // Truncations and extensions.
  for (size_t n : {size_t(0), size_t(7), size_t(15), nonce_at, bytes.size() - 1})
    EXPECT_NE(error_of([&] { splitter::parse_secrets(bytes.substr(0, n), "x", &key); }),
              "<no exception>")
        << n;
  EXPECT_NE(error_of([&] { splitter::parse_secrets(bytes + "x", "x", &key); }), "<no exception>");
}

TEST(Secrets, SecretsOfAnotherModelAreRefused) {
  SecretsTempDir dir;
  Pair a = lenet_pair(5);
  Pair b = lenet_pair(6);
  Secrets sa = splitter::diff_secrets(*a.orig, *a.obf);
  std::string fb = splitter::fingerprint(*b.obf);
  // Unsealed: apply refuses, naming both fingerprints; nothing changes.
  std::string before = fb;
  std::string msg = error_of([&] { splitter::apply_secrets(*b.obf, sa); });
  EXPECT_NE(msg.find("secrets belong to model " + sa.metadata.at("fingerprint")), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("this model is " + fb), std::string::npos) << msg;
  EXPECT_EQ(splitter::fingerprint(*b.obf), before);
  // Applied to the ORIGINAL model (not the obfuscated one): refused as well.
  EXPECT_THROW_HAS(splitter::apply_secrets(*a.orig, sa), "secrets belong to model");
  // Split inference refuses too.
  EXPECT_THROW_HAS(splitter::SplitInference(*b.obf, sa), "secrets belong to model");
  // Sealed: refused before decrypting (no key needed to learn that).
  std::vector<uint8_t> key(32, 9);
  std::string path = dir.file("a.sealed");
  splitter::write_secrets(path, sa, &key);
  EXPECT_THROW_HAS(splitter::read_secrets(path, nullptr, fb), "secrets belong to another model");
  EXPECT_THROW_HAS(splitter::read_secrets(path, &key, fb), "secrets belong to another model");
  std::string plain = dir.file("a.plain");
  splitter::write_secrets(plain, sa);
  EXPECT_THROW_HAS(splitter::read_secrets(plain, nullptr, fb), "secrets belong to another model");
  // A sealed file whose public fingerprint was swapped for another model's: the fingerprint is
  // the associated data, so decryption fails.
  std::string bytes = slurp(path);
  std::string fa = sa.metadata.at("fingerprint");
  size_t at = bytes.find(fa);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 64, fb);
  EXPECT_THROW_HAS(splitter::parse_secrets(bytes, "swapped", &key, fb),
                   "authentication failed: wrong key or tampered file");
}

// --------------------------------------------------------------------------------- validation
TEST(Secrets, MalformedSecretsAreRefused) {
  SecretsTempDir dir;
  Pair p = lenet_pair(7);
  Secrets good = splitter::diff_secrets(*p.orig, *p.obf);
  auto with = [&](auto edit) {
    Secrets s = good;
    edit(s);
    return s;
  };
  // In memory (write_secrets validates too).
  Secrets unsorted = with([](Secrets& s) { std::swap(s.tensors[0].index[0], s.tensors[0].index[1]); });
  EXPECT_THROW_HAS(splitter::apply_secrets(*p.obf, unsorted), "not sorted");
  EXPECT_THROW_HAS(splitter::write_secrets(dir.file("x"), unsorted), "not sorted");
  Secrets dup = with([](Secrets& s) { s.tensors[0].index[1] = s.tensors[0].index[0]; });
  EXPECT_THROW_HAS(splitter::apply_secrets(*p.obf, dup), "duplicate index");
  Secrets neg = with([](Secrets& s) { s.tensors[0].index[0] = -1; });
  EXPECT_THROW_HAS(splitter::apply_secrets(*p.obf, neg), "negative");
  Secrets oor = with([](Secrets& s) { s.tensors[0].index.back() = 1 << 30; });
  EXPECT_THROW_HAS(splitter::apply_secrets(*p.obf, oor), "out of range");
  Secrets len = with([](Secrets& s) { s.tensors[1].original.pop_back(); });
  EXPECT_THROW_HAS(splitter::apply_secrets(*p.obf, len), "lengths must match");
  EXPECT_THROW_HAS(splitter::write_secrets(dir.file("x"), len), "lengths must match");
  Secrets nokey = with([](Secrets& s) { s.tensors[0].key = "conv9.weight"; });
  EXPECT_THROW_HAS(splitter::apply_secrets(*p.obf, nokey), "does not have");
  Secrets twice = with([](Secrets& s) { s.tensors.push_back(s.tensors[0]); });
  EXPECT_THROW_HAS(splitter::apply_secrets(*p.obf, twice), "appears twice");
  Secrets nofp = with([](Secrets& s) { s.metadata.erase("fingerprint"); });
  EXPECT_THROW_HAS(splitter::write_secrets(dir.file("x"), nofp), "no fingerprint");
  Secrets nan = with([](Secrets& s) { s.tensors[0].original[0] = NAN; });
  EXPECT_THROW_HAS(splitter::apply_secrets(*p.obf, nan), "not finite");
  Secrets badorig = with([](Secrets& s) {
    s.metadata["original_fingerprint"] = fixed_fp('a');
  });
  std::string fp_before = splitter::fingerprint(*p.obf);
  EXPECT_THROW_HAS(splitter::apply_secrets(*p.obf, badorig), "nothing was changed");
  EXPECT_EQ(splitter::fingerprint(*p.obf), fp_before);
  EXPECT_FALSE(fs::exists(dir.file("x")));

  // On disk: files written behind the writer's back.
  auto write_raw = [&](const std::string& name,
                       const std::vector<std::pair<std::string, Tensor>>& ts,
                       std::map<std::string, std::string> meta) {
    std::vector<std::pair<std::string, const Tensor*>> named;
    for (const auto& [n, t] : ts) named.emplace_back(n, &t);
    io::write_safetensors(dir.file(name), named, meta);
    return dir.file(name);
  };
  auto i64 = [](std::vector<int64_t> v) {
    Tensor t({int64_t(v.size())}, DType::I64);
    std::memcpy(t.raw(), v.data(), 8 * v.size());
    return t;
  };
  auto f32 = [](std::vector<float> v) { return Tensor::from_vector(v, {int64_t(v.size())}); };
  std::map<std::string, std::string> meta{
      {"format", "nnsplitter-secrets-1"},
      {"fingerprint", good.metadata.at("fingerprint")},
      {"original_fingerprint", good.metadata.at("original_fingerprint")}};
  EXPECT_THROW_HAS(splitter::read_secrets(write_raw(
                       "u", {{"conv1.weight.index", i64({3, 2})}, {"conv1.weight.original", f32({1, 2})}}, meta)),
                   "not sorted");
  EXPECT_THROW_HAS(splitter::read_secrets(write_raw(
                       "d", {{"conv1.weight.index", i64({2, 2})}, {"conv1.weight.original", f32({1, 2})}}, meta)),
                   "duplicate index");
  EXPECT_THROW_HAS(splitter::read_secrets(write_raw(
                       "l", {{"conv1.weight.index", i64({2, 3})}, {"conv1.weight.original", f32({1})}}, meta)),
                   "lengths must match");
  EXPECT_THROW_HAS(splitter::read_secrets(write_raw("m", {{"conv1.weight.index", i64({2, 3})}}, meta)),
                   "has no matching");
  EXPECT_THROW_HAS(splitter::read_secrets(write_raw(
                       "s", {{"conv1.weight.index", i64({2})}, {"conv1.weight.original", f32({1})},
                             {"stray", f32({1})}}, meta)),
                   "unexpected tensor 'stray'");
  Tensor i32({1}, DType::I32);
  EXPECT_THROW_HAS(splitter::read_secrets(write_raw(
                       "t", {{"conv1.weight.index", i32}, {"conv1.weight.original", f32({1})}}, meta)),
                   "expected I64");
  EXPECT_THROW_HAS(splitter::read_secrets(write_raw(
                       "o", {{"conv1.weight.index", i64({1})}, {"conv1.weight.original", i64({1})}}, meta)),
                   "expected F32");
  auto meta_total = meta;
  meta_total["total"] = "7";
  EXPECT_THROW_HAS(splitter::read_secrets(write_raw(
                       "tot", {{"conv1.weight.index", i64({1})}, {"conv1.weight.original", f32({1})}},
                       meta_total)),
                   "metadata total");
  // Strict: "1junk" and " 1" are not the 1 entry the file holds (std::stoll read "1junk" as 1).
  for (const std::string v : {"1junk", " 1", "1.0", "+1x", ""}) {
    meta_total["total"] = v;
    EXPECT_THROW_HAS(splitter::read_secrets(write_raw(
                         "tot", {{"conv1.weight.index", i64({1})}, {"conv1.weight.original", f32({1})}},
                         meta_total)),
                     "metadata total = '" + v + "' but the file holds 1 secret entries");
  }
  meta_total["total"] = "1";
  EXPECT_EQ(splitter::read_secrets(write_raw(
                "tot", {{"conv1.weight.index", i64({1})}, {"conv1.weight.original", f32({1})}},
                meta_total)).total(),
            1);
  auto meta_nofmt = meta;
  meta_nofmt.erase("format");
  EXPECT_THROW_HAS(splitter::read_secrets(write_raw(
                       "nf", {{"conv1.weight.index", i64({1})}, {"conv1.weight.original", f32({1})}},
                       meta_nofmt)),
                   "not a secrets file");
  // A weights file is not a secrets file.
  io::save_model(*p.orig, dir.file("w.safetensors"));
  EXPECT_THROW_HAS(splitter::read_secrets(dir.file("w.safetensors")), "weights file");
  // A valid one made the same way is accepted.
  EXPECT_EQ(splitter::read_secrets(write_raw(
                "ok", {{"conv1.weight.index", i64({1, 5})}, {"conv1.weight.original", f32({1, 2})}},
                meta)).total(),
            2);
}

// --------------------------------------------------------------------------- split inference
namespace {

Tensor random_batch(const models::ModelSpec& s, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(size_t(n) * s.in_channels * s.input_size * s.input_size);
  for (auto& x : v) x = nd(rng);
  return Tensor::from_vector(v, {n, s.in_channels, s.input_size, s.input_size});
}

std::vector<float> logits(models::Model& m, const Tensor& x) {
  m.set_training(false);
  return m.forward(x.device() == m.device() ? x : x.to(m.device())).to_vector();
}

std::vector<int> argmax_rows(const std::vector<float>& l, int k) {
  std::vector<int> out;
  for (size_t i = 0; i < l.size() / size_t(k); ++i)
    out.push_back(int(std::max_element(l.begin() + long(i * k), l.begin() + long((i + 1) * k)) -
                      (l.begin() + long(i * k))));
  return out;
}

// Split logits vs original logits: |diff| <= 1e-4 * max(1, max |original logit| of the row).
void expect_split_matches(models::Model& orig, models::Model& obf, const Secrets& s, int n,
                          uint64_t seed) {
  Tensor x = random_batch(orig.spec(), n, seed);
  int k = orig.spec().num_classes;
  auto lo = logits(orig, x);
  auto lobf = logits(obf, x);
  splitter::SplitInference split(obf, s);
  EXPECT_GT(split.secure_macs_per_image(), 0);
  split.install();
  split.install();  // idempotent
  auto ls = logits(obf, x);
  double max_obf_diff = 0;
  for (size_t i = 0; i < lo.size(); ++i) {
    size_t row = i / size_t(k);
    float scale = 1;
    for (int j = 0; j < k; ++j) scale = std::max(scale, std::fabs(lo[row * size_t(k) + size_t(j)]));
    EXPECT_LE(std::fabs(ls[i] - lo[i]), 1e-4f * scale) << "logit " << i;
    max_obf_diff = std::max(max_obf_diff, double(std::fabs(lobf[i] - lo[i])));
  }
  EXPECT_GT(max_obf_diff, 1e-3) << "the perturbation did not change the logits: weak test";
  EXPECT_EQ(argmax_rows(ls, k), argmax_rows(lo, k));
  // Twice in a row (cached index maps) and with another batch size.
  EXPECT_EQ(logits(obf, x), ls);
  Tensor x2 = random_batch(orig.spec(), 3, seed + 1);
  auto lo2 = logits(orig, x2);
  auto ls2 = logits(obf, x2);
  for (size_t i = 0; i < lo2.size(); ++i) EXPECT_NEAR(ls2[i], lo2[i], 1e-4 * std::max(1.0f, std::fabs(lo2[i])));
  split.remove();
  EXPECT_EQ(logits(obf, x), lobf);
}

}  // namespace

TEST(SplitInference, LeNetConvAndLinearWeightsAndBias) {
  auto orig = models::build_model(lenet_spec(), 21);
  auto obf = clone(*orig);
  perturb(*obf, {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"}, 40, 5,
          0.8f);
  perturb(*obf, {"conv2.bias", "fc3.bias"}, 2, 6, 0.8f);
  Secrets s = splitter::diff_secrets(*orig, *obf);
  expect_split_matches(*orig, *obf, s, 8, 1);
  // Layers and MACs: conv1 (1 input channel, 5x5, 28x28 output) -> 25 * 784 per filter.
  splitter::SplitInference split(*obf, s);
  auto layers = split.layers();
  ASSERT_EQ(layers.size(), 5u);
  EXPECT_EQ(layers[0].module, "conv1");
  EXPECT_EQ(layers[0].kind, "conv");
  EXPECT_EQ(layers[0].secure_macs_per_image, int64_t(layers[0].filters.size()) * 25 * 28 * 28);
  EXPECT_EQ(layers[4].module, "fc3");
  EXPECT_EQ(layers[4].kind, "linear");
  EXPECT_EQ(layers[4].secure_macs_per_image, int64_t(layers[4].filters.size()) * 84);
  int64_t sum = 0;
  for (const auto& l : layers) sum += l.secure_macs_per_image;
  EXPECT_EQ(split.secure_macs_per_image(), sum);
}

TEST(SplitInference, ResNet20ConvAndLinear) {
  auto orig = models::build_model(small_spec("resnet20"), 22);
  auto obf = clone(*orig);
  perturb(*obf, {"conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv2.weight",
                 "layer3.2.conv2.weight", "fc.weight"},
          50, 8, 0.6f);
  Secrets s = splitter::diff_secrets(*orig, *obf);
  expect_split_matches(*orig, *obf, s, 4, 2);
}

TEST(SplitInference, GroupedAndDepthwiseConvolutions) {
  auto orig = models::build_model(small_spec("mobilenet_v2"), 23);
  std::vector<std::string> keys;
  for (auto& [name, m] : orig->modules())
    if (auto* c = dynamic_cast<nn::Conv2d*>(m); c && c->groups > 1 && keys.size() < 3)
      keys.push_back(name + ".weight");
  ASSERT_EQ(keys.size(), 3u);
  keys.push_back("classifier.1.weight");
  auto obf = clone(*orig);
  perturb(*obf, keys, 12, 9, 1.5f);
  Secrets s = splitter::diff_secrets(*orig, *obf);
  expect_split_matches(*orig, *obf, s, 3, 3);
}

TEST(SplitInference, SecretsOnOtherTensorsAreRefused) {
  auto orig = models::build_model(small_spec("resnet20"), 24);
  auto obf = clone(*orig);
  perturb(*obf, {"conv1.weight", "bn1.weight"}, 4, 10);
  Secrets s = splitter::diff_secrets(*orig, *obf);
  EXPECT_THROW_HAS(splitter::SplitInference(*obf, s), "cannot be corrected on the secure side");
  // The exact restore handles them.
  splitter::apply_secrets(*obf, s);
  expect_bit_identical(*orig, *obf);
}

TEST(SplitInference, ChainsWithAnExistingHook) {
  auto orig = models::build_model(lenet_spec(), 25);
  auto obf = clone(*orig);
  perturb(*obf, {"fc1.weight"}, 30, 11);
  Secrets s = splitter::diff_secrets(*orig, *obf);
  auto* fc1 = dynamic_cast<nn::Linear*>(obf->module_for("fc1.weight"));
  ASSERT_NE(fc1, nullptr);
  int calls = 0;
  fc1->post_forward = [&](const Tensor&, Tensor&) { ++calls; };
  {
    splitter::SplitInference split(*obf, s);
    split.install();
    Tensor x = random_batch(obf->spec(), 2, 4);
    auto lo = logits(*orig, x);
    auto ls = logits(*obf, x);
    for (size_t i = 0; i < lo.size(); ++i) EXPECT_NEAR(ls[i], lo[i], 1e-4);
    EXPECT_GE(calls, 1);
  }  // destructor removes the hook, restoring the previous one
  ASSERT_TRUE(bool(fc1->post_forward));
  int before = calls;
  logits(*obf, random_batch(obf->spec(), 1, 5));
  EXPECT_EQ(calls, before + 1);
}

TEST(SplitInference, OnCudaLikeOnCpuAndExactRestore) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: " << cuda_unavailable_reason();
  for (const char* arch : {"lenet5", "mobilenet_v2"}) {
    SCOPED_TRACE(arch);
    auto spec = std::string(arch) == "lenet5" ? lenet_spec() : small_spec(arch);
    auto orig = models::build_model(spec, 26);
    std::vector<std::string> keys;
    for (auto& [name, m] : orig->modules())
      if (auto* c = dynamic_cast<nn::Conv2d*>(m); c && keys.size() < 4) keys.push_back(name + ".weight");
    keys.push_back(spec.arch == "lenet5" ? "fc3.weight" : "classifier.1.weight");
    auto obf = clone(*orig);
    perturb(*obf, keys, 20, 15, 1.0f);
    Secrets s = splitter::diff_secrets(*orig, *obf);
    std::string fp_cpu = splitter::fingerprint(*obf);
    orig->to(Device::CUDA);
    obf->to(Device::CUDA);
    EXPECT_EQ(splitter::fingerprint(*obf), fp_cpu);
    expect_split_matches(*orig, *obf, s, 4, 7);
    splitter::apply_secrets(*obf, s);
    EXPECT_EQ(obf->device(), Device::CUDA);
    expect_bit_identical(*orig, *obf);
  }
}

// ------------------------------------------------------------------------------------- tools
TEST(Secrets, PythonApplySecretsRestoresBitExactly) {
  const std::string py = "/usr/bin/python3";
  if (!fs::exists(py) || run_cmd(py + " -c 'import numpy'").code != 0)
    GTEST_SKIP() << "no /usr/bin/python3 with numpy";
  SecretsTempDir dir;
  auto orig = models::build_model(small_spec("resnet20"), 31);
  auto obf = clone(*orig);
  perturb(*obf, {"conv1.weight", "layer2.1.conv1.weight", "fc.weight"}, 70, 12);
  Secrets s = splitter::diff_secrets(*orig, *obf);
  io::save_model(*obf, dir.file("obf.safetensors"));
  splitter::write_secrets(dir.file("sec.safetensors"), s);
  std::string tool = std::string(NNS_SOURCE_DIR) + "/tools/apply_secrets.py";
  auto r = run_cmd(py + " " + q(tool) + " " + q(dir.file("obf.safetensors")) + " " +
                   q(dir.file("sec.safetensors")) + " " + q(dir.file("out.safetensors")) +
                   " --verify-fingerprint");
  ASSERT_EQ(r.code, 0) << r.output;
  auto restored = io::load_model(dir.file("out.safetensors"));
  expect_bit_identical(*orig, *restored);
  EXPECT_EQ(splitter::fingerprint(*restored), s.metadata.at("original_fingerprint"));
  // A sealed file is refused with a pointer to the CLI.
  std::vector<uint8_t> key(32, 1);
  splitter::write_secrets(dir.file("sealed"), s, &key);
  r = run_cmd(py + " " + q(tool) + " " + q(dir.file("obf.safetensors")) + " " +
              q(dir.file("sealed")) + " " + q(dir.file("out2.safetensors")));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("sealed: use nnsplitter restore --key"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir.file("out2.safetensors")));
}

// ---------------------------------------------------------------------------------------- CLI
TEST(SecretsCli, RestoreWritesNothingOnFailure) {
  if (!has_command("restore")) GTEST_SKIP() << binary() << " has no 'restore' command";
  SecretsTempDir dir;
  auto orig = models::build_model(lenet_spec(), 41);
  auto obf = clone(*orig);
  perturb(*obf, {"conv2.weight", "fc2.weight"}, 90, 13);
  Secrets s = splitter::diff_secrets(*orig, *obf);
  std::string w = dir.file("obf.safetensors"), sec = dir.file("sec.sealed"),
              out = dir.file("out.safetensors");
  io::save_model(*obf, w, {{"dataset", "synthetic"}});
  const std::string bin = q(binary());
  auto kg = run_cmd(bin + " keygen --out " + q(dir.file("k")));
  ASSERT_EQ(kg.code, 0) << kg.output;
  auto kg2 = run_cmd(bin + " keygen --out " + q(dir.file("k")));
  EXPECT_EQ(kg2.code, 1) << kg2.output;
  EXPECT_NE(kg2.output.find("refusing to overwrite"), std::string::npos) << kg2.output;
  ASSERT_EQ(run_cmd(bin + " keygen --out " + q(dir.file("k2"))).code, 0);
  auto key = splitter::read_key(dir.file("k"));
  splitter::write_secrets(sec, s, &key);
  std::string restore = bin + " restore --weights " + q(w) + " --secrets " + q(sec) + " --out " + q(out);

  auto r = run_cmd(restore);  // sealed, no key
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("pass --key"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  r = run_cmd(restore + " --key " + q(dir.file("k2")));  // wrong key
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("authentication failed"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  std::string bytes = slurp(sec);  // tampered
  bytes[bytes.size() - 40] ^= 0x10;
  spit(dir.file("tampered"), bytes);
  r = run_cmd(bin + " restore --weights " + q(w) + " --secrets " + q(dir.file("tampered")) +
              " --key " + q(dir.file("k")) + " --out " + q(out));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("authentication failed"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  io::save_model(*orig, dir.file("orig.safetensors"));  // another model
  r = run_cmd(bin + " restore --weights " + q(dir.file("orig.safetensors")) + " --secrets " +
              q(sec) + " --key " + q(dir.file("k")) + " --out " + q(out));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("secrets belong to another model"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
  r = run_cmd(restore + " --key " + q(dir.file("missing-key")));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_FALSE(fs::exists(out));
  r = run_cmd(bin + " restore --weights " + q(w) + " --secrets " + q(sec));  // no --out
  EXPECT_EQ(r.code, 2) << r.output;

  r = run_cmd(restore + " --key " + q(dir.file("k")) + " --json");
  ASSERT_EQ(r.code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  EXPECT_EQ(j["restored_weights"].get<int64_t>(), s.total());
  EXPECT_EQ(j["out"].get<std::string>(), out);
  EXPECT_EQ(j["fingerprint"].get<std::string>(), s.metadata.at("original_fingerprint"));
  std::map<std::string, std::string> meta;
  auto restored = io::load_model(out, &meta);
  expect_bit_identical(*orig, *restored);
  EXPECT_EQ(meta.at("dataset"), "synthetic");
  EXPECT_EQ(meta.at("restored_from"), s.metadata.at("fingerprint"));
}

TEST(SecretsCli, InferSplitAgreesWithRestored) {
  if (!has_command("infer")) GTEST_SKIP() << binary() << " has no 'infer' command";
  SecretsTempDir dir;
  auto orig = models::build_model(lenet_spec(), 42);
  auto obf = clone(*orig);
  perturb(*obf, {"conv1.weight", "conv2.weight", "fc1.weight", "fc3.weight"}, 60, 14, 1.0f);
  Secrets s = splitter::diff_secrets(*orig, *obf);
  io::save_model(*obf, dir.file("obf.safetensors"));
  splitter::write_secrets(dir.file("sec"), s);
  auto r = run_cmd(q(binary()) + " infer --weights " + q(dir.file("obf.safetensors")) +
                   " --secrets " + q(dir.file("sec")) + " --dataset synthetic --batch 64 --json");
  ASSERT_EQ(r.code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
  for (const char* k : {"obfuscated_accuracy", "split_accuracy", "restored_accuracy", "agreement",
                        "max_logit_diff", "secure_macs_per_image"})
    EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_GE(j["agreement"].get<double>(), 0.999);
  EXPECT_EQ(j["split_accuracy"].get<double>(), j["restored_accuracy"].get<double>());
  EXPECT_LT(j["max_logit_diff"].get<double>(), 1e-3);
  EXPECT_GT(j["secure_macs_per_image"].get<int64_t>(), 0);
}
