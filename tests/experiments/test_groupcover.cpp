// The GroupCover protocol (experiments/groupcover.h): detectors on planted weights with known
// precision and recall, resets, query splits, knockoff labels from the victim, the protocol end
// to end on synthetic data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "core/splitter/secrets.h"
#include "experiments/groupcover.h"
#include "experiments/trainer.h"

using namespace nns;

namespace {

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

std::vector<float> values(models::Model& m, const std::string& key) {
  return tensor_of(m, key).to_vector();
}

void put(models::Model& m, const std::string& key, const std::vector<float>& v) {
  Tensor& t = tensor_of(m, key);
  t.copy_from(Tensor::from_vector(v, t.shape()));
}

// Every trainable weight set to a smooth background inside ±0.01 (no two within 1e-9 of the
// planted values below), so that only what a test plants sits at the extremes.
void background(models::Model& m) {
  int64_t n = 0;
  for (auto& [key, p] : m.parameters()) {
    std::vector<float> v(size_t(p->value.numel()));
    for (auto& x : v) x = 0.01f * float(std::sin(0.37 * double(n++)));
    put(m, key, v);
  }
}

// A planted obfuscation: value `v` at `index` of `key`; `secret` says whether the secrets list it.
struct Plant {
  std::string key;
  int64_t index;
  float value;
  bool secret;
};

splitter::Secrets plant(models::Model& m, const std::vector<Plant>& plants) {
  std::map<std::string, std::vector<int64_t>> sec;
  for (const auto& p : plants) {
    auto v = values(m, p.key);
    v[size_t(p.index)] = p.value;
    put(m, p.key, v);
    if (p.secret) sec[p.key].push_back(p.index);
  }
  splitter::Secrets s;
  for (auto& [key, idx] : sec) {
    std::sort(idx.begin(), idx.end());
    s.tensors.push_back({key, idx, std::vector<float>(idx.size(), 0.0f)});
  }
  return s;
}

// The NNSplitter spike: 20 secrets at each shared bound ±0.3 (conv2 and fc1).
std::vector<Plant> bound_spike() {
  std::vector<Plant> plants;
  for (int i = 0; i < 20; ++i) plants.push_back({"conv2.weight", 7 * i, 0.3f, true});
  for (int i = 0; i < 20; ++i) plants.push_back({"fc1.weight", 11 * i + 1, -0.3f, true});
  return plants;
}

}  // namespace

TEST(GroupCover, TrainableKeysAreTheParameters) {
  auto m = lenet();
  auto keys = exp::trainable_keys(*m);
  EXPECT_EQ(keys.size(), m->parameters().size());
  EXPECT_EQ(keys.front(), "conv1.weight");
  EXPECT_EQ(keys.back(), "fc3.bias");
}

TEST(GroupCover, GlobalExtremePercentileOnPlantedWeights) {
  auto m = lenet();
  background(*m);
  // 20 secrets at each bound ±0.3 (the NNSplitter spike), 5 secrets hidden at 0.2 (not at an
  // end: missed), 3 innocent weights within 2·eps = 4e-3 of the upper end (false positives) and
  // 2 just outside it (not flagged).
  std::vector<Plant> plants = bound_spike();
  for (int i = 0; i < 5; ++i) plants.push_back({"fc2.weight", 13 * i, 0.2f, true});
  for (int i = 0; i < 3; ++i) plants.push_back({"fc1.weight", 5000 + i, 0.2965f, false});
  for (int i = 0; i < 2; ++i) plants.push_back({"fc1.weight", 6000 + i, 0.2955f, false});
  auto secrets = plant(*m, plants);
  ASSERT_EQ(secrets.total(), 45);

  auto d = exp::make_detector("extreme_percentile", {});
  EXPECT_EQ(d->name(), "extreme_percentile");
  const auto flagged = d->detect(*m, exp::trainable_keys(*m));
  EXPECT_EQ(exp::weight_count(flagged), 43);
  std::set<int64_t> fc1(flagged.at("fc1.weight").begin(), flagged.at("fc1.weight").end());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(fc1.count(5000 + i));
  for (int i = 0; i < 2; ++i) EXPECT_FALSE(fc1.count(6000 + i));
  EXPECT_FALSE(flagged.count("fc2.weight"));

  auto s = exp::score_detection(d->name(), flagged, secrets);
  EXPECT_EQ(s.flagged, 43);
  EXPECT_EQ(s.true_positives, 40);
  EXPECT_EQ(s.secrets, 45);
  EXPECT_DOUBLE_EQ(s.precision, 40.0 / 43);
  EXPECT_DOUBLE_EQ(s.recall, 40.0 / 45);

  // A larger eps reaches the 0.2955 pair too: precision drops, recall stays.
  exp::DetectorParams wide;
  wide.eps = 2.5e-3;
  auto s2 = exp::score_detection(
      "w", exp::make_detector("extreme_percentile", wide)->detect(*m, exp::trainable_keys(*m)),
      secrets);
  EXPECT_EQ(s2.flagged, 45);
  EXPECT_DOUBLE_EQ(s2.recall, 40.0 / 45);
}

