// Every zoo model against fixtures dumped by PyTorch (tools/make_fixtures.py): logits, loss,
// every parameter gradient and the input gradient, in eval mode and in training mode (batch
// statistics, running-statistics update), from the same weights.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "core/io/model_io.h"
#include "core/io/safetensors.h"
#include "core/models/zoo.h"
#include "kernels/ops.h"

using namespace nns;

namespace {

std::string fixture_path(const std::string& arch) {
  return std::string(NNS_FIXTURE_DIR) + "/" + arch + ".safetensors";
}

// max |a - b| <= rel * max |ref| + abs_tol, reported with the worst index.
void expect_close(const Tensor& got, const Tensor& ref, const std::string& what,
                  double rel = 1e-4, double abs_tol = 1e-6) {
  ASSERT_EQ(got.shape(), ref.shape()) << what;
  Tensor g = got.to(Device::CPU);
  double max_ref = 0, max_diff = 0;
  int64_t worst = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) max_ref = std::max(max_ref, std::fabs(double(ref.f32()[i])));
  for (int64_t i = 0; i < ref.numel(); ++i) {
    double d = std::fabs(double(g.f32()[i]) - double(ref.f32()[i]));
    if (!(d <= max_diff)) {
      max_diff = d;
      worst = i;
    }
  }
  EXPECT_LE(max_diff, rel * max_ref + abs_tol)
      << what << ": worst flat index " << worst << " got " << g.f32()[worst] << " want "
      << ref.f32()[worst] << " (max |ref| " << max_ref << ")";
}

const Tensor& need(const io::SafetensorsFile& f, const std::string& key) {
  const Tensor* t = f.find(key);
  if (!t) throw std::runtime_error("fixture lacks " + key);
  return *t;
}

struct Loaded {
  io::SafetensorsFile file;
  std::unique_ptr<models::Model> model;
};

Loaded load_fixture(const std::string& arch) {
  Loaded l;
  l.file = io::read_safetensors(fixture_path(arch));
  l.model = models::build_model(io::spec_from_metadata(l.file, arch));
  io::SafetensorsFile state;
  for (auto& [k, t] : l.file.tensors)
    if (k.rfind("state.", 0) == 0) state.tensors.emplace_back(k.substr(6), t);
  io::load_state(*l.model, state, fixture_path(arch));
  l.model->set_input_grad(true);
  return l;
}

void run_and_compare(const std::string& arch, bool training) {
  Loaded l = load_fixture(arch);
  models::Model& m = *l.model;
  const std::string mode = training ? "train" : "eval";
  m.set_training(training);
  m.set_dropout_enabled(false);
  const Tensor& x = need(l.file, "input");
  const Tensor& labels64 = need(l.file, "labels");
  int n = int(x.dim(0)), k = m.spec().num_classes;
  Tensor labels({n}, DType::I32);
  for (int i = 0; i < n; ++i) labels.i32()[i] = int32_t(labels64.i64()[i]);

  ops::Context ctx{Device::CPU, nullptr};
  const Tensor& logits = m.forward(x);
  expect_close(logits, need(l.file, mode + ".logits"), arch + " " + mode + " logits");
  Tensor probs({n, k}), dlogits({n, k});
  float loss = 0;
  ops::softmax_cross_entropy_forward(ctx, n, k, logits.f32(), labels.i32(), probs.f32(), &loss);
  float ref_loss = need(l.file, mode + ".loss").f32()[0];
  EXPECT_NEAR(loss, ref_loss, 1e-4 * std::fabs(ref_loss) + 1e-6) << arch << " " << mode << " loss";
  ops::softmax_cross_entropy_backward(ctx, n, k, probs.f32(), labels.i32(), 1.0f, dlogits.f32());
  m.backward(dlogits);
  int n_grads = 0;
  for (auto& [key, p] : m.parameters()) {
    ASSERT_TRUE(p->grad.defined()) << key;
    expect_close(p->grad, need(l.file, mode + ".grad." + key), arch + " " + mode + " grad " + key);
    ++n_grads;
  }
  EXPECT_GT(n_grads, 0);
  expect_close(m.input_grad(), need(l.file, mode + ".grad_input"), arch + " " + mode + " grad_input");
  if (training) {
    int n_bn = 0;
    for (auto& e : m.state()) {
      if (e.param) continue;
      const Tensor& ref = need(l.file, "train.state_after." + e.key);
      if (e.tensor->dtype() == DType::I64) {
        EXPECT_EQ(e.tensor->i64()[0], ref.i64()[0]) << e.key;
      } else {
        expect_close(*e.tensor, ref, arch + " running stat " + e.key);
      }
      ++n_bn;
    }
    if (arch != "lenet5") {
      EXPECT_GT(n_bn, 0);
    }
  }
}

class ZooFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ZooFixture, EvalModeMatchesPyTorch) { run_and_compare(GetParam(), false); }
TEST_P(ZooFixture, TrainModeMatchesPyTorch) { run_and_compare(GetParam(), true); }

INSTANTIATE_TEST_SUITE_P(Models, ZooFixture,
                         ::testing::Values("lenet5", "resnet20", "resnet18", "resnet34",
                                           "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
                                           "mobilenet_v2"),
                         [](const auto& info) { return info.param; });

// Parameter counts equal PyTorch's at the published widths (SPEC §3, MODELS.md).
TEST(Zoo, ParameterCountsMatchPyTorch) {
  auto count = [](const std::string& arch, int ch, int size) {
    models::ModelSpec s;
    s.arch = arch;
    s.in_channels = ch;
    s.input_size = size;
    s.num_classes = 10;
    return models::build_model(s)->num_parameters();
  };
  EXPECT_EQ(count("lenet5", 1, 28), 61706);
  EXPECT_EQ(count("resnet20", 1, 28), 272186);
  EXPECT_EQ(count("resnet18", 3, 32), 11173962);
  int64_t vgg = count("vgg11_bn", 3, 32);
  EXPECT_NEAR(double(vgg) / 1e6, 28.15, 0.005) << vgg;
  int64_t mb = count("mobilenet_v2", 3, 32);
  EXPECT_NEAR(double(mb) / 1e6, 2.237, 0.0005) << mb;
}

TEST(Zoo, StateDictKeysOfResnet20FollowMODELS) {
  models::ModelSpec s;
  s.arch = "resnet20";
  auto m = models::build_model(s);
  auto& st = m->state();
  ASSERT_EQ(st.size(), 128u);
  EXPECT_EQ(st[0].key, "conv1.weight");
  EXPECT_EQ(st[5].key, "bn1.num_batches_tracked");
  EXPECT_EQ(st[54].key, "layer2.0.downsample.0.weight");
  EXPECT_EQ(st[127].key, "fc.bias");
  auto el = models::eligible_layers(*m, "spatial");
  EXPECT_EQ(el.size(), 20u);
  EXPECT_EQ(models::eligible_layers(*m, "all").size(), 22u);
}

TEST(Zoo, UnknownModelNamesTheKnownOnes) {
  models::ModelSpec s;
  s.arch = "resnet50";
  try {
    models::build_model(s);
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown model 'resnet50'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("mobilenet_v2"), std::string::npos);
  }
}

TEST(Zoo, WrongShapeWeightsNameTheKey) {
  models::ModelSpec s;
  s.arch = "lenet5";
  auto m = models::build_model(s);
  io::SafetensorsFile f;
  for (auto& e : m->state()) f.tensors.emplace_back(e.key, e.tensor->clone());
  f.tensors[2].second = Tensor({16, 6, 3, 3});  // conv2.weight
  try {
    io::load_state(*m, f, "w.safetensors");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("w.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("conv2.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[16, 6, 5, 5]"), std::string::npos) << msg;
  }
  f.tensors[2].second = m->state()[2].tensor->clone();
  f.tensors.pop_back();  // fc3.bias missing
  EXPECT_THROW(io::load_state(*m, f, "w.safetensors"), std::runtime_error);
}

}  // namespace
