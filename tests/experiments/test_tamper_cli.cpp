// The nnsplitter binary against tampered secrets (issue 8): every kind of tampering, sealed and
// unsealed, the downgrade included, is refused by `restore` and `infer` with exit 1, and nothing
// is written (a missing --out stays missing, an existing one keeps its bytes). Also: no command
// writes over one of its inputs, plain state_dicts with --arch, and the messages for a folder
// given as --config or --secrets and for a sealed file with a damaged magic.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "cli_runner.h"
#include "core/io/model_io.h"
#include "core/io/safetensors.h"
#include "core/models/zoo.h"
#include "core/splitter/secrets.h"

namespace fs = std::filesystem;
using namespace nns;
using splitter::Secrets;
using splitter::SecretTensor;

namespace {

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

models::ModelSpec lenet_spec() {
  models::ModelSpec s;
  s.arch = "lenet5";
  s.in_channels = 1;
  s.input_size = 28;
  s.num_classes = 10;
  return s;
}

// Changes `n` entries of each listed tensor (every 7th element, sign flipped and pushed away).
void obfuscate(models::Model& m, const std::vector<std::string>& keys, int n) {
  for (auto& e : m.state()) {
    if (std::find(keys.begin(), keys.end(), e.key) == keys.end()) continue;
    std::vector<float> v = e.tensor->to_vector();
    for (int i = 0; i < n; ++i) {
      float& x = v[size_t(i) * 7 % v.size()];
      x = x >= 0 ? -0.75f : 0.75f;
    }
    e.tensor->copy_from(Tensor::from_vector(v, e.tensor->shape()));
  }
}

// Unsealed secrets bytes exactly as given: tensors <key>.index/<key>.original and `meta` (no
// recomputed total or counts unless fix_counts), written behind write_secrets' back.
std::string raw_secrets(const std::vector<SecretTensor>& ts, std::map<std::string, std::string> meta,
                        bool fix_counts) {
  std::vector<Tensor> store;
  store.reserve(2 * ts.size());
  std::vector<std::pair<std::string, const Tensor*>> named;
  nlohmann::json counts = nlohmann::json::object();
  int64_t total = 0;
  for (const auto& t : ts) {
    int64_t n = int64_t(t.index.size());
    Tensor idx({n}, DType::I64);
    if (n) std::memcpy(idx.raw(), t.index.data(), size_t(n) * 8);
    store.push_back(std::move(idx));
    named.emplace_back(t.key + ".index", &store.back());
    store.push_back(Tensor::from_vector(t.original, {int64_t(t.original.size())}));
    named.emplace_back(t.key + ".original", &store.back());
    if (n) counts[t.key] = n;
    total += n;
  }
  if (fix_counts) {
    meta["total"] = std::to_string(total);
    meta["counts"] = counts.dump();
  }
  return io::serialize_safetensors(named, meta, "test");
}

// The fixture: a LeNet-5, its obfuscated copy saved twice (once marked as having sealed
// secrets), its secrets unsealed and sealed, two keys, and a second, unrelated pair.
struct Fixture {
  fs::path dir;
  std::unique_ptr<models::Model> orig, obf, other_orig, other_obf;
  Secrets secrets, other;
  fs::path weights, weights_sealed, plain, sealed, key, wrong_key;

