// A whole protect on a small generated dataset and a small model: finishes in seconds, drops
// accuracy towards chance, restores bit-exactly, and an interrupted search resumes.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/io/model_io.h"
#include "core/splitter/secrets.h"
#include "experiments/protect.h"
#include "experiments/trainer.h"

using namespace nns;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  data::Splits splits = data::make_synthetic(1200, 400, 1, 28, 10, 4);
  data::Normalization norm = data::normalization_for("synthetic");
  std::unique_ptr<models::Model> model;
  Fixture() {
    models::ModelSpec s;
    s.arch = "lenet5";
    model = models::build_model(s, 1);
    exp::TrainOptions o;
    o.epochs = 2;
    o.batch = 32;
    o.progress = false;
    exp::train_model(*model, splits.train, nullptr, norm, o);
  }
};

exp::Config small_budget(std::vector<std::string> extra = {}) {
  std::vector<std::string> sets = {"controller.hidden=32",       "controller.updates=2",
                                   "controller.episodes_per_update=3", "splitter.val_size=300",
                                   "splitter.eval_every=10",     "splitter.max_steps=60",
                                   "splitter.target_per_layer=60", "splitter.lr=0.5",
                                   "splitter.batch=64"};
  sets.insert(sets.end(), extra.begin(), extra.end());
  static const exp::Schema schema = exp::method_schema();
  return exp::Config::load(schema, "", sets);
}

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("nns_protect_" + name);
  fs::remove_all(d);
  return d;
}

TEST(Protect, SmallModelDropsToChanceAndRestoresExactly) {
  Fixture f;
  std::vector<Tensor> original;
  for (auto& e : f.model->state()) original.push_back(e.tensor->clone());
  exp::ProtectInputs in;
  in.model = f.model.get();
  in.train = &f.splits.train;
  in.test = &f.splits.test;
  in.norm = f.norm;
  in.dataset_name = "synthetic";
  in.out_dir = fresh_dir("chance").string();
  in.progress = false;
  auto r = exp::protect(in, small_budget());
  EXPECT_GE(r.original_accuracy, 0.95);
  EXPECT_LE(r.obfuscated_accuracy, 0.25) << "accuracy did not collapse";
  EXPECT_TRUE(r.restored_bit_exact);
  EXPECT_DOUBLE_EQ(r.restored_accuracy, r.original_accuracy);
  EXPECT_EQ(r.episodes, 6);
  EXPECT_GT(r.obfuscated_weights, 0);
  EXPECT_LT(double(r.obfuscated_weights) / double(r.total_weights), 0.01);
  ASSERT_TRUE(fs::exists(r.obfuscated_path));
  ASSERT_TRUE(fs::exists(r.secrets_path));
  ASSERT_TRUE(fs::exists(r.trajectory_path));
  EXPECT_FALSE(fs::exists(fs::path(in.out_dir) / "search_state.safetensors"));
  // The obfuscated file differs from the original in exactly the secret entries.
  auto obf = io::load_model(r.obfuscated_path);
  // The model handed in comes back holding the obfuscated weights (the restored accuracy is
  // measured through it, with the restored values put in and taken out again).
  for (size_t i = 0; i < original.size(); ++i)
    ASSERT_EQ(std::memcmp(obf->state()[i].tensor->raw(), f.model->state()[i].tensor->raw(),
                          original[i].nbytes()),
              0)
        << f.model->state()[i].key;
  auto sec = splitter::read_secrets(r.secrets_path);
  EXPECT_EQ(sec.total(), r.obfuscated_weights);
  splitter::apply_secrets(*obf, sec);
  for (size_t i = 0; i < original.size(); ++i)
    ASSERT_EQ(std::memcmp(obf->state()[i].tensor->raw(), original[i].raw(), original[i].nbytes()), 0)
        << obf->state()[i].key;
}

TEST(Protect, RandomPolicyAndInterruptedSearchResumes) {
  Fixture f;
  exp::ProtectInputs in;
  in.model = f.model.get();
  in.train = &f.splits.train;
  in.test = &f.splits.test;
  in.norm = f.norm;
  in.dataset_name = "synthetic";
  in.out_dir = fresh_dir("resume").string();
  in.progress = false;
  in.seed = 3;
  auto cfg = small_budget({"controller.kind=random"});
  // Reference: uninterrupted.
  auto ref_model = models::build_model(f.model->spec());
  for (size_t i = 0; i < f.model->state().size(); ++i)
    ref_model->state()[i].tensor->copy_from(*f.model->state()[i].tensor);
  exp::ProtectInputs ref_in = in;
  ref_in.model = ref_model.get();
  ref_in.out_dir = fresh_dir("resume_ref").string();
  auto ref = exp::protect(ref_in, cfg);
  // Stopped (as by SIGTERM) once the first update and its state are saved.
  std::atomic<bool> stop{false};
  in.stop_flag = &stop;
  in.on_update_end = [&](int u) { if (u == 1) stop = true; };
  auto r0 = exp::protect(in, cfg);
  EXPECT_TRUE(r0.interrupted);
  EXPECT_EQ(r0.episodes, 3);
  ASSERT_TRUE(fs::exists(fs::path(in.out_dir) / "search_state.safetensors"));
  EXPECT_FALSE(fs::exists(fs::path(in.out_dir) / "obfuscated.safetensors"));
  // The rerun resumes from update 2 and ends exactly like the uninterrupted search.
  // The interrupted run left f.model pretrained (episodes restore in place): start from it.
  auto resumed = models::build_model(f.model->spec());
  for (size_t i = 0; i < f.model->state().size(); ++i)
    resumed->state()[i].tensor->copy_from(*f.model->state()[i].tensor);
  in.model = resumed.get();
  in.stop_flag = nullptr;
  in.on_update_end = nullptr;
  in.resume = true;
  auto r = exp::protect(in, cfg);
  EXPECT_FALSE(r.interrupted);
  EXPECT_EQ(r.episodes, ref.episodes);
  EXPECT_EQ(r.best_filters, ref.best_filters);
  EXPECT_EQ(r.obfuscated_weights, ref.obfuscated_weights);
  EXPECT_DOUBLE_EQ(r.obfuscated_accuracy, ref.obfuscated_accuracy);
}