TEST(GroupCover, WeightsScopeLeavesOutBiasesThatHideTheUpperBound) {
  // A bias above the planted upper bound (BatchNorm scales play this part in a ResNet) becomes
  // the global upper end of the "trainable" scan, which then misses every secret at +0.3;
  // scanning only the weight tensors finds both bounds.
  auto m = lenet();
  background(*m);
  std::vector<Plant> plants = bound_spike();
  plants.push_back({"fc1.bias", 3, 0.9f, false});
  auto secrets = plant(*m, plants);

  const auto weights = exp::scanned_keys(*m, "weights");
  EXPECT_EQ(weights, (std::vector<std::string>{"conv1.weight", "conv2.weight", "fc1.weight",
                                               "fc2.weight", "fc3.weight"}));
  EXPECT_EQ(exp::scanned_keys(*m, "trainable"), exp::trainable_keys(*m));
  EXPECT_THROW(exp::scanned_keys(*m, "buffers"), std::invalid_argument);

  auto d = exp::make_detector("extreme_percentile", {});
  auto all = exp::score_detection("a", d->detect(*m, exp::trainable_keys(*m)), secrets);
  EXPECT_EQ(all.true_positives, 20);  // the lower bound only
  EXPECT_EQ(all.flagged, 21);         // and the bias itself
  auto w = exp::score_detection("w", d->detect(*m, weights), secrets);
  EXPECT_EQ(w.true_positives, 40);
  EXPECT_EQ(w.flagged, 40);
  EXPECT_DOUBLE_EQ(w.recall, 1.0);
}