  Fixture() {
    dir = test::fresh_temp_dir("nns_tamper", "fixture");
    orig = models::build_model(lenet_spec(), 5);
    obf = models::clone_model(*orig);
    obfuscate(*obf, {"conv2.weight", "fc1.weight", "fc3.weight"}, 40);
    secrets = splitter::diff_secrets(*orig, *obf);
    other_orig = models::build_model(lenet_spec(), 6);
    other_obf = models::clone_model(*other_orig);
    obfuscate(*other_obf, {"conv2.weight"}, 20);
    other = splitter::diff_secrets(*other_orig, *other_obf);

    weights = dir / "obf.safetensors";
    io::save_model(*obf, weights.string(), {{"dataset", "synthetic"}});
    std::map<std::string, std::string> marked{{"dataset", "synthetic"}};
    splitter::mark_secrets_sealed(marked);
    weights_sealed = dir / "obf-sealed.safetensors";
    io::save_model(*obf, weights_sealed.string(), marked);

    key = dir / "k.key";
    wrong_key = dir / "wrong.key";
    splitter::write_new_key(key.string());
    splitter::write_new_key(wrong_key.string());
    auto k = splitter::read_key(key.string());
    plain = dir / "plain.secrets";
    sealed = dir / "sealed.secrets";
    splitter::write_secrets(plain.string(), secrets);
    splitter::write_secrets(sealed.string(), secrets, &k);
  }
  ~Fixture() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string restore(const fs::path& w, const fs::path& s, const fs::path& out,
                      const fs::path& k) const {
    return "restore --weights " + q(w) + " --secrets " + q(s) + " --out " + q(out) +
           (k.empty() ? "" : " --key " + q(k));
  }
};

// One tampering: the secrets bytes to try, the weights they go with, the key passed (if any) and
// a piece of the expected message.
struct Tamper {
  std::string name;
  bool sealed_model;  // weights file marked as having sealed secrets
  std::string bytes;
  bool with_key;
  const fs::path* key_path;  // nullptr: the right key
  std::string needle;
};

// The flat index of entry j in `t` with its lowest bit flipped, when it stays between its
// neighbours (so that the file stays well-formed and only the fingerprint can tell).
int find_flippable(const SecretTensor& t) {
  for (size_t j = 1; j + 1 < t.index.size(); ++j) {
    int64_t f = t.index[j] ^ 1;
    if (f > t.index[j - 1] && f < t.index[j + 1]) return int(j);
  }
  return -1;
}

std::vector<Tamper> tamperings(const Fixture& fx) {
  const Secrets& s = fx.secrets;
  const std::string plain = slurp(fx.plain), sealed = slurp(fx.sealed);
  auto meta = s.metadata;
  std::vector<Tamper> out;
  auto unsealed = [&](const std::string& name, std::function<void(std::vector<SecretTensor>&,
                                                                  std::map<std::string, std::string>&)>
                                                   edit,
                      const std::string& needle, bool fix_counts = true) {
    auto ts = s.tensors;
    auto m = meta;
    edit(ts, m);
    out.push_back({name, false, raw_secrets(ts, m, fix_counts), false, nullptr, needle});
  };
  const std::string wrong_restore = "restoring would give a model with fingerprint";

  unsealed("unsealed: flipped index bit", [](auto& ts, auto&) {
    int j = find_flippable(ts[0]);
    ASSERT_GE(j, 0);
    ts[0].index[size_t(j)] ^= 1;
  }, wrong_restore);
  unsealed("unsealed: changed original value",
           [](auto& ts, auto&) { ts[1].original[3] += 0.5f; }, wrong_restore);
  unsealed("unsealed: entries removed, counts fixed", [](auto& ts, auto&) {
    ts[0].index.resize(ts[0].index.size() - 5);
    ts[0].original.resize(ts[0].original.size() - 5);
  }, wrong_restore);
  unsealed("unsealed: all entries removed, counts fixed", [](auto& ts, auto&) { ts.clear(); },
           wrong_restore);
  unsealed("unsealed: a whole tensor removed", [](auto& ts, auto&) { ts.pop_back(); },
           wrong_restore);
  unsealed("unsealed: index out of range", [&](auto& ts, auto&) {
    ts[2].index.back() = 1 << 20;
  }, "out of range");
  unsealed("unsealed: negative index", [](auto& ts, auto&) { ts[0].index[0] = -3; }, "negative");
  unsealed("unsealed: duplicate index",
           [](auto& ts, auto&) { ts[0].index[2] = ts[0].index[1]; }, "duplicate index");
  unsealed("unsealed: unsorted indexes",
           [](auto& ts, auto&) { std::swap(ts[0].index[1], ts[0].index[2]); }, "not sorted");
  unsealed("unsealed: swapped keys",
           [](auto& ts, auto&) { std::swap(ts[0].key, ts[1].key); }, wrong_restore);
  unsealed("unsealed: NaN original",
           [](auto& ts, auto&) { ts[0].original[0] = std::nanf(""); }, "not finite");
  unsealed("unsealed: fingerprint edited",
           [](auto&, auto& m) { m["fingerprint"] = std::string(64, 'a'); },
           "secrets belong to another model");
  unsealed("unsealed: original_fingerprint edited",
           [](auto&, auto& m) { m["original_fingerprint"] = std::string(64, 'b'); }, wrong_restore);
  unsealed("unsealed: original_fingerprint removed (as protect wrote before)",
           [](auto&, auto& m) { m.erase("original_fingerprint"); }, "no original_fingerprint");
  unsealed("unsealed: metadata counts edited", [](auto& ts, auto& m) {
    nlohmann::json c = nlohmann::json::parse(m.at("counts"));
    c[ts[0].key] = c[ts[0].key].template get<int64_t>() + 1;
    m["counts"] = c.dump();
  }, "disagree", false);
  unsealed("unsealed: metadata total edited", [](auto& ts, auto& m) {
    int64_t n = 0;
    for (auto& t : ts) n += int64_t(t.index.size());
    m["total"] = std::to_string(n - 1);
  }, "metadata total", false);
  unsealed("unsealed: format edited", [](auto&, auto& m) { m["format"] = "nnsplitter-secrets-9"; },
           "not a secrets file");
  {
    // Secrets of another model, intact.
    out.push_back({"unsealed: secrets of another model", false,
                   raw_secrets(fx.other.tensors, fx.other.metadata, true), false, nullptr,
                   "secrets belong to another model"});
  }
  out.push_back({"unsealed: truncated file", false, plain.substr(0, plain.size() / 2), false,
                 nullptr, "the file is truncated"});

  // The downgrade: a forged unsealed file whose fake originals come with a CONSISTENT
  // original_fingerprint (what anyone can compute), passed where sealed secrets are expected.
  std::string forged;
  {
    auto ts = s.tensors;
    for (auto& t : ts)
      for (auto& v : t.original) v = 0.0f;
    auto m = meta;
    auto fake = models::clone_model(*fx.obf);
    Secrets f;
    f.tensors = ts;
    f.metadata = m;
    f.metadata["original_fingerprint"] = std::string(64, '0');
    splitter::check_secrets_for_model(*fake, f);
    for (auto& e : fake->state())
      for (const auto& t : ts)
        if (t.key == e.key) {
          std::vector<float> v = e.tensor->to_vector();
          for (size_t j = 0; j < t.index.size(); ++j) v[size_t(t.index[j])] = t.original[j];
          e.tensor->copy_from(Tensor::from_vector(v, e.tensor->shape()));
        }
    m["original_fingerprint"] = splitter::fingerprint(*fake);
    forged = raw_secrets(ts, m, true);
  }
  out.push_back({"downgrade: forged unsealed file + --key", true, forged, true, nullptr,
                 "not sealed, but a key was given"});
  out.push_back({"downgrade: forged unsealed file, sealed model, no key", true, forged, false,
                 nullptr, "not sealed, but the obfuscated model's metadata"});
  out.push_back({"downgrade: the genuine unsealed file + --key", true, plain, true, nullptr,
                 "not sealed, but a key was given"});

  // Sealed files: byte-level damage (the content cannot be edited without the key).
  uint64_t hlen = 0;
  std::memcpy(&hlen, sealed.data() + 8, 8);
  const size_t nonce_at = 16 + size_t(hlen);
  auto flip = [&](size_t at, uint8_t mask) {
    std::string b = sealed;
    b[at] = char(uint8_t(b[at]) ^ mask);
    return b;
  };
  out.push_back({"sealed: wrong key", true, sealed, true, &fx.wrong_key, "authentication failed"});
  out.push_back({"sealed: no key", true, sealed, false, nullptr, "pass --key"});
  out.push_back({"sealed: magic damaged", true, flip(6, 0x04), true, nullptr,
                 "looks like a sealed secrets file with a damaged header"});
  out.push_back({"sealed: header length edited", true, flip(8, 0x01), true, nullptr,
                 "sealed secrets header"});
  {
    std::string b = sealed;
    size_t at = b.find("\"format\"");
    b.replace(at, 8, "\"formax\"");
    out.push_back({"sealed: header JSON edited", true, b, true, nullptr, "sealed secrets header"});
  }
  {
    std::string b = sealed;
    size_t at = b.find(s.metadata.at("fingerprint"));
    b[at] = b[at] == 'a' ? 'b' : 'a';
    out.push_back({"sealed: public fingerprint edited", true, b, true, nullptr,
                   "secrets belong to another model"});
  }
  out.push_back({"sealed: nonce flipped", true, flip(nonce_at + 3, 0x01), true, nullptr,
                 "authentication failed"});
  out.push_back({"sealed: ciphertext flipped", true, flip(nonce_at + 24 + 40, 0x80), true, nullptr,
                 "authentication failed"});
  out.push_back({"sealed: tag flipped", true, flip(sealed.size() - 1, 0x01), true, nullptr,
                 "authentication failed"});
  out.push_back({"sealed: truncated", true, sealed.substr(0, sealed.size() - 100), true, nullptr,
                 "authentication failed"});
  out.push_back({"sealed: a byte appended", true, sealed + "x", true, nullptr,
                 "authentication failed"});
  return out;
}

class TamperCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { fx_ = new Fixture(); }
  static void TearDownTestSuite() {
    delete fx_;
    fx_ = nullptr;
  }
  static Fixture* fx_;
};
Fixture* TamperCli::fx_ = nullptr;

