// The nnsplitter binary: exit codes, JSON output and error messages of train/eval/info/bench.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "cli_runner.h"
#include "core/io/model_io.h"
#include "core/io/safetensors.h"
#include "core/models/zoo.h"

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

  // bf16 steps where they cannot run (our blocked kernels have no bf16 path): refused before
  // any work, naming the key and what to use instead; nothing written.
  const std::string out = (d / "bf16-native").string();
  r = run("protect --weights " + w + " --dataset synthetic --set splitter.precision=bf16 " +
          "--cpu-engine native --out " + out);
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "splitter.precision") && contains(r.out, "onednn")) << r.out;
  EXPECT_FALSE(fs::exists(out));
  r = run("bench --models lenet5 --precision bf16 --cpu-engine layers");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "--precision bf16")) << r.out;
}

TEST(Cli, CorruptWeightsFileIsAClearError) {
  auto d = temp_dir("corrupt");
  std::string w = (d / "bad.safetensors").string();
  std::ofstream(w) << "not a safetensors file at all";
  auto r = run("eval --weights " + w + " --dataset synthetic");
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.out, w)) << r.out;
}


// Issue 17's probe, as a hostile user would try it: `run /dev/zero` and `run /dev/urandom` never
// returned, a 50 MB config took 33 s, a folder said "basic_filebuf::underflow" without its name.
// Each is now a usage error (exit 2) naming the file, at once (the bound: 1 MiB, checked before
// reading). `timeout` keeps a regression from hanging the suite.
TEST(Cli, HostileConfigsAreRefusedAtOnceNamingTheFile) {
  auto d = temp_dir("hostile");
  const std::string big = (d / "big.yaml").string(), fifo = (d / "fifo.yaml").string();
  std::ofstream(big).close();
  fs::resize_file(big, 50'000'000);  // sparse
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"/dev/zero", "/dev/zero: is a character device, not a config file"},
      {"/dev/urandom", "/dev/urandom: is a character device, not a config file"},
      {d.string(), d.string() + ": is a folder, not a config file"},
      {big, big + ": 50000000 bytes, more than the limit of 1 MiB for a config file"},
      {fifo, fifo + ": is a FIFO, not a config file"}};
  for (const auto& [file, message] : cases)
    for (const std::string cmd : {"run ", "sweep --list "}) {
      if (cmd != "run " && file != "/dev/zero" && file != big) continue;  // the same reader
      const auto t0 = std::chrono::steady_clock::now();
      auto r = nns::test::run_cli(cmd + "'" + file + "'", true, "timeout 60");
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      EXPECT_EQ(r.code, 2) << cmd << file << ": " << r.out;
      const std::string want = cmd == "run " ? message
                               : message.substr(0, message.rfind("config file")) + "sweep file" +
                                     message.substr(message.rfind("config file") + 11);
      EXPECT_TRUE(contains(r.out, want)) << want << " in " << r.out;
      EXPECT_FALSE(contains(r.out, "underflow")) << r.out;
      // Refused by kind or size: the time is the process's start. (Within a second on a quiet
      // machine; the bound leaves room for a loaded one.)
      EXPECT_LT(s, 5.0) << cmd << file;
    }
  // protect --config takes the same way in; weights are refused by kind too (exit 1, as every
  // malformed weights file).
  auto r = nns::test::run_cli("protect --weights /dev/null --dataset synthetic --out '" +
                              (d / "p").string() + "' --config /dev/zero", true, "timeout 60");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_TRUE(contains(r.out, "/dev/zero: is a character device, not a config file")) << r.out;
  for (const std::string& w : {std::string("/dev/zero"), fifo}) {
    r = nns::test::run_cli("eval --weights '" + w + "' --dataset synthetic", true, "timeout 60");
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_TRUE(contains(r.out, w + ": is a")) << r.out;
  }
}

// Weights metadata numbers are strict: `width_mult: "2junk"` was read as 2.
TEST(Cli, WeightsMetadataNumbersAreStrict) {
  auto d = temp_dir("strict_meta");
  nns::models::ModelSpec spec;
  spec.arch = "lenet5";
  spec.in_channels = 1;
  spec.input_size = 28;
  spec.num_classes = 10;
  auto model = nns::models::build_model(spec);
  const std::string good = (d / "w.safetensors").string();
  nns::io::save_model(*model, good);
  const nns::io::SafetensorsFile f = nns::io::read_safetensors(good);
  std::vector<std::pair<std::string, const nns::Tensor*>> tensors;
  for (const auto& [name, t] : f.tensors) tensors.emplace_back(name, &t);
  for (const std::string key : {"width_mult", "in_channels", "input_size", "num_classes"}) {
    const std::string bad = (d / (key + ".safetensors")).string();
    auto meta = f.metadata;
    meta[key] = "2junk";
    nns::io::write_safetensors(bad, tensors, meta);
    auto r = run("eval --weights '" + bad + "' --dataset fashion-mnist");
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_TRUE(contains(r.out, bad + ": metadata " + key + " = '2junk' is not")) << r.out;
  }
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
