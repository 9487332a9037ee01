// Stealthiness metrics (KS distance, at-bounds fraction, histograms) and the attacks (norm
// clipping, fine-tuning, boundary reset), plus `nnsplitter attack` end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>

#include "core/io/model_io.h"
#include "core/nn/layers.h"
#include "core/random.h"
#include "core/splitter/secrets.h"
#include "experiments/attacks.h"
#include "cli_runner.h"
#include "experiments/metrics.h"
#include "experiments/trainer.h"

using namespace nns;
namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------- helpers

std::unique_ptr<models::Model> lenet(uint64_t seed = 1) {
  models::ModelSpec s;
  s.arch = "lenet5";
  return models::build_model(s, seed);
}

Tensor& tensor_of(models::Model& m, const std::string& key) {
  for (auto& e : m.state())
    if (e.key == key) return *e.tensor;
  throw std::runtime_error("no tensor " + key);
}

float get(models::Model& m, const std::string& key, int64_t i) {
  return tensor_of(m, key).to_vector()[i];
}

void set(models::Model& m, const std::string& key, int64_t i, float v) {
  Tensor& t = tensor_of(m, key);
  auto x = t.to_vector();
  x[i] = v;
  t.copy_from(Tensor::from_vector(x, t.shape()));
}

std::vector<std::string> state_bytes(models::Model& m) {
  std::vector<std::string> out;
  for (auto& e : m.state()) {
    Tensor c = e.tensor->to(Device::CPU);
    out.emplace_back(static_cast<const char*>(c.raw()), c.nbytes());
  }
  return out;
}

double naive_ks(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<float> all(a);
  all.insert(all.end(), b.begin(), b.end());
  double d = 0;
  for (float x : all) {
    double fa = 0, fb = 0;
    for (float y : a) fa += y <= x;
    for (float y : b) fb += y <= x;
    d = std::max(d, std::fabs(fa / a.size() - fb / b.size()));
  }
  return d;
}

// ---------------------------------------------------------------- metrics

TEST(Metrics, KsDistanceMatchesNaiveComputationWithTies) {
  Rng rng(42);
  for (int trial = 0; trial < 30; ++trial) {
    const int n = 1 + int(rng.below(60)), m = 1 + int(rng.below(60));
    const int levels = trial % 3 == 0 ? 5 : 1000;  // few levels → many ties
    const double shift = (trial % 5) * 0.1;
    std::vector<float> a(n), b(m);
    for (auto& x : a) x = float(int(rng.below(levels))) / levels;
    for (auto& x : b) x = float(int(rng.below(levels))) / levels + float(shift);
    EXPECT_NEAR(exp::ks_distance(a, b), naive_ks(a, b), 1e-12) << "trial " << trial;
  }
}

TEST(Metrics, KsDistanceIdenticalDisjointAndEmpty) {
  Rng rng(3);
  std::vector<float> a(500);
  for (auto& x : a) x = float(rng.normal());
  std::vector<float> b(a.rbegin(), a.rend());
  EXPECT_EQ(exp::ks_distance(a, b), 0.0);
  std::vector<float> c(a.begin(), a.begin() + 100);
  for (auto& x : c) x += 100.0f;
  EXPECT_EQ(exp::ks_distance(a, c), 1.0);
  EXPECT_EQ(exp::ks_distance(c, a), 1.0);
  EXPECT_EQ(exp::ks_distance({}, a), 0.0);
  // Ties across the samples are stepped over together: {0,0,1} vs {0,1,1} → 1/3.
  EXPECT_NEAR(exp::ks_distance({0, 0, 1}, {0, 1, 1}), 1.0 / 3, 1e-15);
}

TEST(Metrics, HistogramCountsEveryValueInRange) {
  auto edges = exp::histogram_edges(-1, 1, 8);
  ASSERT_EQ(edges.size(), 9u);
  EXPECT_EQ(edges.front(), -1.0);
  EXPECT_EQ(edges.back(), 1.0);
  auto h = exp::make_histogram({-1.0f, -0.75f, 0.0f, 0.2f, 1.0f, 1.5f, NAN}, edges);
  EXPECT_EQ(std::accumulate(h.counts.begin(), h.counts.end(), int64_t(0)), 5);
  EXPECT_EQ(h.counts[0], 1);  // -1
  EXPECT_EQ(h.counts[1], 1);  // -0.75 is the left edge of bin 1
  EXPECT_EQ(h.counts[4], 2);  // 0 and 0.2
  EXPECT_EQ(h.counts[7], 1);  // 1 sits in the last bin
  EXPECT_THROW(exp::histogram_edges(0, 1, 0), std::invalid_argument);
}