// The untampered files restore (so that the refusals below are about the tampering).
TEST_F(TamperCli, IntactSecretsRestoreBitExactly) {
  const Fixture& fx = *fx_;
  fs::path out = fx.dir / "intact-plain.safetensors";
  auto r = test::run_cli(fx.restore(fx.weights, fx.plain, out, {}));
  ASSERT_EQ(r.code, 0) << r.out;
  auto restored = io::load_model(out.string());
  EXPECT_EQ(splitter::fingerprint(*restored), splitter::fingerprint(*fx.orig));
  out = fx.dir / "intact-sealed.safetensors";
  r = test::run_cli(fx.restore(fx.weights_sealed, fx.sealed, out, fx.key));
  ASSERT_EQ(r.code, 0) << r.out;
  restored = io::load_model(out.string());
  EXPECT_EQ(splitter::fingerprint(*restored), splitter::fingerprint(*fx.orig));
}

// Every tampering: restore refuses with exit 1 and a message naming the problem; a missing --out
// is not created and an existing one keeps its bytes; infer refuses before reporting anything.
TEST_F(TamperCli, EveryTamperingIsRefusedAndNothingIsWritten) {
  const Fixture& fx = *fx_;
  auto cases = tamperings(fx);
  ASSERT_GE(cases.size(), 30u);
  const std::string sentinel = "an existing file that must survive\n";
  int i = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    fs::path sec = fx.dir / ("case" + std::to_string(i++) + ".secrets");
    spit(sec, c.bytes);
    fs::path w = c.sealed_model ? fx.weights_sealed : fx.weights;
    fs::path k = c.with_key ? (c.key_path ? *c.key_path : fx.key) : fs::path();
    fs::path out = fx.dir / "out.safetensors";
    fs::remove(out);
    auto r = test::run_cli(fx.restore(w, sec, out, k));
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_TRUE(contains(r.out, c.needle)) << "expected '" << c.needle << "' in: " << r.out;
    EXPECT_FALSE(fs::exists(out));
    spit(out, sentinel);
    r = test::run_cli(fx.restore(w, sec, out, k));
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_EQ(slurp(out), sentinel);
    // No stray temporary file next to --out either.
    for (const auto& e : fs::directory_iterator(fx.dir))
      EXPECT_FALSE(contains(e.path().filename().string(), ".tmp-")) << e.path();

    std::string infer = "infer --weights " + q(w) + " --secrets " + q(sec) +
                        " --dataset synthetic --batch 256 --json" +
                        (k.empty() ? "" : " --key " + q(k));
    auto ri = test::run_cli(infer, false);
    EXPECT_EQ(ri.code, 1) << ri.out;
    EXPECT_FALSE(contains(ri.out, "agreement")) << ri.out;
  }
}

