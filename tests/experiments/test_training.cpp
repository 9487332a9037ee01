// Training end to end on a small generated dataset: lenet5 learns it in seconds; a resumed run
// continues from its checkpoint.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <string>

#include <unistd.h>

#include "experiments/trainer.h"

using namespace nns;

namespace {

models::ModelSpec lenet_spec() {
  models::ModelSpec s;
  s.arch = "lenet5";
  s.in_channels = 1;
  s.input_size = 28;
  s.num_classes = 10;
  return s;
}

TEST(Training, Lenet5FitsSyntheticDataToNearlyHundredPercent) {
  auto splits = data::make_synthetic(600, 200, 1, 28, 10, 7);
  auto norm = data::normalization_for("synthetic");
  auto model = models::build_model(lenet_spec(), 3);
  exp::TrainOptions o;
  o.epochs = 4;
  o.batch = 32;
  o.lr = 0.05f;
  o.progress = false;
  auto before = exp::evaluate(*model, splits.train, norm);
  auto r = exp::train_model(*model, splits.train, &splits.test, norm, o);
  ASSERT_EQ(r.epochs.size(), 4u);
  auto after = exp::evaluate(*model, splits.train, norm);
  EXPECT_LT(before.accuracy(), 0.5);
  EXPECT_GE(after.accuracy(), 0.98) << "train accuracy after 4 epochs";
  EXPECT_GE(r.epochs.back().test_accuracy, 0.9);
  EXPECT_LT(r.epochs.back().train_loss, r.epochs.front().train_loss);
}

TEST(Training, SameSeedSameWeights) {
  auto splits = data::make_synthetic(128, 32, 1, 28, 10, 1);
  auto norm = data::normalization_for("synthetic");
  exp::TrainOptions o;
  o.epochs = 1;
  o.batch = 32;
  o.progress = false;
  o.seed = 5;
  auto a = models::build_model(lenet_spec(), 5);
  auto b = models::build_model(lenet_spec(), 5);
  exp::train_model(*a, splits.train, nullptr, norm, o);
  exp::train_model(*b, splits.train, nullptr, norm, o);
  for (size_t i = 0; i < a->state().size(); ++i) {
    auto va = a->state()[i].tensor->to_vector(), vb = b->state()[i].tensor->to_vector();
    ASSERT_EQ(va, vb) << a->state()[i].key;
  }
}

TEST(Training, InterruptedRunResumesFromCheckpoint) {
  auto splits = data::make_synthetic(128, 32, 1, 28, 10, 2);
  auto norm = data::normalization_for("synthetic");
  auto dir = std::filesystem::temp_directory_path() /
             ("nns_resume_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string ckpt = (dir / "m.ckpt").string();
  std::filesystem::remove(ckpt);
  exp::TrainOptions o;
  o.epochs = 2;
  o.batch = 32;
  o.progress = false;
  o.checkpoint = ckpt;
  // Reference: two uninterrupted epochs.
  auto ref = models::build_model(lenet_spec(), 9);
  exp::TrainOptions oref = o;
  oref.checkpoint = "";
  exp::train_model(*ref, splits.train, nullptr, norm, oref);
  // The first run stops (as on SIGTERM) once epoch 1 and its checkpoint are done.
  auto m = models::build_model(lenet_spec(), 9);
  exp::TrainOptions part = o;
  std::atomic<bool> stop{false};
  part.stop_flag = &stop;
  part.on_epoch_end = [&](int e) { if (e == 1) stop = true; };
  auto r1 = exp::train_model(*m, splits.train, nullptr, norm, part);
  ASSERT_TRUE(r1.interrupted);
  ASSERT_TRUE(std::filesystem::exists(ckpt));
  EXPECT_EQ(r1.epochs.size(), 1u);
  // Resume in a fresh model: must end bit-identical to the uninterrupted reference.
  auto resumed = models::build_model(lenet_spec(), 123);  // different init: all state comes from the checkpoint
  auto r2 = exp::train_model(*resumed, splits.train, nullptr, norm, o);
  EXPECT_EQ(r2.resumed_from_epoch, 1);
  EXPECT_FALSE(r2.interrupted);
  // The history covers both epochs: the first from the checkpoint, as the first run saw it.
  ASSERT_EQ(r2.epochs.size(), 2u);
  EXPECT_EQ(r2.epochs[0].epoch, 1);
  EXPECT_EQ(r2.epochs[0].train_loss, r1.epochs[0].train_loss);
  EXPECT_EQ(r2.epochs[0].train_accuracy, r1.epochs[0].train_accuracy);
  EXPECT_EQ(r2.epochs[1].epoch, 2);
  for (size_t i = 0; i < ref->state().size(); ++i)
    ASSERT_EQ(ref->state()[i].tensor->to_vector(), resumed->state()[i].tensor->to_vector())
        << ref->state()[i].key;
  std::filesystem::remove_all(dir);
}

}  // namespace

namespace {

// `trainable` leaves every other parameter bit-identical (the knockoff unit's bn_affine).
TEST(Training, OnlyTheTrainableParametersMove) {
  auto splits = data::make_synthetic(64, 16, 1, 28, 10, 7);
  auto norm = data::normalization_for("synthetic");
  models::ModelSpec s = lenet_spec();
  auto model = models::build_model(s, 3);
  std::vector<std::pair<std::string, std::vector<float>>> before;
  for (auto& [key, p] : model->parameters()) before.emplace_back(key, p->value.to_vector());
  exp::TrainOptions o;
  o.epochs = 1;
  o.batch = 32;
  o.progress = false;
  o.trainable = [](const std::string& key) { return key == "fc3.bias"; };
  exp::train_model(*model, splits.train, nullptr, norm, o);
  size_t i = 0;
  for (auto& [key, p] : model->parameters()) {
    const bool same = p->value.to_vector() == before[i++].second;
    EXPECT_EQ(same, key != "fc3.bias") << key;
  }
}

}  // namespace
