// ONNX import and export (core/io/onnx.h) and the graph interpreter (core/graph/graph_net.h),
// against PyTorch: fixtures by tools/make_onnx_fixtures.py (tests/fixtures/onnx; torchvision
// models generated into the build folder at test time).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/graph/graph_net.h"
#include "core/graph/lower.h"
#include "core/io/model_io.h"
#include "core/io/onnx.h"
#include "core/io/safetensors.h"
#include "core/models/zoo.h"
#include "core/splitter/secrets.h"
#include "kernels/ops.h"

namespace nns::io {
namespace {

namespace fs = std::filesystem;

std::string fixture(const std::string& name) {
  return std::string(NNS_FIXTURE_DIR) + "/onnx/" + name;
}

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NNS_ASAN 1
#endif
#endif

// Compares a against b: max |a - b| <= tol * max(max |b|, 1e-3).
void expect_close(const std::vector<float>& a, const std::vector<float>& b, double tol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  double scale = 1e-3, worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < b.size(); ++i) scale = std::max(scale, double(std::fabs(b[i])));
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  EXPECT_LE(worst, tol * scale) << what << ": worst at " << at << " (" << a[at] << " vs " << b[at]
                                << "), scale " << scale;
}

std::vector<float> vec(const Tensor& t) { return t.to(Device::CPU).to_vector(); }

Tensor ref_tensor(const SafetensorsFile& f, const std::string& key) {
  const Tensor* t = f.find(key);
  if (!t) throw std::runtime_error("fixture lacks " + key);
  return *t;
}

TEST(Onnx, CustomCnnFoldedForwardMatchesPyTorch) {
  auto m = load_onnx(fixture("custom_cnn_folded.onnx"));
  auto ref = read_safetensors(fixture("custom_cnn.ref.safetensors"));
  EXPECT_EQ(m->spec().arch, "onnx");
  EXPECT_EQ(m->spec().in_channels, 1);
  EXPECT_EQ(m->spec().input_size, 28);
  EXPECT_EQ(m->spec().num_classes, 10);
  m->set_training(false);
  expect_close(vec(m->forward(ref_tensor(ref, "input"))), vec(ref_tensor(ref, "logits")), 1e-4,
               "logits");
  // The eval-mode export folded every BatchNorm: its convolutions' initializers are onnx::Conv_N.
  int folded_names = 0;
  for (auto& e : m->state()) folded_names += e.key.rfind("onnx::Conv_", 0) == 0;
  EXPECT_GT(folded_names, 0);
}

TEST(Onnx, CustomCnnBnFormForwardAndTrainingGradientsMatchPyTorch) {
  auto m = load_onnx(fixture("custom_cnn_bn.onnx"));
  auto ref = read_safetensors(fixture("custom_cnn.ref.safetensors"));
  const Tensor x = ref_tensor(ref, "input");
  m->set_training(false);
  expect_close(vec(m->forward(x)), vec(ref_tensor(ref, "logits")), 1e-4, "eval logits");
  // BN folded into the convolutions (eval): the same logits.
  const int folded = nn::fold_batchnorm(m->net());
  EXPECT_GE(folded, 3);
  expect_close(vec(m->forward(x)), vec(ref_tensor(ref, "logits")), 1e-4, "folded eval logits");
  nn::unfold_batchnorm(m->net());

  // Training mode, dropout off: batch statistics, gradients of the mean cross-entropy.
  m->set_training(true);
  m->set_dropout_enabled(false);
  const Tensor& logits = m->forward(x);
  expect_close(vec(logits), vec(ref_tensor(ref, "train.logits")), 1e-4, "train logits");
  const Tensor labels64 = ref_tensor(ref, "train.labels");
  Tensor labels({labels64.numel()}, DType::I32);
  for (int64_t i = 0; i < labels.numel(); ++i) labels.i32()[i] = int32_t(labels64.i64()[i]);
  const int n = int(x.dim(0)), k = 10;
  Tensor probs({n, k}), dlogits({n, k});
  float loss = 0;
  ops::Context ctx{Device::CPU, nullptr};
  ops::softmax_cross_entropy_forward(ctx, n, k, logits.f32(), labels.i32(), probs.f32(), &loss);
  EXPECT_NEAR(loss, ref_tensor(ref, "train.loss").f32()[0], 1e-5);
  ops::softmax_cross_entropy_backward(ctx, n, k, probs.f32(), labels.i32(), 1.0f, dlogits.f32());
  m->backward(dlogits);
  int checked = 0;
  for (auto& [key, p] : m->parameters()) {
    const Tensor* g = ref.find("grad." + key);
    ASSERT_NE(g, nullptr) << "no PyTorch gradient for " << key;
    ASSERT_TRUE(p->grad.defined()) << key;
    expect_close(vec(p->grad), g->to_vector(), 2e-4, "grad " + key);
    ++checked;
  }
  EXPECT_EQ(checked, int(m->parameters().size()));
  // Running statistics after one training-mode forward (momentum 1 - ONNX's 0.9).
  for (auto& e : m->state()) {
    const Tensor* after = ref.find("after." + e.key);
    if (e.key.find("running") == std::string::npos) continue;
    ASSERT_NE(after, nullptr) << e.key;
    expect_close(vec(*e.tensor), after->to_vector(), 1e-5, "running stat " + e.key);
  }
}

TEST(Onnx, BnFormKeepsStateDictNamesAndTheirModules) {
  auto m = load_onnx(fixture("custom_cnn_bn.onnx"));
  std::set<std::string> keys;
  for (auto& e : m->state()) keys.insert(e.key);
  for (const char* k : {"stem.weight", "bn0.weight", "bn0.running_mean", "bn0.running_var",
                        "dw.weight", "se.fc1.weight", "b1.weight", "fc1.weight", "fc1.bias", "proj"})
    EXPECT_TRUE(keys.count(k)) << k;
  // A MatMul weight is held as PyTorch's Linear holds it: [out, in].
  for (auto& e : m->state())
    if (e.key == "proj") EXPECT_EQ(e.tensor->shape(), (Shape{10, 16}));
  // module_for finds the layer of every eligible weight, by tensor.
  const auto eligible = models::eligible_layers(*m, "all");
  EXPECT_GE(eligible.size(), 10u);
  for (const auto& key : eligible) {
    nn::Module* mod = m->module_for(key);
    const Tensor* held = nullptr;
    for (auto& e : m->state())
      if (e.key == key) held = e.tensor;
    if (auto* c = dynamic_cast<nn::Conv2d*>(mod))
      EXPECT_EQ(&c->weight.value, held) << key;
    else if (auto* l = dynamic_cast<nn::Linear*>(mod))
      EXPECT_EQ(&l->weight.value, held) << key;
    else
      ADD_FAILURE() << key << " has no Conv2d/Linear owner";
  }
  // lower_module_tree gives the net's own graph (the engine's way in).
  auto* gn = dynamic_cast<graph::GraphNet*>(&m->net());
  ASSERT_NE(gn, nullptr);
  graph::Graph g = graph::lower_module_tree(m->net(), 1, 28);
  EXPECT_EQ(g.nodes().size(), gn->graph().nodes().size());
  for (size_t i = 0; i < g.nodes().size(); ++i) EXPECT_EQ(g.nodes()[i].module, gn->graph().nodes()[i].module);
  EXPECT_THROW(graph::lower_module_tree(m->net(), 3, 28), std::invalid_argument);
}

TEST(Onnx, WritesTheSameGraphWithTheStateBitForBit) {
  auto m = load_onnx(fixture("custom_cnn_folded.onnx"));
  // Unchanged: every initializer the same bytes.
  const std::string bytes = serialize_onnx(*m, {{"k", "v"}});
  std::map<std::string, std::string> meta;
  auto back = parse_onnx(bytes, "roundtrip", &meta);
  EXPECT_EQ(meta.at("k"), "v");
  ASSERT_EQ(back->state().size(), m->state().size());
  for (size_t i = 0; i < m->state().size(); ++i) {
    EXPECT_EQ(back->state()[i].key, m->state()[i].key);
    EXPECT_EQ(std::memcmp(back->state()[i].tensor->raw(), m->state()[i].tensor->raw(),
                          m->state()[i].tensor->nbytes()),
              0)
        << m->state()[i].key;
  }
  // A changed weight (of the MatMul, held transposed) comes back changed, the same fingerprint.
  for (auto& e : m->state())
    if (e.key == "proj") e.tensor->f32()[3] = 0.125f;
  auto again = parse_onnx(serialize_onnx(*m, {}), "changed");
  EXPECT_EQ(splitter::fingerprint(*again), splitter::fingerprint(*m));
  // The same bytes written by save_model (by the model's format) and read by content.
  const fs::path dir = fs::temp_directory_path() / ("nns_onnx_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  save_model(*m, (dir / "model.bin").string());
  EXPECT_TRUE(looks_like_onnx((dir / "model.bin").string()));
  auto read = load_model((dir / "model.bin").string());
  EXPECT_EQ(splitter::fingerprint(*read), splitter::fingerprint(*m));
  // As safetensors: the state under the same names, refused as a model without its graph.
  save_model(*m, (dir / "state.safetensors").string());
  EXPECT_FALSE(looks_like_onnx((dir / "state.safetensors").string()));
  auto st = read_safetensors((dir / "state.safetensors").string());
  EXPECT_NE(st.find("proj"), nullptr);
  EXPECT_EQ(st.metadata.at("arch"), "onnx");
  try {
    load_model((dir / "state.safetensors").string());
    ADD_FAILURE() << "a state dict without its graph loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(".onnx"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(Onnx, NormalisationSqueezeAndDeadNodesImport) {
  auto m = load_onnx(fixture("extras.onnx"));
  auto ref = read_safetensors(fixture("extras.ref.safetensors"));
  m->set_training(false);
  expect_close(vec(m->forward(ref_tensor(ref, "input"))), vec(ref_tensor(ref, "logits")), 1e-5,
               "logits");
  // Sub and Div by initializers became graph constants; the initializers are not state.
  std::set<std::string> keys;
  for (auto& e : m->state()) keys.insert(e.key);
  EXPECT_EQ(keys, (std::set<std::string>{"conv.weight", "conv.bias", "fc.weight", "fc.bias"}));
  // The Relu nothing reads was dropped.
  auto* gn = dynamic_cast<graph::GraphNet*>(&m->net());
  for (const auto& n : gn->graph().nodes()) EXPECT_NE(n.name, "dead_relu");
}

TEST(Onnx, CloneAndFreshBuildKeepTheGraph) {
  auto m = load_onnx(fixture("custom_cnn_bn.onnx"));
  auto c = models::clone_model(*m);
  EXPECT_EQ(splitter::fingerprint(*c), splitter::fingerprint(*m));
  EXPECT_TRUE(is_onnx_model(*c));
  auto fresh = models::build_model(m->spec(), 7);  // from-scratch baselines of the attacks
  EXPECT_NE(splitter::fingerprint(*fresh), splitter::fingerprint(*m));
  Tensor x({2, 1, 28, 28});
  fresh->set_training(false);
  EXPECT_EQ(fresh->forward(x).shape(), (Shape{2, 10}));
}

TEST(Onnx, BatchSizesShareTheGraph) {
  auto m = load_onnx(fixture("custom_cnn_folded.onnx"));
  auto ref = read_safetensors(fixture("custom_cnn.ref.safetensors"));
  m->set_training(false);
  const Tensor x = ref_tensor(ref, "input");
  const auto all = vec(m->forward(x));
  // One image at a time gives the same logits (the batch is a symbol).
  for (int i = 0; i < 4; ++i) {
    Tensor one({1, 1, 28, 28});
    std::memcpy(one.f32(), x.f32() + i * 784, 784 * sizeof(float));
    const auto y = vec(m->forward(one));
    expect_close(y, std::vector<float>(all.begin() + i * 10, all.begin() + i * 10 + 10), 1e-5,
                 "image " + std::to_string(i));
  }
}

struct BadCase {
  const char* file;
  bool unsupported;  // UnsupportedModel (exit 2) rather than a malformed file (exit 1)
  std::vector<const char*> words;
};

TEST(Onnx, EveryUnsupportedAndMalformedFileIsRefusedWithItsName) {
  const BadCase cases[] = {
      {"bad_unsupported_op.onnx", true, {"my_lrn", "LRN", "not supported"}},
      {"bad_domain.onnx", true, {"custom_op", "com.example"}},
      {"bad_softmax.onnx", true, {"softmax", "Softmax"}},
      {"bad_pad_reflect.onnx", true, {"reflect_pad", "reflect"}},
      {"bad_conv3d.onnx", true, {"conv", "3-d"}},
      {"bad_dynamic_size.onnx", true, {"not a fixed size"}},
      {"bad_two_inputs.onnx", true, {"more than one input"}},
      {"bad_output_4d.onnx", true, {"logits [N, classes]"}},
      {"bad_external_data.onnx", true, {"conv.weight", "external"}},
      {"bad_float16.onnx", true, {"conv.weight", "data type"}},
      {"bad_reshape_batch.onnx", true, {"fixed_reshape", "batch"}},
      {"bad_shared_weight.onnx", true, {"conv3", "conv2.weight", "shared"}},
      {"bad_opset.onnx", true, {"opset 3"}},
      {"bad_weight_shape.onnx", false, {"conv", "does not fit"}},
      {"bad_undefined_input.onnx", false, {"lost_relu", "nowhere"}},
      {"bad_no_nodes.onnx", false, {"no nodes"}},
      {"bad_nan_weight.onnx", false, {"conv.weight", "non-finite"}},
      {"bad_truncated.onnx", false, {"does not parse"}},
      {"bad_garbage.onnx", false, {}},
      {"bad_empty.onnx", false, {"does not parse"}},
  };
  for (const BadCase& c : cases) {
    const std::string path = fixture(c.file);
    std::string msg;
    bool unsupported = false;
    try {
      load_onnx(path);
      ADD_FAILURE() << c.file << " was accepted";
      continue;
    } catch (const UnsupportedModel& e) {
      msg = e.what();
      unsupported = true;
    } catch (const std::exception& e) {
      msg = e.what();
    }
    EXPECT_EQ(unsupported, c.unsupported) << c.file << ": " << msg;
    EXPECT_EQ(msg.rfind(path, 0), 0u) << c.file << ": the message does not start with the file: " << msg;
    for (const char* w : c.words) EXPECT_NE(msg.find(w), std::string::npos) << c.file << ": " << msg;
  }
  // Not a file: named.
  try {
    load_onnx(std::string(NNS_FIXTURE_DIR) + "/onnx");
    ADD_FAILURE() << "a folder was read";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("folder"), std::string::npos) << e.what();
  }
  // A device is refused by its kind at once, not read up to the 2 GiB limit.
  try {
    load_onnx("/dev/zero");
    ADD_FAILURE() << "/dev/zero was read";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("/dev/zero: is a character device", 0), 0u) << e.what();
  }
}

TEST(Onnx, RecognisedByContent) {
  EXPECT_TRUE(looks_like_onnx(fixture("tiny_valid.onnx")));
  EXPECT_FALSE(looks_like_onnx(std::string(NNS_FIXTURE_DIR) + "/lenet5.safetensors"));
  EXPECT_FALSE(looks_like_onnx_bytes(std::string("\x08\x01\x00\x00\x00\x00\x00\x00{", 9)));
  EXPECT_TRUE(looks_like_onnx_bytes(std::string("\x08\x07\x12\x07pytorch", 11)));
  auto m = load_model(fixture("tiny_valid.onnx"));
  EXPECT_EQ(m->spec().input_size, 8);
  EXPECT_EQ(models::eligible_layers(*m, "spatial"),
            (std::vector<std::string>{"conv.weight", "fc.weight"}));
}

// torchvision models at small input, forward against PyTorch. Generated at test time into the
// build folder (too big to commit): tools/make_onnx_fixtures.py --big.
std::string big_fixtures() {
  static std::string dir = [] {
    const std::string d = std::string(NNS_BINARY_DIR) + "/onnx-fixtures";
    const std::string done = d + "/DONE";
    if (fs::exists(done)) return d;
    // One process generates, the others (test shards) wait for DONE.
    const std::string lock = d + ".lock";
    if (::mkdir(lock.c_str(), 0755) == 0) {
      const std::string cmd = "/usr/bin/python3 " + std::string(NNS_SOURCE_DIR) +
                              "/tools/make_onnx_fixtures.py --big " + d + " >" + d +
                              ".log 2>&1 && touch " + done;
      const int rc = std::system(cmd.c_str());
      ::rmdir(lock.c_str());
      return rc == 0 ? d : std::string();
    }
    for (int i = 0; i < 600 && !fs::exists(done) && fs::exists(lock); ++i) ::sleep(1);
    return fs::exists(done) ? d : std::string();
  }();
  return dir;
}

class OnnxTorchvision : public ::testing::TestWithParam<const char*> {};

TEST_P(OnnxTorchvision, ForwardMatchesPyTorch) {
#ifdef NNS_ASAN
  GTEST_SKIP() << "torchvision models are skipped under the sanitizer (slow); the Release run "
                  "covers them";
#endif
  const std::string dir = big_fixtures();
  if (dir.empty())
    GTEST_SKIP() << "torchvision fixtures could not be generated (/usr/bin/python3 with torch, "
                    "torchvision and onnx; see " << NNS_BINARY_DIR << "/onnx-fixtures.log)";
  const std::string name = GetParam();
  auto ref = read_safetensors(dir + "/" + name + ".ref.safetensors");
  for (const char* form : {"_folded", "_bn"}) {
    const std::string path = dir + "/" + name + form + ".onnx";
    if (!fs::exists(path)) continue;
    auto m = load_onnx(path);
    m->set_training(false);
    expect_close(vec(m->forward(ref_tensor(ref, "input"))), vec(ref_tensor(ref, "logits")), 2e-4,
                 name + form);
    if (std::string(form) == "_bn") {
      EXPECT_GT(nn::fold_batchnorm(m->net()), 10) << name;
      expect_close(vec(m->forward(ref_tensor(ref, "input"))), vec(ref_tensor(ref, "logits")), 2e-4,
                   name + form + " folded");
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, OnnxTorchvision,
                         ::testing::Values("resnet18", "mobilenet_v2", "squeezenet1_1",
                                           "shufflenet_v2_x0_5"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param);
                         });

}  // namespace
}  // namespace nns::io