// tools/apply_secrets.py refuses the unsealed tamperings too (it verifies both fingerprints).
TEST_F(TamperCli, PythonApplySecretsRefusesUnsealedTamperings) {
  const std::string py = "/usr/bin/python3";
  if (!fs::exists(py) || std::system((py + " -c 'import numpy' 2>/dev/null").c_str()) != 0)
    GTEST_SKIP() << "no /usr/bin/python3 with numpy";
  const Fixture& fx = *fx_;
  const std::string tool = std::string(NNS_SOURCE_DIR) + "/tools/apply_secrets.py";
  int n = 0;
  for (const auto& c : tamperings(fx)) {
    if (c.with_key || c.sealed_model) continue;
    SCOPED_TRACE(c.name);
    fs::path sec = fx.dir / "py.secrets", out = fx.dir / "py-out.safetensors";
    spit(sec, c.bytes);
    fs::remove(out);
    FILE* p = ::popen((py + " " + q(tool) + " " + q(fx.weights) + " " + q(sec) + " " + q(out) +
                       " 2>&1").c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string text;
    char buf[4096];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, got);
    int st = ::pclose(p);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 1) << text;
    EXPECT_FALSE(fs::exists(out)) << text;
    ++n;
  }
  EXPECT_GE(n, 15);
}