TEST(Stealth, AtBoundsFractionKsAndHistogramsOnHandMadeObfuscation) {
  auto orig = lenet(1);
  auto obf = models::clone_model(*orig);
  auto layers = models::eligible_layers(*orig, "spatial");
  ASSERT_EQ(layers.size(), 5u);  // conv1, conv2, fc1, fc2, fc3 weights
  const double lo = -0.5, hi = 0.625;
  const std::string c1 = "conv1.weight", f3 = "fc3.weight";
  set(*obf, c1, 0, float(lo));
  set(*obf, c1, 1, float(lo));
  set(*obf, c1, 2, float(hi));
  set(*obf, c1, 3, float(hi - 5e-7));  // within 1e-6: at the bound
  set(*obf, c1, 4, float(lo + 1e-3));  // not at the bound
  set(*obf, c1, 5, get(*orig, c1, 5) + 0.01f);
  set(*obf, f3, 7, float(hi));
  auto s = exp::stealth_metrics(*orig, *obf, layers, lo, hi, 50);
  EXPECT_EQ(s.layers, layers);
  EXPECT_EQ(s.obfuscated_total, 7);
  EXPECT_NEAR(s.at_bounds_fraction, 5.0 / 7, 1e-12);
  ASSERT_EQ(s.at_bounds_per_layer.size(), 5u);
  EXPECT_NEAR(s.at_bounds_per_layer[0], 4.0 / 6, 1e-12);
  EXPECT_EQ(s.at_bounds_per_layer[1], 0.0);
  EXPECT_EQ(s.at_bounds_per_layer[4], 1.0);
  EXPECT_EQ(s.obfuscated_per_layer, (std::vector<int64_t>{6, 0, 0, 0, 1}));
  ASSERT_EQ(s.ks_per_layer.size(), 5u);
  EXPECT_GT(s.ks_per_layer[0], 0.0);
  EXPECT_EQ(s.ks_per_layer[1], 0.0);
  EXPECT_EQ(s.ks_per_layer[2], 0.0);
  EXPECT_GT(s.ks_distance, 0.0);
  EXPECT_LT(s.ks_distance, 0.01);  // 7 of ~60k weights moved

  int64_t eligible = 0;
  for (auto& k : layers) eligible += tensor_of(*orig, k).numel();
  auto sum = [](const exp::Histogram& h) {
    return std::accumulate(h.counts.begin(), h.counts.end(), int64_t(0));
  };
  for (auto* h : {&s.original, &s.obfuscated, &s.masked_original, &s.masked_obfuscated}) {
    EXPECT_EQ(h->edges.size(), 51u);
    EXPECT_EQ(h->counts.size(), 50u);
    EXPECT_EQ(h->edges, s.original.edges);
  }
  EXPECT_EQ(sum(s.original), eligible);
  EXPECT_EQ(sum(s.obfuscated), eligible);
  EXPECT_EQ(sum(s.masked_original), 7);
  EXPECT_EQ(sum(s.masked_obfuscated), 7);
  EXPECT_LE(s.original.edges.front(), lo);
  EXPECT_GE(s.original.edges.back(), hi);
  EXPECT_EQ(s.masked_obfuscated.counts.front(), 3);  // two at lo, one at lo + 1e-3

  // Identical models: nothing obfuscated.
  auto same = exp::stealth_metrics(*orig, *orig, layers, lo, hi);
  EXPECT_EQ(same.obfuscated_total, 0);
  EXPECT_EQ(same.at_bounds_fraction, 0.0);
  EXPECT_EQ(same.ks_distance, 0.0);
  EXPECT_THROW(exp::stealth_metrics(*orig, *obf, {"nope.weight"}, lo, hi),
               std::invalid_argument);
}

// ---------------------------------------------------------------- norm clipping