TEST(GroupCover, PercentileEndsFollowGroupCoversIndexing) {
  // lenet5 has 61706 weights; percentile 0.01 (%) -> lower = floor(n·1e-4) = 6, lo = sorted[5],
  // hi = sorted[floor(n·(1 − 1e-4))]: both inside 30 distinct planted values at each end. With
  // eps tiny, exactly one weight per end is flagged, and the reference computes which by hand.
  models::ModelSpec spec;
  spec.arch = "lenet5";
  auto m = models::build_model(spec, 2);
  background(*m);
  std::vector<Plant> plants;
  for (int i = 0; i < 30; ++i) plants.push_back({"fc1.weight", i, -0.5f + 1e-4f * float(i), true});
  for (int i = 0; i < 30; ++i) plants.push_back({"fc1.weight", 100 + i, 0.5f - 1e-4f * float(i), true});
  auto secrets = plant(*m, plants);
  const auto keys = exp::trainable_keys(*m);
  int64_t n = 0;
  for (const auto& k : keys) n += tensor_of(*m, k).numel();
  exp::DetectorParams p;
  p.percentile = 0.01;
  p.eps = 1e-9;
  // Reference by hand: sorted ascending, lower_idx = floor(n·p/100).
  std::vector<float> all;
  for (const auto& k : keys) {
    auto v = values(*m, k);
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  const auto lower = size_t(double(n) * 1e-4), upper = size_t(double(n) * (1 - 1e-4));
  const float lo = all[lower - 1], hi = all[upper];
  int64_t expected = 0;
  for (float x : all) expected += std::abs(double(x) - lo) <= 2e-9 || std::abs(double(x) - hi) <= 2e-9;
  const auto flagged = exp::make_detector("extreme_percentile", p)->detect(*m, keys);
  EXPECT_EQ(exp::weight_count(flagged), expected);
  EXPECT_GE(expected, 2);  // one value at each end
  // Both ends are planted values, so precision is 1.
  EXPECT_DOUBLE_EQ(exp::score_detection("x", flagged, secrets).precision, 1.0);
}

TEST(GroupCover, PerLayerPercentileFindsWhatTheGlobalTestMisses) {
  auto m = lenet();
  background(*m);
  // conv1 carries the global extremes ±0.3; conv2 a layer-local spike at ±0.1.
  std::vector<Plant> plants;
  for (int i = 0; i < 6; ++i) plants.push_back({"conv1.weight", 3 * i, i % 2 ? 0.3f : -0.3f, true});
  for (int i = 0; i < 10; ++i) plants.push_back({"conv2.weight", 9 * i, i % 2 ? 0.1f : -0.1f, true});
  auto secrets = plant(*m, plants);
  const std::vector<std::string> keys = {"conv1.weight", "conv2.weight"};
  auto g = exp::score_detection(
      "g", exp::make_detector("extreme_percentile", {})->detect(*m, keys), secrets);
  EXPECT_EQ(g.flagged, 6);
  EXPECT_DOUBLE_EQ(g.precision, 1.0);
  EXPECT_DOUBLE_EQ(g.recall, 6.0 / 16);
  auto l = exp::score_detection(
      "l", exp::make_detector("extreme_percentile_layer", {})->detect(*m, keys), secrets);
  EXPECT_EQ(l.flagged, 16);
  EXPECT_DOUBLE_EQ(l.precision, 1.0);
  EXPECT_DOUBLE_EQ(l.recall, 1.0);
}

TEST(GroupCover, CvBinScanFindsTheSharedBoundSpike) {
  auto m = lenet();
  background(*m);
  // 30 weights exactly at each of two shared bounds: two bins of identical values (CV 0); the
  // background bins have CV > 0. The background also reaches the range ends nowhere near.
  std::vector<Plant> plants;
  for (int i = 0; i < 30; ++i) plants.push_back({"fc1.weight", 17 * i, 0.25f, true});
  for (int i = 0; i < 30; ++i) plants.push_back({"fc2.weight", 19 * i, -0.2f, true});
  // Two lone extremes set the range; they are single weights (below min_count): never flagged.
  plants.push_back({"fc3.weight", 0, 0.4f, false});
  plants.push_back({"fc3.weight", 1, -0.4f, false});
  auto secrets = plant(*m, plants);
  auto d = exp::make_detector("cv_bins", {});
  EXPECT_EQ(d->name(), "cv_bins");
  auto s = exp::score_detection(d->name(), d->detect(*m, exp::trainable_keys(*m)), secrets);
  EXPECT_EQ(s.flagged, 60);
  EXPECT_DOUBLE_EQ(s.precision, 1.0);
  EXPECT_DOUBLE_EQ(s.recall, 1.0);
  // One bin only: exactly one of the two spikes.
  exp::DetectorParams one;
  one.bins = 1;
  EXPECT_EQ(exp::weight_count(exp::make_detector("cv_bins", one)->detect(*m, exp::trainable_keys(*m))),
            30);
}

TEST(GroupCover, DetectorsRejectBadSettingsAndUnknownNames) {
  exp::DetectorParams p;
  EXPECT_THROW(exp::make_detector("nope", p), std::invalid_argument);
  p.percentile = 0;
  EXPECT_THROW(exp::make_detector("extreme_percentile", p), std::invalid_argument);
  p = {};
  p.eps = -1;
  EXPECT_THROW(exp::make_detector("extreme_percentile_layer", p), std::invalid_argument);
  p = {};
  p.bin_fraction = 1.5;
  EXPECT_THROW(exp::make_detector("cv_bins", p), std::invalid_argument);
  for (const auto& n : exp::detector_names()) EXPECT_EQ(exp::make_detector(n, {})->name(), n);
  auto m = lenet();
  EXPECT_THROW(exp::make_detector("cv_bins", {})->detect(*m, {"no.such"}), std::invalid_argument);
}

TEST(GroupCover, ScoreWithoutFlagsOrSecretsIsNaN) {
  splitter::Secrets none;
  auto s = exp::score_detection("x", {}, none);
  EXPECT_TRUE(std::isnan(s.precision));
  EXPECT_TRUE(std::isnan(s.recall));
}

TEST(GroupCover, ResetsZeroMeanDonorTouchOnlyFlaggedWeights) {
  auto m = lenet(1), donor = lenet(2);
  const exp::WeightSet flagged = {{"conv1.weight", {0, 5, 9}}, {"fc3.bias", {2}}};
  for (const auto& mode : exp::reset_modes()) {
    auto c = models::clone_model(*m);
    exp::reset_weights(*c, flagged, mode, donor.get());
    for (auto& [key, p] : c->parameters()) {
      const auto before = values(*m, key), after = values(*c, key), d = values(*donor, key);
      std::set<int64_t> f;
      if (flagged.count(key)) f.insert(flagged.at(key).begin(), flagged.at(key).end());
      double sum = 0;
      int n = 0;
      for (size_t i = 0; i < before.size(); ++i)
        if (!f.count(int64_t(i))) sum += before[i], ++n;
      for (size_t i = 0; i < before.size(); ++i) {
        if (!f.count(int64_t(i))) {
          EXPECT_EQ(after[i], before[i]) << mode << " " << key << " " << i;
        } else if (mode == "zero") {
          EXPECT_EQ(after[i], 0.0f);
        } else if (mode == "mean") {
          EXPECT_NEAR(after[i], sum / n, 1e-7) << key;
        } else {
          EXPECT_EQ(after[i], d[i]);
        }
      }
    }
  }
  auto c = models::clone_model(*m);
  EXPECT_THROW(exp::reset_weights(*c, flagged, "donor", nullptr), std::invalid_argument);
  EXPECT_THROW(exp::reset_weights(*c, flagged, "bogus"), std::invalid_argument);
  EXPECT_THROW(exp::reset_weights(*c, {{"conv1.weight", {1000000}}}, "zero"),
               std::invalid_argument);
  models::ModelSpec other;
  other.arch = "lenet5";
  other.num_classes = 7;
  auto wrong = models::build_model(other, 0);
  EXPECT_THROW(exp::reset_weights(*c, {{"fc3.bias", {0}}}, "donor", wrong.get()),
               std::invalid_argument);
}

TEST(GroupCover, QueriesFromTheTestSplitAreHeldOutOfTheEvaluation) {
  auto splits = data::make_synthetic(300, 200, 1, 28, 10, 1);
  auto q = exp::split_queries(splits, "test", 50, 3);
  EXPECT_EQ(q.pool.size(), 50);
  EXPECT_EQ(q.eval.size(), 150);
  // Pool and eval partition the test split: every test image appears exactly once.
  std::multiset<std::string> all, parts;
  for (int64_t i = 0; i < splits.test.size(); ++i)
    all.insert(std::string((const char*)splits.test.image(i), size_t(splits.test.image_bytes())));
  for (const auto* d : {&q.pool, &q.eval})
    for (int64_t i = 0; i < d->size(); ++i)
      parts.insert(std::string((const char*)d->image(i), size_t(d->image_bytes())));
  EXPECT_EQ(all, parts);
  auto t = exp::split_queries(splits, "train", 50, 3);
  EXPECT_EQ(t.pool.size(), 50);
  EXPECT_EQ(t.eval.size(), splits.test.size());
  EXPECT_THROW(exp::split_queries(splits, "test", 200, 0), std::invalid_argument);
  EXPECT_THROW(exp::split_queries(splits, "web", 10, 0), std::invalid_argument);
}

TEST(GroupCover, KnockoffLabelsComeFromTheVictim) {
  auto splits = data::make_synthetic(300, 300, 1, 28, 10, 2);
  auto norm = data::normalization_for("synthetic");
  // A victim that answers class 3 to everything: fc3 weights 0, bias one-hot on 3.
  auto victim = lenet(5);
  put(*victim, "fc3.weight", std::vector<float>(size_t(tensor_of(*victim, "fc3.weight").numel()), 0.0f));
  std::vector<float> bias(10, 0.0f);
  bias[3] = 5.0f;
  put(*victim, "fc3.bias", bias);
  auto q = exp::split_queries(splits, "test", 120, 0);
  auto labelled = exp::label_queries(q.pool, victim.get(), norm, 0);
  ASSERT_EQ(labelled.size(), 120);
  EXPECT_EQ(labelled.images, q.pool.images);
  for (int32_t y : labelled.labels) EXPECT_EQ(y, 3);
  const auto truth = exp::label_queries(q.pool, nullptr, norm, 0);
  EXPECT_EQ(truth.labels, q.pool.labels);
  EXPECT_GT(std::count_if(truth.labels.begin(), truth.labels.end(), [](int32_t y) { return y != 3; }),
            60);

  // Trained on the victim's answers, the student learns the victim (class 3), not the truth.
  auto student = lenet(6);
  exp::AccuracyFn says3 = [&](models::Model& m) {
    auto r = exp::evaluate(m, q.eval, norm, 256, 0, true);
    return double(std::count(r.predictions.begin(), r.predictions.end(), 3)) /
           double(r.predictions.size());
  };
  exp::KnockoffOptions o;
  o.budgets = {120};
  o.epochs = 3;
  o.lr = 0.05f;
  auto r = exp::knockoff_train(*student, labelled, norm, o, says3);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_GT(r[0], 0.95);
  o.budgets = {121};
  EXPECT_THROW(exp::knockoff_train(*student, labelled, norm, o, says3), std::invalid_argument);
}

TEST(GroupCover, ProtocolRecoversAPlantedObfuscation) {
  auto splits = data::make_synthetic(600, 300, 1, 28, 10, 4);
  auto norm = data::normalization_for("synthetic");
  exp::TrainOptions t;
  t.epochs = 3;
  t.batch = 32;
  t.lr = 0.05f;
  t.progress = false;
  auto victim = lenet(7), donor = lenet(8);
  exp::train_model(*victim, splits.train, nullptr, norm, t);
  t.seed = 1;
  exp::train_model(*donor, splits.train, nullptr, norm, t);
  // NNSplitter-like damage: 80 weights of conv1/conv2 pushed to the shared bounds ±3.
  auto obf = models::clone_model(*victim);
  for (const char* key : {"conv1.weight", "conv2.weight"}) {
    auto v = values(*obf, key);
    for (int i = 0; i < 40; ++i) v[size_t(i * 3)] = i % 2 ? 3.0f : -3.0f;
    put(*obf, key, v);
  }
  auto secrets = splitter::diff_secrets(*victim, *obf);
  ASSERT_EQ(secrets.total(), 80);
  auto q = exp::split_queries(splits, "test", 100, 0);
  exp::AccuracyFn acc = [&](models::Model& m) { return exp::evaluate(m, q.eval, norm).accuracy(); };
  obf->set_training(false);
  victim->set_training(false);
  const double obf_acc = acc(*obf), victim_acc = acc(*victim);
  ASSERT_GT(victim_acc, 0.8);
  ASSERT_LT(obf_acc, victim_acc - 0.3);
  const auto transfer = exp::label_queries(q.pool, victim.get(), norm, 0);

  exp::GroupCoverOptions o;
  o.resets = {"donor", "zero"};
  o.knockoff.budgets = {50, 100};
  o.knockoff.epochs = 2;
  o.knockoff.lr = 0.02f;
  auto r = exp::groupcover_attack(*obf, &secrets, donor.get(), transfer, norm, o, acc);
  ASSERT_EQ(r.scores.size(), exp::detector_names().size());
  EXPECT_EQ(r.scores[0].detector, "extreme_percentile");
  EXPECT_DOUBLE_EQ(r.scores[0].recall, 1.0);
  EXPECT_DOUBLE_EQ(r.scores[0].precision, 1.0);
  EXPECT_EQ(r.resets, o.resets);
  ASSERT_EQ(r.recovered.size(), 2u);
  ASSERT_EQ(r.recovered[0].size(), 2u);
  // The donor reset alone puts back the donor's weights at exactly the secret positions.
  EXPECT_GT(r.accuracy_reset[0], obf_acc + 0.2);
  for (double a : r.recovered[0]) EXPECT_GT(a, victim_acc - 0.15);
  // The obfuscated model was not touched.
  EXPECT_EQ(values(*obf, "conv1.weight")[3], 3.0f);

  o.resets = {"donor"};
  EXPECT_THROW(exp::groupcover_attack(*obf, &secrets, nullptr, transfer, norm, o, acc),
               std::invalid_argument);
}