// --------------------------------------------------------------------- outputs over inputs
TEST_F(TamperCli, NoCommandWritesOverItsInputs) {
  const Fixture& fx = *fx_;
  const std::string w_before = slurp(fx.weights), s_before = slurp(fx.plain);
  // restore --out X --weights X, in several spellings of the same file.
  fs::path link = fx.dir / "link.safetensors";
  fs::create_symlink(fx.weights, link);
  for (const std::string& out :
       {fx.weights.string(), (fx.dir / "." / "obf.safetensors").string(),
        (fx.dir / "sub" / ".." / "obf.safetensors").string(), link.string()}) {
    SCOPED_TRACE(out);
    auto r = test::run_cli(fx.restore(fx.weights, fx.plain, out, {}));
    EXPECT_EQ(r.code, 2) << r.out;
    EXPECT_TRUE(contains(r.out, "--out")) << r.out;
    EXPECT_TRUE(contains(r.out, "--weights")) << r.out;
  }
  auto r = test::run_cli(fx.restore(fx.weights, fx.plain, fx.plain, {}));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--secrets")) << r.out;
  r = test::run_cli(fx.restore(fx.weights_sealed, fx.sealed, fx.key, fx.key));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--key")) << r.out;
  EXPECT_EQ(slurp(fx.weights), w_before);
  EXPECT_EQ(slurp(fx.plain), s_before);

  // protect --out DIR whose outputs include --weights (a resume over its own result).
  fs::path pdir = fx.dir / "prot";
  fs::create_directories(pdir);
  fs::copy_file(fx.weights, pdir / "obfuscated.safetensors");
  r = test::run_cli("protect --weights " + q(pdir / "obfuscated.safetensors") +
                    " --dataset synthetic --out " + q(pdir) + " --resume");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--out")) << r.out;
  EXPECT_TRUE(contains(r.out, "--weights")) << r.out;
  EXPECT_EQ(slurp(pdir / "obfuscated.safetensors"), w_before);

  // run --out CONFIG.
  fs::path cfg = fx.dir / "exp.yaml";
  spit(cfg, "name: x\n");
  const std::string cfg_before = slurp(cfg);
  r = test::run_cli("run " + q(cfg) + " --out " + q(cfg));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--out")) << r.out;
  EXPECT_EQ(slurp(cfg), cfg_before);
}