TEST(Attacks, NormClipClipsOutlierAndNeverTouchesTheInput) {
  auto m = lenet(2);
  auto layers = models::eligible_layers(*m, "spatial");
  const std::string key = "conv2.weight";
  set(*m, key, 7, 100.0f);
  const auto before = state_bytes(*m);
  // mean and population std of the obfuscated layer, as the attack computes them
  auto v = tensor_of(*m, key).to_vector();
  double mean = std::accumulate(v.begin(), v.end(), 0.0) / v.size(), q = 0;
  for (float x : v) q += (x - mean) * (x - mean);
  const double sd = std::sqrt(q / v.size());

  std::vector<float> seen_outlier, seen_max;
  std::vector<bool> seen_training;
  double next = 0.1;
  exp::AccuracyFn acc = [&](models::Model& c) {
    seen_outlier.push_back(get(c, key, 7));
    auto w = tensor_of(c, key).to_vector();
    seen_max.push_back(*std::max_element(w.begin(), w.end()));
    return next += 0.1;
  };
  auto r = exp::norm_clip_attack(*m, layers, {1.0, 3.0}, -0.05, 0.05, acc);
  ASSERT_EQ(seen_outlier.size(), 3u);  // k = 1, k = 3, global
  EXPECT_EQ(r.k, (std::vector<double>{1.0, 3.0}));
  ASSERT_EQ(r.accuracy.size(), 2u);
  EXPECT_DOUBLE_EQ(r.accuracy[0], 0.2);
  EXPECT_DOUBLE_EQ(r.accuracy[1], 0.3);
  EXPECT_DOUBLE_EQ(r.global_accuracy, 0.4);
  EXPECT_EQ(r.global_lo, -0.05);
  EXPECT_EQ(r.global_hi, 0.05);
  EXPECT_FLOAT_EQ(seen_outlier[0], float(mean + 1 * sd));
  EXPECT_FLOAT_EQ(seen_outlier[1], float(mean + 3 * sd));
  EXPECT_FLOAT_EQ(seen_outlier[2], 0.05f);
  EXPECT_LT(seen_outlier[1], 10.0f);  // clipped back (the outlier itself inflates std)
  EXPECT_FLOAT_EQ(seen_max[0], float(mean + sd));
  EXPECT_EQ(state_bytes(*m), before);  // the input model is bit-identical
  EXPECT_EQ(get(*m, key, 7), 100.0f);

  // No global range → not run.
  auto r2 = exp::norm_clip_attack(*m, layers, {2.0}, 0, 0, acc);
  EXPECT_EQ(r2.global_accuracy, -1);
  EXPECT_THROW(exp::norm_clip_attack(*m, layers, {-1.0}, 0, 0, acc), std::invalid_argument);
}

// ---------------------------------------------------------------- fine-tuning

TEST(Attacks, FinetuneShapesAndRecoveryWithMoreData) {
  auto splits = data::make_synthetic(400, 200, 1, 28, 10, 5);
  auto norm = data::normalization_for("synthetic");
  auto m = lenet(3);  // an untrained model: chance accuracy, like a well-obfuscated one
  const auto before = state_bytes(*m);
  exp::AccuracyFn acc = [&](models::Model& c) {
    return exp::evaluate(c, splits.test, norm).accuracy();
  };
  exp::FinetuneOptions o;
  o.fractions = {0.1, 0.5};
  o.epochs = 2;
  o.batch = 16;
  o.lr = 0.02f;
  auto r = exp::finetune_attack(*m, splits.train, norm, o, acc);
  EXPECT_EQ(r.fractions, o.fractions);
  ASSERT_EQ(r.accuracy.size(), 2u);
  ASSERT_EQ(r.scratch_accuracy.size(), 2u);
  for (int p = 0; p < 2; ++p) {
    ASSERT_EQ(r.accuracy[p].size(), 3u);
    ASSERT_EQ(r.scratch_accuracy[p].size(), 3u);
    for (double a : r.accuracy[p]) EXPECT_TRUE(a >= 0 && a <= 1) << a;
  }
  EXPECT_EQ(r.accuracy[0][0], r.accuracy[1][0]);  // column 0: the untouched model
  EXPECT_GT(r.accuracy[1][2], r.accuracy[0][2]);  // more data, more recovery
  EXPECT_GT(r.accuracy[1][2], r.accuracy[1][0] + 0.3)
      << r.accuracy[1][0] << " -> " << r.accuracy[1][2];
  EXPECT_GT(r.scratch_accuracy[1][2], r.scratch_accuracy[1][0] + 0.3);
  EXPECT_EQ(state_bytes(*m), before);

  o.scratch = false;
  o.fractions = {0.05};
  o.epochs = 0;
  auto r0 = exp::finetune_attack(*m, splits.train, norm, o, acc);
  ASSERT_EQ(r0.accuracy.size(), 1u);
  EXPECT_EQ(r0.accuracy[0].size(), 1u);
  EXPECT_TRUE(r0.scratch_accuracy.empty());
  o.fractions = {1.5};
  EXPECT_THROW(exp::finetune_attack(*m, splits.train, norm, o, acc), std::invalid_argument);
}

