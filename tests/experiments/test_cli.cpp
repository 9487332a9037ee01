// The nnsplitter binary: exit codes, JSON output and error messages of train/eval/info/bench.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_runner.h"

namespace fs = std::filesystem;

namespace {

using Result = nns::test::CliResult;

Result run(const std::string& args, bool merge_stderr = true) {
  return nns::test::run_cli(args, merge_stderr);
}

fs::path temp_dir(const std::string& name) { return nns::test::fresh_temp_dir("nns_cli", name); }

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

TEST(Cli, HelpExitsZeroAndListsSubcommands) {
  auto r = run("--help");
  EXPECT_EQ(r.code, 0);
  for (auto sub : {"train", "eval", "info", "bench"}) EXPECT_TRUE(contains(r.out, sub)) << sub;
  for (auto sub : {"train", "eval", "info", "bench"}) {
    auto h = run(std::string(sub) + " --help");
    EXPECT_EQ(h.code, 0) << sub;
    EXPECT_TRUE(contains(h.out, "--json")) << sub;
  }
}

TEST(Cli, UsageErrorsExitTwo) {
  auto r = run("train --model resnet50 --dataset fashion-mnist --out /tmp/x.safetensors");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.out, "unknown model 'resnet50'")) << r.out;
  r = run("info --model lenet5 --dataset imagenet");
  EXPECT_EQ(r.code, 2);
  EXPECT_TRUE(contains(r.out, "imagenet")) << r.out;
  r = run("train --dataset fashion-mnist");  // missing --model and --out
  EXPECT_EQ(r.code, 2);
  r = run("frobnicate");
  EXPECT_EQ(r.code, 2);
  r = run("eval --weights x.safetensors --dataset mnist --device tpu");
  EXPECT_EQ(r.code, 2) << r.out;
}

TEST(Cli, MissingDatasetSaysWhereItLookedAndHowToGetIt) {
  auto d = temp_dir("missing");
  auto r = run("train --model lenet5 --dataset mnist --epochs 1 --data-dir " + (d / "nope").string() +
               " --out " + (d / "m.safetensors").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, (d / "nope").string())) << r.out;
  EXPECT_FALSE(fs::exists(d / "m.safetensors"));
}

TEST(Cli, TrainEvalInfoOnSyntheticData) {
  auto d = temp_dir("synthetic");
  std::string w = (d / "lenet.safetensors").string();
  auto r = run("train --model lenet5 --dataset synthetic --epochs 2 --batch 32 --lr 0.05 --json --out " + w,
               false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_GE(j["accuracy"].get<double>(), 0.9);
  ASSERT_TRUE(fs::exists(w));
  EXPECT_FALSE(fs::exists(w + ".ckpt"));

  r = run("eval --weights " + w + " --dataset synthetic --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto e = nlohmann::json::parse(r.out);
  EXPECT_EQ(e["correct"].get<int64_t>(), j["correct"].get<int64_t>());
  EXPECT_EQ(e["total"].get<int64_t>(), j["total"].get<int64_t>());
  EXPECT_EQ(e["per_class_accuracy"].size(), 10u);

  r = run("info --weights " + w + " --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto i = nlohmann::json::parse(r.out);
  EXPECT_EQ(i["parameters"].get<int64_t>(), 61706);
  EXPECT_EQ(i["eligible_layers"]["spatial"].size(), 5u);

  // A model for another dataset shape is refused with the reason.
  r = run("eval --weights " + w + " --dataset cifar10");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "channel")) << r.out;
}

TEST(Cli, CorruptWeightsFileIsAClearError) {
  auto d = temp_dir("corrupt");
  std::string w = (d / "bad.safetensors").string();
  std::ofstream(w) << "not a safetensors file at all";
  auto r = run("eval --weights " + w + " --dataset synthetic");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.out, w)) << r.out;
}

TEST(Cli, InfoJsonForResnet20) {
  auto r = run("info --model resnet20 --dataset fashion-mnist --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["parameters"].get<int64_t>(), 272186);
  EXPECT_EQ(j["eligible_layers"]["spatial"].size(), 20u);
  EXPECT_EQ(j["eligible_weights"]["spatial"].get<int64_t>(), 268048);
}

TEST(Cli, BenchPrintsJsonThroughput) {
  auto r = run("bench --models lenet5 --batch 16 --min-time 0.05 --min-iters 2 --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["results"].size(), 1u);
  EXPECT_GT(j["results"][0]["training_images_per_second"].get<double>(), 0);
  EXPECT_GT(j["results"][0]["inference_images_per_second"].get<double>(), 0);
}

TEST(Cli, BenchTrainedWeightsOnRealImagesTracesTheObfuscation) {
  auto d = temp_dir("bench_real");
  std::string w = (d / "lenet.safetensors").string();
  auto r = run("train --model lenet5 --dataset synthetic --epochs 1 --batch 32 --out " + w);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("bench --weights " + w + " --images real --batch 16 --data-batches 2 --min-time 0.01 "
          "--min-iters 4 --trace-steps 4 --json", false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto res = nlohmann::json::parse(r.out)["results"];
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0]["model"], "lenet5");
  EXPECT_EQ(res[0]["dataset"], "synthetic");  // from the weights' metadata
  EXPECT_EQ(res[0]["data_batches"].get<int>(), 2);
  EXPECT_GT(res[0]["obfuscation_masked_weights"].get<int64_t>(), 0);
  auto losses = res[0]["obfuscation_losses"].get<std::vector<double>>();
  ASSERT_EQ(losses.size(), 4u);
  // Steps 0 and 2 see the same batch: two Adam steps that maximise the CE lie between them.
  EXPECT_GT(losses[2], losses[0]);

  r = run("bench --weights " + (d / "none.safetensors").string() + " --json");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.out, (d / "none.safetensors").string())) << r.out;
  r = run("bench --models lenet5 --images sometimes");
  EXPECT_EQ(r.code, 2) << r.out;
  r = run("bench --models lenet5 --images real --dataset mnist --data-dir " + (d / "nope").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, (d / "nope").string())) << r.out;
}

}  // namespace