// ------------------------------------------------------------------------------- messages
TEST_F(TamperCli, FoldersAndDamagedMagicAreNamed) {
  const Fixture& fx = *fx_;
  fs::path folder = fx.dir / "a-folder";
  fs::create_directories(folder);
  auto r = test::run_cli("protect --weights " + q(fx.weights) + " --dataset synthetic --out " +
                         q(fx.dir / "p2") + " --config " + q(folder) + " --print-config");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, folder.string() + ": is a folder")) << r.out;
  r = test::run_cli(fx.restore(fx.weights, folder, fx.dir / "o.safetensors", {}));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, folder.string() + ": is a folder, not a secrets file")) << r.out;
  EXPECT_FALSE(contains(r.out, "underflow")) << r.out;
  // Magic damaged in each of its bytes: named as a damaged sealed file, not a header length.
  const std::string sealed = slurp(fx.sealed);
  for (size_t at = 0; at < 8; ++at) {
    std::string b = sealed;
    b[at] = char(b[at] ^ 0x20);
    spit(fx.dir / "dm.secrets", b);
    r = test::run_cli(fx.restore(fx.weights_sealed, fx.dir / "dm.secrets",
                                 fx.dir / "o.safetensors", fx.key));
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_TRUE(contains(r.out, "looks like a sealed secrets file with a damaged header")) << r.out;
  }
  // The whole magic replaced: the public header after it still gives it away.
  std::string b = sealed;
  b.replace(0, 8, "XXXXXXXX");
  spit(fx.dir / "dm.secrets", b);
  r = test::run_cli(fx.restore(fx.weights_sealed, fx.dir / "dm.secrets",
                               fx.dir / "o.safetensors", fx.key));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "looks like a sealed secrets file with a damaged header")) << r.out;
  EXPECT_FALSE(fs::exists(fx.dir / "o.safetensors"));
}

// ----------------------------------------------------------------- weights from anywhere
TEST_F(TamperCli, PlainStateDictWithArch) {
  const Fixture& fx = *fx_;
  // A state_dict without any metadata, as safetensors.torch.save_file writes it.
  std::vector<std::pair<std::string, const Tensor*>> named;
  for (auto& e : fx.orig->state()) named.emplace_back(e.key, e.tensor);
  fs::path plain = fx.dir / "plain.safetensors";
  io::write_safetensors(plain.string(), named, {});
  ASSERT_TRUE(io::read_safetensors(plain.string()).metadata.empty());
  fs::path ours = fx.dir / "ours.safetensors";
  io::save_model(*fx.orig, ours.string());

  auto r = test::run_cli("eval --weights " + q(plain) + " --dataset synthetic --json");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "metadata lacks 'arch'")) << r.out;

  r = test::run_cli("eval --weights " + q(plain) + " --arch lenet5 --dataset synthetic --json",
                    false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto a = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  r = test::run_cli("eval --weights " + q(ours) + " --dataset synthetic --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto b = nlohmann::json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(a["correct"], b["correct"]);
  EXPECT_EQ(a["loss"], b["loss"]);

  // A wrong --arch names the first wrong key and both shapes.
  r = test::run_cli("eval --weights " + q(plain) + " --arch resnet20 --dataset synthetic");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, plain.string() + ": key 'conv1.weight' has shape [6, 1, 5, 5], "
                              "resnet20 expects [16, 1, 3, 3]") ||
              contains(r.out, plain.string() + ": missing key"))
      << r.out;
  // --arch disagreeing with the file's own metadata.
  r = test::run_cli("eval --weights " + q(ours) + " --arch resnet20 --dataset synthetic");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--arch resnet20, but the file's metadata says the weights are for "
                              "lenet5"))
      << r.out;
  // --arch needs --dataset where the command has no other source of the input shape.
  r = test::run_cli("restore --weights " + q(plain) + " --arch lenet5 --secrets " + q(fx.plain) +
                    " --out " + q(fx.dir / "r.safetensors"));
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--arch lenet5 needs --dataset")) << r.out;

  // restore and infer of a plain obfuscated state_dict.
  std::vector<std::pair<std::string, const Tensor*>> onamed;
  for (auto& e : fx.obf->state()) onamed.emplace_back(e.key, e.tensor);
  fs::path oplain = fx.dir / "obf-plain.safetensors";
  io::write_safetensors(oplain.string(), onamed, {});
  fs::path out = fx.dir / "r.safetensors";
  r = test::run_cli("restore --weights " + q(oplain) + " --arch lenet5 --dataset synthetic " +
                    "--secrets " + q(fx.plain) + " --out " + q(out));
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(splitter::fingerprint(*io::load_model(out.string())), splitter::fingerprint(*fx.orig));
  r = test::run_cli("infer --weights " + q(oplain) + " --arch lenet5 --dataset synthetic " +
                        "--secrets " + q(fx.plain) + " --json",
                    false);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_GE(nlohmann::json::parse(r.out.substr(r.out.find('{')))["agreement"].get<double>(), 0.999);
}

}  // namespace