// ---------------------------------------------------------------- boundary reset

struct Planted {
  std::unique_ptr<models::Model> original, obfuscated;
  std::vector<std::string> layers;
  double lo = 0, hi = 0;
  // (layer index, flat index)
  std::vector<std::pair<size_t, int64_t>> where;
};

// Pushes a few weights of a fresh lenet5 to new extremes lo/hi just outside the weight range.
Planted plant() {
  Planted p;
  p.original = lenet(4);
  p.obfuscated = models::clone_model(*p.original);
  p.layers = models::eligible_layers(*p.original, "spatial");
  float mn = INFINITY, mx = -INFINITY;
  for (auto& k : p.layers)
    for (float x : tensor_of(*p.original, k).to_vector()) mn = std::min(mn, x), mx = std::max(mx, x);
  p.lo = double(mn - 0.05f);
  p.hi = double(mx + 0.05f);
  p.where = {{0, 3}, {0, 10}, {2, 100}, {2, 200}, {4, 5}};
  const bool to_hi[] = {false, true, false, true, true};
  for (size_t i = 0; i < p.where.size(); ++i)
    set(*p.obfuscated, p.layers[p.where[i].first], p.where[i].second,
        float(to_hi[i] ? p.hi : p.lo));
  return p;
}

TEST(Attacks, ApplyBoundaryResetFlagsAndResetsByMode) {
  Planted p = plant();
  std::vector<std::vector<int64_t>> expected(p.layers.size());
  for (auto [l, i] : p.where) expected[l].push_back(i);

  auto z = models::clone_model(*p.obfuscated);
  auto flagged = exp::apply_boundary_reset(*z, p.layers, p.lo, p.hi, 1e-6, "zero");
  EXPECT_EQ(flagged, expected);
  for (auto [l, i] : p.where) EXPECT_EQ(get(*z, p.layers[l], i), 0.0f);
  // everything else is untouched
  EXPECT_EQ(get(*z, p.layers[0], 4), get(*p.obfuscated, p.layers[0], 4));

  auto mm = models::clone_model(*p.obfuscated);
  flagged = exp::apply_boundary_reset(*mm, p.layers, p.lo, p.hi, 1e-6, "mean");
  EXPECT_EQ(flagged, expected);
  for (size_t l = 0; l < p.layers.size(); ++l) {
    if (expected[l].empty()) continue;
    auto v = tensor_of(*p.obfuscated, p.layers[l]).to_vector();
    double s = 0;
    int64_t n = 0;
    for (size_t i = 0; i < v.size(); ++i)
      if (std::find(expected[l].begin(), expected[l].end(), int64_t(i)) == expected[l].end())
        s += v[i], ++n;
    for (int64_t i : expected[l]) EXPECT_FLOAT_EQ(get(*mm, p.layers[l], i), float(s / n));
  }

  auto donor = lenet(9);
  auto d = models::clone_model(*p.obfuscated);
  flagged = exp::apply_boundary_reset(*d, p.layers, p.lo, p.hi, 1e-6, "donor", donor.get());
  EXPECT_EQ(flagged, expected);
  for (auto [l, i] : p.where) EXPECT_EQ(get(*d, p.layers[l], i), get(*donor, p.layers[l], i));

  EXPECT_THROW(exp::apply_boundary_reset(*d, p.layers, p.lo, p.hi, 1e-6, "median"),
               std::invalid_argument);
  EXPECT_THROW(exp::apply_boundary_reset(*d, p.layers, p.lo, p.hi, 1e-6, "donor"),
               std::invalid_argument);
}