std::string file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// A finished output folder is never replaced by a run with other settings: resume or not, with
// another seed, configuration or input model, protect refuses (UsageError naming what differs)
// and the secrets survive byte for byte. The same settings with --resume redo the same result.
TEST(Protect, FinishedOutputIsNeverOverwrittenWithOtherSettings) {
  Fixture f;
  auto pretrained = models::clone_model(*f.model);
  exp::ProtectInputs in;
  in.train = &f.splits.train;
  in.test = &f.splits.test;
  in.norm = f.norm;
  in.dataset_name = "synthetic";
  in.out_dir = fresh_dir("guard").string();
  in.progress = false;
  in.seed = 4;
  auto cfg = small_budget({"controller.kind=random", "controller.updates=1"});
  auto fresh_model = [&] { return models::clone_model(*pretrained); };
  auto m0 = fresh_model();
  in.model = m0.get();
  auto first = exp::protect(in, cfg);
  ASSERT_TRUE(first.restored_bit_exact);
  const fs::path secrets = fs::path(in.out_dir) / "secrets.safetensors";
  const fs::path obf = fs::path(in.out_dir) / "obfuscated.safetensors";
  const std::string secrets_before = file_bytes(secrets), obf_before = file_bytes(obf);
  auto expect_refused = [&](exp::ProtectInputs run, const exp::Config& c, const std::string& names) {
    auto m = fresh_model();
    run.model = m.get();
    try {
      exp::protect(run, c);
      ADD_FAILURE() << "not refused (" << names << ")";
    } catch (const exp::UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(names), std::string::npos) << e.what();
    }
    EXPECT_EQ(file_bytes(secrets), secrets_before) << "secrets changed (" << names << ")";
    EXPECT_EQ(file_bytes(obf), obf_before);
  };
  exp::ProtectInputs other_seed = in;
  other_seed.seed = 5;
  other_seed.resume = true;
  expect_refused(other_seed, cfg, "seed 4 -> 5");
  other_seed.resume = false;
  expect_refused(other_seed, cfg, "seed 4 -> 5");
  exp::ProtectInputs same = in;
  same.resume = true;
  expect_refused(same, small_budget({"controller.kind=random", "controller.updates=1",
                                     "splitter.method=permute"}),
                 "splitter.method nnsplitter -> permute");
  // Other input weights: one weight nudged.
  {
    auto m = fresh_model();
    m->parameters()[0].second->value.f32()[0] += 0.5f;
    exp::ProtectInputs run = same;
    run.model = m.get();
    EXPECT_THROW(exp::protect(run, cfg), exp::UsageError);
    EXPECT_EQ(file_bytes(secrets), secrets_before);
  }
  // The same settings without --resume: refused as before; with --resume: the same result.
  exp::ProtectInputs again = in;
  expect_refused(again, cfg, "exists");
  auto m1 = fresh_model();
  same.model = m1.get();
  auto redo = exp::protect(same, cfg);
  EXPECT_EQ(redo.fingerprint, first.fingerprint);
  EXPECT_EQ(file_bytes(obf), obf_before);
  // A folder made before a key existed (its record lacks the key): at the key's default it is
  // the same run (resumed, same result); at another value the difference is named.
  {
    const fs::path record = fs::path(in.out_dir) / "protect_settings.json";
    nlohmann::json j = nlohmann::json::parse(file_bytes(record));
    ASSERT_TRUE(j["config"].contains("splitter.precision"));
    j["config"].erase("splitter.precision");
    j["config"].erase("splitter.l1");
    std::ofstream(record) << j.dump();
    expect_refused(same, small_budget({"controller.kind=random", "controller.updates=1",
                                       "splitter.l1=0.5"}),
                   "splitter.l1 (absent) -> 0.5");
    auto m2 = fresh_model();
    same.model = m2.get();
    EXPECT_EQ(exp::protect(same, cfg).fingerprint, first.fingerprint);
  }
  // A finished result whose settings record is missing is refused too.
  fs::remove(fs::path(in.out_dir) / "protect_settings.json");
  expect_refused(same, cfg, "protect_settings.json");
}

}  // namespace
