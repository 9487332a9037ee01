// `--weights model.onnx` through the nnsplitter binary (issue 17): eval, info, protect ->
// restore bit for bit as ONNX, infer, fine-tuning, the exit codes of unsupported and malformed
// models. The model is tests/fixtures/onnx/custom_cnn_bn.onnx (every op of the reader; 1x28x28,
// 10 classes: the `synthetic` dataset's shape), fine-tuned once on synthetic data so that the
// protection has accuracy to destroy.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/io/onnx.h"
#include "core/splitter/secrets.h"
#include "tests/experiments/cli_runner.h"

namespace nns {
namespace {

namespace fs = std::filesystem;
using test::run_cli;

std::string fixture(const std::string& name) {
  return std::string(NNS_FIXTURE_DIR) + "/onnx/" + name;
}

nlohmann::json last_json(const std::string& out) {
  const auto p = out.rfind("\n{");
  return nlohmann::json::parse(p == std::string::npos ? out : out.substr(p + 1));
}

class OnnxCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = test::fresh_temp_dir("nns_onnx_cli", "suite");
    // Fine-tune the imported model on synthetic data, written back as ONNX (the same graph).
    auto r = run_cli("train --weights " + fixture("custom_cnn_bn.onnx") +
                     " --dataset synthetic --epochs 3 --lr 0.05 --batch 32 --out " +
                     (dir_ / "tuned.onnx").string() + " --json", false);
    ASSERT_EQ(r.code, 0) << r.out;
    trained_accuracy_ = last_json(r.out)["accuracy"];
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
  static double trained_accuracy_;
};
fs::path OnnxCli::dir_;
double OnnxCli::trained_accuracy_ = 0;

TEST_F(OnnxCli, FineTunedModelEvaluatesAndListsItsInitializers) {
  EXPECT_GE(trained_accuracy_, 0.3) << "fine-tuning the imported model did not learn";
  auto r = run_cli("eval --weights " + (dir_ / "tuned.onnx").string() + " --dataset synthetic --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_DOUBLE_EQ(double(last_json(r.out)["accuracy"]), trained_accuracy_);
  // Recognised by content under any name.
  fs::copy_file(dir_ / "tuned.onnx", dir_ / "tuned.weights", fs::copy_options::overwrite_existing);
  r = run_cli("eval --weights " + (dir_ / "tuned.weights").string() + " --dataset synthetic --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_cli("info --weights " + (dir_ / "tuned.onnx").string() + " --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = last_json(r.out);
  EXPECT_EQ(j["model"], "onnx");
  const auto spatial = j["eligible_layers"]["spatial"].get<std::vector<std::string>>();
  for (const char* k : {"stem.weight", "dw.weight", "b1.weight", "fc1.weight", "proj"})
    EXPECT_NE(std::find(spatial.begin(), spatial.end(), k), spatial.end()) << k;
}

TEST_F(OnnxCli, ProtectWritesOnnxAndRestoreGivesTheOriginalBack) {
  const fs::path out = dir_ / "prot";
  auto r = run_cli("protect --weights " + (dir_ / "tuned.onnx").string() +
                       " --dataset synthetic --out " + out.string() +
                       " --set controller.hidden=32 --set controller.updates=1"
                       " --set controller.episodes_per_update=2 --set splitter.val_size=300"
                       " --set splitter.eval_every=10 --set splitter.max_steps=40"
                       " --set splitter.target_per_layer=5 --set splitter.k=2 --set splitter.lr=0.5"
                       " --json",
                   false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = last_json(r.out);
  EXPECT_TRUE(j["restored_bit_exact"].get<bool>());
  EXPECT_LT(double(j["obfuscated_accuracy"]), double(j["original_accuracy"]));
  ASSERT_TRUE(fs::exists(out / "obfuscated.onnx"));
  ASSERT_TRUE(fs::exists(out / "obfuscated.safetensors"));
  // restore writes ONNX: every initializer as the original's, bit for bit.
  r = run_cli("restore --weights " + (out / "obfuscated.onnx").string() + " --secrets " +
                  (out / "secrets.safetensors").string() + " --out " +
                  (dir_ / "restored.onnx").string() + " --json",
              false);
  ASSERT_EQ(r.code, 0) << r.out;
  const auto orig = io::onnx_initializer_bytes((dir_ / "tuned.onnx").string());
  const auto back = io::onnx_initializer_bytes((dir_ / "restored.onnx").string());
  const auto obf = io::onnx_initializer_bytes((out / "obfuscated.onnx").string());
  EXPECT_EQ(back, orig);
  EXPECT_NE(obf, orig);
  // ... and as safetensors when asked.
  r = run_cli("restore --weights " + (out / "obfuscated.onnx").string() + " --secrets " +
                  (out / "secrets.safetensors").string() + " --out " +
                  (dir_ / "restored.safetensors").string(),
              false);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_FALSE(io::looks_like_onnx((dir_ / "restored.safetensors").string()));
  // Split inference on the obfuscated ONNX model agrees with the restored one.
  r = run_cli("infer --weights " + (out / "obfuscated.onnx").string() + " --secrets " +
                  (out / "secrets.safetensors").string() + " --dataset synthetic --json",
              false);
  ASSERT_EQ(r.code, 0) << r.out;
}

TEST_F(OnnxCli, UnsupportedModelsExitTwoNamingOpAndNode) {
  auto r = run_cli("eval --weights " + fixture("bad_unsupported_op.onnx") + " --dataset synthetic");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("bad_unsupported_op.onnx"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("my_lrn"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("LRN"), std::string::npos) << r.out;
  r = run_cli("protect --weights " + fixture("bad_softmax.onnx") + " --dataset synthetic --out " +
              (dir_ / "never").string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "never" / "obfuscated.onnx"));
  // A malformed file: exit 1, the file named.
  r = run_cli("eval --weights " + fixture("bad_truncated.onnx") + " --dataset synthetic");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("bad_truncated.onnx"), std::string::npos) << r.out;
  // --arch means nothing for a file that carries its graph.
  r = run_cli("eval --weights " + fixture("custom_cnn_folded.onnx") + " --arch lenet5 --dataset synthetic");
  EXPECT_EQ(r.code, 2) << r.out;
  // The model's shape must fit the dataset.
  r = run_cli("eval --weights " + fixture("custom_cnn_folded.onnx") + " --dataset cifar10");
  EXPECT_EQ(r.code, 2) << r.out;
}

}  // namespace
}  // namespace nns