TEST(Attacks, BoundaryResetCountsTruePositivesAndFinetunes) {
  Planted p = plant();
  const auto before = state_bytes(*p.obfuscated);
  auto secrets = splitter::diff_secrets(*p.original, *p.obfuscated);
  ASSERT_EQ(secrets.total(), 5);
  auto splits = data::make_synthetic(300, 100, 1, 28, 10, 6);
  auto norm = data::normalization_for("synthetic");
  std::vector<float> planted_values;
  exp::AccuracyFn acc = [&](models::Model& c) {
    planted_values.clear();
    for (auto [l, i] : p.where) planted_values.push_back(get(c, p.layers[l], i));
    return exp::evaluate(c, splits.test, norm).accuracy();
  };
  exp::BoundaryResetOptions o;
  o.delta = 1e-6;
  auto r = exp::boundary_reset_attack(*p.obfuscated, p.layers, &secrets, splits.train, norm, o,
                                      acc);
  EXPECT_EQ(r.detected, 5);
  EXPECT_EQ(r.true_positives, 5);
  EXPECT_EQ(r.obfuscated, 5);
  EXPECT_DOUBLE_EQ(r.lo, double(float(p.lo)));
  EXPECT_DOUBLE_EQ(r.hi, double(float(p.hi)));
  EXPECT_EQ(r.detected_per_layer, (std::vector<int64_t>{2, 0, 2, 0, 1}));
  EXPECT_TRUE(r.accuracy_finetuned.empty());
  EXPECT_EQ(planted_values, std::vector<float>(5, 0.0f));  // zero mode, seen by the oracle
  EXPECT_EQ(state_bytes(*p.obfuscated), before);

  // A wide delta flags genuine weights as well; every planted one is still found. No secrets →
  // no true positives. Fine-tuning records column 0 = after reset, then one per epoch.
  o.delta = 0.08;
  o.finetune_samples = 100;
  o.finetune_epochs = 2;
  o.batch = 20;
  auto r2 = exp::boundary_reset_attack(*p.obfuscated, p.layers, &secrets, splits.train, norm, o,
                                       acc);
  EXPECT_GT(r2.detected, 5);
  EXPECT_EQ(r2.true_positives, 5);
  ASSERT_EQ(r2.accuracy_finetuned.size(), 3u);
  EXPECT_EQ(r2.accuracy_finetuned[0], r2.accuracy_reset);
  auto r3 = exp::boundary_reset_attack(*p.obfuscated, p.layers, nullptr, splits.train, norm, o,
                                       acc);
  EXPECT_EQ(r3.true_positives, 0);
  EXPECT_EQ(r3.obfuscated, 0);
  EXPECT_EQ(r3.detected, r2.detected);
  EXPECT_EQ(r3.accuracy_finetuned, r2.accuracy_finetuned);  // seeded: same subset, same run
  EXPECT_EQ(state_bytes(*p.obfuscated), before);
}

// ---------------------------------------------------------------- the CLI

using CmdResult = nns::test::CliResult;
using nns::test::run_cli;

nlohmann::json last_json_line(const std::string& out) {
  auto end = out.find_last_not_of('\n');
  auto start = out.rfind('\n', end);
  return nlohmann::json::parse(out.substr(start == std::string::npos ? 0 : start + 1));
}

class AttackCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // An unregistered subcommand still answers --help (the root's help), so look for an option
    // of the attack command in it.
    auto help = run_cli("attack --help");
    available_ = help.code == 0 && help.out.find("--kind") != std::string::npos;
    if (!available_) return;
    dir_ = nns::test::fresh_temp_dir("nns_attack", "cli");
    auto r = run_cli("train --model lenet5 --dataset synthetic --epochs 1 --batch 32 --out " +
                     (dir_ / "m.safetensors").string());
    trained_ = r.code == 0;
    if (!trained_) std::fprintf(stderr, "%s\n", r.out.c_str());
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!available_) GTEST_SKIP() << "the attack command is not registered in this binary";
    ASSERT_TRUE(trained_);
  }
  static std::string weights() { return (dir_ / "m.safetensors").string(); }
  static inline bool available_ = false, trained_ = false;
  static inline fs::path dir_;
};

// The attack command runs the units of --kind; every unit key is an option (--k for
// attacks.norm_clip.k); the JSON holds each unit's group of the result file under "attacks".
TEST_F(AttackCli, NormClipJson) {
  auto r = run_cli("attack --kind norm_clip --weights " + weights() +
                       " --dataset synthetic --k 1,2 --global-range auto --json",
                   false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = last_json_line(r.out);
  for (auto key : {"kind", "weights", "dataset", "arch", "rule", "layers", "obfuscated_accuracy",
                   "attacks"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j["kind"], "norm_clip");
  const auto& nc = j["attacks"]["norm_clip"];
  EXPECT_EQ(nc["k"].size(), 2u);
  EXPECT_EQ(nc["accuracy"].size(), 2u);
  EXPECT_EQ(j["layers"].size(), 5u);
  EXPECT_LT(nc["global_lo"].get<double>(), nc["global_hi"].get<double>());
  ASSERT_EQ(nc["lines"]["column"].size(), 3u);
  EXPECT_EQ(nc["lines"]["column"][2], "norm_clip.global");
  const double g = nc["lines"]["value"][2].get<double>();
  EXPECT_TRUE(g >= 0 && g <= 1);
  // the table form, with an explicit range
  auto t = run_cli("attack --kind norm_clip --weights " + weights() +
                   " --dataset synthetic --k 1 --global-range -0.1,0.1");
  EXPECT_EQ(t.code, 0) << t.out;
  EXPECT_NE(t.out.find("norm clipping to [-0.1, 0.1]"), std::string::npos) << t.out;
}

TEST_F(AttackCli, FinetuneAndBoundaryResetWithSecrets) {
  auto r = run_cli("attack --kind finetune --weights " + weights() +
                       " --dataset synthetic --fractions 0.05 --epochs 1 --batch 32 --json",
                   false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = last_json_line(r.out);
  const auto& ft = j["attacks"]["finetune"];
  EXPECT_EQ(ft["accuracy"].size(), 2u);  // [1 fraction x (epoch 0, epoch 1)], flattened
  EXPECT_EQ(ft["scratch_accuracy"].size(), 2u);

  // Obfuscate by hand: three weights to new extremes, secrets by diff.
  auto orig = io::load_model(weights());
  auto obf = models::clone_model(*orig);
  set(*obf, "conv2.weight", 1, 3.0f);
  set(*obf, "fc1.weight", 2, -3.0f);
  set(*obf, "fc2.weight", 3, 3.0f);
  const auto obf_path = (dir_ / "obf.safetensors").string();
  const auto sec_path = (dir_ / "sec.safetensors").string();
  io::save_model(*obf, obf_path);
  splitter::write_secrets(sec_path, splitter::diff_secrets(*orig, *obf));
  r = run_cli("attack --kind boundary_reset --weights " + obf_path + " --secrets " + sec_path +
                  " --dataset synthetic --delta 1e-6 --samples 64 --epochs 1 --json",
              false);
  ASSERT_EQ(r.code, 0) << r.out;
  j = last_json_line(r.out);
  const auto& br = j["attacks"]["boundary_reset"];
  for (auto key : {"detected", "true_positives", "obfuscated", "accuracy_reset",
                   "accuracy_finetuned", "@lo", "@hi", "@delta", "@mode"})
    EXPECT_TRUE(br.contains(key)) << key;
  EXPECT_EQ(br["detected"], 3);
  EXPECT_EQ(br["true_positives"], 3);
  EXPECT_EQ(br["obfuscated"], 3);
  EXPECT_EQ(br["accuracy_finetuned"].size(), 2u);
  EXPECT_EQ(j["stealth"]["obfuscated_total"], 3);
  EXPECT_DOUBLE_EQ(br["@lo"].get<double>(), -3.0);

  // Without secrets the detector still runs; true positives are unknown (0).
  r = run_cli("attack --kind boundary_reset --weights " + obf_path +
                  " --dataset synthetic --delta 1e-6 --mode mean --json",
              false);
  ASSERT_EQ(r.code, 0) << r.out;
  j = last_json_line(r.out);
  EXPECT_EQ(j["attacks"]["boundary_reset"]["detected"], 3);
  EXPECT_EQ(j["attacks"]["boundary_reset"]["obfuscated"], 0);
  EXPECT_FALSE(j.contains("stealth"));
}

TEST_F(AttackCli, UsageErrorsExitTwo) {
  auto r = run_cli("attack --kind frobnicate --weights " + weights() + " --dataset synthetic");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("frobnicate"), std::string::npos) << r.out;
  for (const char* bad :
       {" --kind norm_clip --global-range 0.3,0.1",  // lo above hi
        " --kind boundary_reset --mode donor",         // no donor
        " --kind finetune --fractions 0,0.5",          // out of range
        " --kind norm_clip --resets zero",             // another unit's option
        " --kind norm_clip --k",                       // no value
        " --kind floor --budgets 100",                 // queries labelled by a victim, none given
        " --kind groupcover --victim WEIGHTS",         // reset donor, no --donor
        " --kind groupcover --victim WEIGHTS --donor WEIGHTS --queries web",
        " --kind groupcover --victim WEIGHTS --donor WEIGHTS --detector nope",
        " --kind groupcover --victim WEIGHTS --donor WEIGHTS --budgets 0,300",
        " --kind groupcover --victim WEIGHTS --donor WEIGHTS --resets donor,flip",
        " --kind groupcover --victim WEIGHTS --donor WEIGHTS --budgets 600"}) {
    std::string args = bad;
    for (size_t at; (at = args.find("WEIGHTS")) != std::string::npos;) args.replace(at, 7, weights());
    r = run_cli("attack --weights " + weights() + " --dataset synthetic" + args);
    EXPECT_EQ(r.code, 2) << bad << "\n" << r.out;
  }
  r = run_cli("attack --kind norm_clip --weights " + weights() + " --dataset cifar10");
  EXPECT_EQ(r.code, 2) << r.out;  // 1 channel vs 3
  r = run_cli("attack --kind norm_clip --weights " + (dir_ / "missing.safetensors").string() +
              " --dataset synthetic");
  EXPECT_EQ(r.code, 1) << r.out;
}

TEST_F(AttackCli, QueryAttacksShareTheQueriesAndGiveTheHeadline) {
  // The same trained model is victim (labels), donor and attacked model: no secrets, so no
  // detector scores; every number is an accuracy on the 500 - 40 held-out test images.
  auto r = run_cli("attack --kind groupcover,floor --dataset synthetic --weights " + weights() +
                       " --victim " + weights() + " --donor " + weights() +
                       " --resets donor,zero --budgets 20,40 --epochs 1 --sources scratch,donor"
                       " --lrs 0.05 --min-epochs 1 --min-steps 2 --json",
                   false);
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = last_json_line(r.out);
  const auto& a = j["attacks"];
  EXPECT_EQ(a["eval"]["samples"], 460);
  EXPECT_EQ(a["groupcover"]["budgets"], nlohmann::json::array({20, 40}));
  EXPECT_EQ(a["groupcover"]["resets"], nlohmann::json::array({"donor", "zero"}));
  // GroupCover's optimiser defaults when not given.
  EXPECT_EQ(a["groupcover"]["@epochs"], 1);
  EXPECT_NEAR(a["groupcover"]["@lr"].get<double>(), 0.1, 1e-7);
  EXPECT_NEAR(a["groupcover"]["@momentum"].get<double>(), 0.5, 1e-7);
  EXPECT_FALSE(a["groupcover"].contains("detectors"));
  EXPECT_EQ(a["groupcover"]["recovered"].size(), 4u);
  EXPECT_EQ(a["floor"]["sources"], nlohmann::json::array({"scratch", "donor"}));
  EXPECT_EQ(a["floor"]["accuracy"].size(), 4u);
  // The victim labels its own model's queries: the attacked model agrees with them.
  EXPECT_EQ(a["eval"]["victim"], a["eval"]["obfuscated"]);
  // Headline: the best attack with at most Q queries against the best floor at Q.
  EXPECT_EQ(a["headline"]["budgets"], nlohmann::json::array({20, 40}));
  for (size_t b = 0; b < 2; ++b) {
    const double best = a["headline"]["best_attack"][b], floor = a["headline"]["floor"][b];
    EXPECT_NEAR(a["headline"]["gap"][b].get<double>(), best - floor, 1e-12);
    EXPECT_GE(best, a["groupcover"]["accuracy_reset"][0].get<double>());  // 0 queries
  }
}

namespace {
// Per-channel mean and unbiased variance of an NCHW tensor, in double (the reference).
std::pair<std::vector<double>, std::vector<double>> channel_stats(const Tensor& t) {
  const auto v = t.to(Device::CPU).to_vector();
  const int64_t n = t.dim(0), c = t.dim(1), hw = t.numel() / (n * c);
  std::vector<double> mean(size_t(c), 0.0), var(size_t(c), 0.0);
  for (int64_t ch = 0; ch < c; ++ch) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < hw; ++k) s += v[size_t((i * c + ch) * hw + k)];
    const double m = s / double(n * hw);
    double q = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < hw; ++k) {
        const double d = v[size_t((i * c + ch) * hw + k)] - m;
        q += d * d;
      }
    mean[size_t(ch)] = m;
    var[size_t(ch)] = q / double(n * hw - 1);
  }
  return {mean, var};
}

nn::Module* module_named(models::Model& m, const std::string& name) {
  for (auto& [n, mod] : m.modules())
    if (n == name) return mod;
  throw std::runtime_error("no module " + name);
}
}  // namespace

TEST(BatchNormRecalibration, AveragesTheBatchStatistics) {
  // resnet20's bn1 normalises conv1's output: after recalibrating on 2 batches of 6 images its
  // running statistics are the mean of the two batches' statistics of conv1(x), computed here
  // with naive loops; every weight stays bit-identical and the model is back in eval mode.
  models::ModelSpec spec;
  spec.arch = "resnet20";
  auto m = models::build_model(spec, 3);
  auto splits = data::make_synthetic(20, 12, 1, 28, 10, 5);
  auto norm = data::normalization_for("synthetic");
  std::vector<Tensor> before;
  for (auto& [key, p] : m->parameters()) before.push_back(p->value.clone());

  // 19 in the blocks and the stem, 2 in the downsample shortcuts of layer2.0 and layer3.0.
  ASSERT_EQ(exp::recalibrate_batchnorm(*m, splits.test, 12, norm, 6, 0), 21);
  EXPECT_FALSE(module_named(*m, "bn1")->training());
  auto* bn1 = dynamic_cast<nn::BatchNorm2d*>(module_named(*m, "bn1"));
  ASSERT_NE(bn1, nullptr);
  EXPECT_FLOAT_EQ(bn1->momentum, 0.1f);
  size_t i = 0;
  for (auto& [key, p] : m->parameters())
    ASSERT_EQ(std::memcmp(p->value.raw(), before[i++].raw(), p->value.nbytes()), 0) << key;

  auto* conv1 = module_named(*m, "conv1");
  data::Loader loader(splits.test, norm, 6, false, 0);
  Tensor x, y;
  std::vector<double> mean(16, 0.0), var(16, 0.0);
  int batches = 0;
  while (loader.next(x, y)) {
    auto [bm, bv] = channel_stats(conv1->forward(x));
    for (size_t c = 0; c < 16; ++c) {
      mean[c] += bm[c] / 2;
      var[c] += bv[c] / 2;
    }
    ++batches;
  }
  ASSERT_EQ(batches, 2);
  const auto rm = bn1->running_mean.to_vector(), rv = bn1->running_var.to_vector();
  for (size_t c = 0; c < 16; ++c) {
    EXPECT_NEAR(rm[c], mean[c], 1e-4 * (1 + std::abs(mean[c]))) << c;
    EXPECT_NEAR(rv[c], var[c], 1e-4 * (1 + var[c])) << c;
  }
  EXPECT_THROW(exp::recalibrate_batchnorm(*m, splits.test, 13, norm, 6, 0), std::invalid_argument);

  // Without BatchNorm nothing is done.
  auto l = lenet();
  auto lv = tensor_of(*l, "fc1.weight").to_vector();
  EXPECT_EQ(exp::recalibrate_batchnorm(*l, splits.test, 12, norm, 6, 0), 0);
  EXPECT_EQ(tensor_of(*l, "fc1.weight").to_vector(), lv);
}


}  // namespace
