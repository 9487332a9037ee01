// The attack units and the suite (experiments/attack_suite.h, attack_*.cpp): the table and its
// keys, the headline rule, the honest training (learning rate by hold-out on the attacker's own
// queries), the knockoff variants, and the floor's cache, on synthetic data and LeNet-5 / a narrow
// ResNet-20 (seconds).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "cli_runner.h"
#include "experiments/attack_suite.h"
#include "experiments/experiment.h"
#include "experiments/trainer.h"

using namespace nns;
namespace fs = std::filesystem;

namespace {

models::ModelSpec spec_of(const std::string& arch) {
  models::ModelSpec s;
  s.arch = arch;
  s.in_channels = 1;
  s.input_size = 28;
  s.num_classes = 10;
  if (arch == "resnet20") s.width_mult = 0.25f;
  return s;
}

exp::Config config(const std::string& attacks_yaml) {
  return exp::Config::load_text(exp::experiment_schema(), "attacks:\n" + attacks_yaml, "test.yaml", {});
}

struct Fixture {
  data::Splits splits = data::make_synthetic(300, 200, 1, 28, 10, 5);
  data::Normalization norm = data::normalization_for("synthetic");
  std::unique_ptr<models::Model> victim, obfuscated;
  explicit Fixture(const std::string& arch) {
    victim = models::build_model(spec_of(arch), 1);
    exp::TrainOptions t;
    t.epochs = 2;
    t.batch = 32;
    t.lr = 0.05f;
    t.progress = false;
    exp::train_model(*victim, splits.train, nullptr, norm, t);
    obfuscated = models::clone_model(*victim);
    auto& w = obfuscated->parameters().front().second->value;  // conv1: damaged
    auto v = w.to_vector();
    for (size_t i = 0; i < v.size(); i += 2) v[i] = -v[i];
    w.copy_from(Tensor::from_vector(v, w.shape()));
  }
  exp::AttackContext context() {
    exp::AttackContext c;
    c.obfuscated = obfuscated.get();
    c.splits = &splits;
    c.norm = norm;
    c.layers = models::eligible_layers(*obfuscated, "spatial");
    return c;
  }
};

}  // namespace

TEST(AttackSuite, TableKeysAndParse) {
  const auto names = exp::attack_names();
  for (const char* n : {"norm_clip", "finetune", "boundary_reset", "groupcover", "bn_recalibrate",
                        "knockoff", "floor"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  // Every unit's keys are in the experiment schema under attacks.<name>.
  for (const auto& make : exp::attack_table()) {
    auto u = make();
    for (const auto& k : u->keys())
      EXPECT_NE(exp::experiment_schema().find("attacks." + u->name() + "." + k.path), nullptr)
          << u->name() << "." << k.path;
  }
  auto s = exp::AttackSuite::parse(config("  kinds: [norm_clip, floor]\n"));
  ASSERT_EQ(s.units().size(), 2u);
  EXPECT_TRUE(s.needs_queries());
  EXPECT_TRUE(s.needs_victim());
  EXPECT_FALSE(exp::AttackSuite::parse(config("  kinds: [norm_clip]\n")).needs_queries());
  EXPECT_THROW(exp::AttackSuite::parse(config("  kinds: [norm_clip, norm_clip]\n")), exp::ConfigError);
  EXPECT_THROW(config("  kinds: [nope]\n"), exp::ConfigError);
}

TEST(AttackSuite, HeadlineIsTheBestAttackWithinTheBudgetAgainstTheFloorAtIt) {
  using R = exp::AttackLine::Role;
  const std::vector<exp::AttackLine> lines = {
      {"weights_only", "", 0.30, 0, R::Attack},
      {"a@100", "", 0.50, 100, R::Attack},
      {"a@300", "", 0.70, 300, R::Attack},
      {"training_data", "", 0.99, -1, R::Attack},  // other data: never in the headline
      {"recall", "", 1.00, -1, R::Score},
      {"floor.scratch@100", "", 0.40, 100, R::Floor},
      {"floor.donor@100", "", 0.45, 100, R::Floor},
      {"floor.scratch@300", "", 0.60, 300, R::Floor},
      {"nan@300", "", std::nan(""), 300, R::Attack}};
  auto h = exp::headline_of(lines, {50, 100, 300});
  EXPECT_EQ(h.best_attack_column, (std::vector<std::string>{"weights_only", "a@100", "a@300"}));
  EXPECT_DOUBLE_EQ(h.best_attack[1], 0.50);
  EXPECT_TRUE(std::isnan(h.floor[0]));
  EXPECT_EQ(h.floor_column[1], "floor.donor@100");
  EXPECT_NEAR(h.gap[1], 0.05, 1e-12);
  EXPECT_NEAR(h.gap[2], 0.10, 1e-12);
}

TEST(HonestTraining, ChoosesTheLearningRateOnTheHeldOutQueries) {
  Fixture fx("lenet5");
  auto q = data::subset(fx.splits.test, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                         17, 18, 19});
  const auto before = splitter::fingerprint(*fx.obfuscated);
  exp::HonestTraining h;
  h.lrs = {1e6, 0.05};  // the first diverges
  h.min_epochs = 2;
  h.min_steps = 3;
  h.batch = 8;
  h.holdout = 0.25;
  std::vector<int64_t> prepared;
  int evaluated = 0;
  auto fit = exp::fit_with_holdout(
      *fx.obfuscated, q, fx.norm, h, [&](models::Model&) { return ++evaluated, 0.5; },
      [&](models::Model&, const data::Dataset& d) { prepared.push_back(d.size()); });
  EXPECT_EQ(fit.lr, 0.05);
  ASSERT_EQ(fit.holdout_accuracy.size(), 2u);
  EXPECT_TRUE(std::isnan(fit.holdout_accuracy[0]));
  EXPECT_GE(fit.holdout_accuracy[1], 0.0);
  EXPECT_EQ(prepared, (std::vector<int64_t>{15, 15, 20}));  // hold-out runs, then all queries
  EXPECT_EQ(evaluated, 1);                                    // only the final model is scored
  EXPECT_EQ(fit.accuracy, 0.5);
  EXPECT_EQ(fit.epochs, 2);  // 3 batches of 8 per epoch: 2 epochs reach min_steps
  EXPECT_EQ(splitter::fingerprint(*fx.obfuscated), before);
}

TEST(AttackSuite, KnockoffVariantsAndBatchNorm) {
  // LeNet-5 has no BatchNorm: the BN variants are skipped. The narrow ResNet-20 runs them all,
  // and every accuracy is one of the evaluation set's.
  for (const char* arch : {"lenet5", "resnet20"}) {
    Fixture fx(arch);
    auto suite = exp::AttackSuite::parse(config(
        "  kinds: [bn_recalibrate, knockoff]\n  queries: {budgets: [16, 32], labels: truth}\n"
        "  train: {lrs: [0.05], min_epochs: 1, min_steps: 2, batch: 16}\n"));
    auto ctx = fx.context();
    suite.run(ctx, nullptr);
    const auto lines = suite.lines();
    const bool bn = std::string(arch) == "resnet20";
    EXPECT_EQ(lines.size(), bn ? 2u + 8u : 4u) << arch;
    for (const auto& l : lines) {
      EXPECT_TRUE(l.value >= 0 && l.value <= 1) << l.column;
      EXPECT_EQ(l.role, exp::AttackLine::Role::Attack);
      EXPECT_EQ(l.column.substr(l.column.find('@') + 1), std::to_string(l.queries)) << l.column;
    }
    EXPECT_EQ(ctx.queries.eval.size(), 200 - 32);
  }
}

TEST(AttackSuite, KnockoffLearningRatesOverrideTheGridButNotTheFloors) {
  // attacks.knockoff.lrs with one value: every knockoff fit uses it without hold-out runs (the
  // screen of docs/attacks.md); the floor still chooses among attacks.train.lrs.
  Fixture fx("lenet5");
  auto run = [&](const std::string& knockoff_lrs) {
    auto suite = exp::AttackSuite::parse(config(
        "  kinds: [knockoff, floor]\n  queries: {budgets: [16, 32], labels: truth}\n"
        "  knockoff: {variants: [finetune], lrs: " + knockoff_lrs + "}\n"
        "  train: {lrs: [0.05, 0.01], min_epochs: 1, min_steps: 2, batch: 16}\n"));
    auto ctx = fx.context();
    suite.run(ctx, fx.victim.get());
    auto f = exp::h5::File::create_in_memory("t");
    suite.write(f);
    return f;
  };
  auto screen = run("[0.02]");
  EXPECT_EQ(screen.read_doubles("attacks/knockoff/lr"), (std::vector<double>{0.02, 0.02}));
  EXPECT_EQ(screen.read_doubles("attacks/knockoff/lrs_tried"), (std::vector<double>{0.02}));
  EXPECT_FALSE(screen.exists("attacks/knockoff/holdout_accuracy"));  // no hold-out runs
  for (double lr : screen.read_doubles("attacks/floor/lr")) EXPECT_TRUE(lr == 0.05 || lr == 0.01);
  auto grid = run("[]");
  EXPECT_EQ(grid.read_doubles("attacks/knockoff/lrs_tried"), (std::vector<double>{0.05, 0.01}));
  EXPECT_EQ(grid.read_doubles("attacks/knockoff/holdout_accuracy").size(), 4u);  // 2 lrs x 2 budgets
  for (double lr : grid.read_doubles("attacks/knockoff/lr")) EXPECT_TRUE(lr == 0.05 || lr == 0.01);
  EXPECT_THROW(exp::AttackSuite::parse(config("  kinds: [knockoff]\n  knockoff: {lrs: [0]}\n")),
               exp::ConfigError);
}

TEST(AttackSuite, FloorsAreCachedByEverythingTheyDependOn) {
  Fixture fx("lenet5");
  const fs::path dir = nns::test::fresh_temp_dir("nns_floor", "cache");
  auto run = [&](const std::string& yaml) {
    auto suite = exp::AttackSuite::parse(config(yaml));
    auto ctx = fx.context();
    ctx.cache_dir = dir.string();
    suite.run(ctx, fx.victim.get());
    auto f = exp::h5::File::create_in_memory("t");
    suite.write(f);
    return std::make_pair(f.read_doubles("attacks/floor/accuracy"),
                          f.read_double("attacks/floor/from_cache"));
  };
  const std::string yaml = "  kinds: [floor]\n  queries: {budgets: [16, 32]}\n"
                           "  train: {lrs: [0.05, 0.01], min_epochs: 1, min_steps: 2, batch: 16}\n";
  auto [first, cached_first] = run(yaml);
  auto [second, cached_second] = run(yaml);
  EXPECT_EQ(cached_first, 0);
  EXPECT_EQ(cached_second, 2);
  EXPECT_EQ(first, second);
  auto [other, cached_other] = run("  kinds: [floor]\n  queries: {budgets: [16, 32]}\n"
                                   "  train: {lrs: [0.05, 0.01], min_epochs: 1, min_steps: 2, batch: 8}\n");
  EXPECT_EQ(other.size(), 2u);
  EXPECT_EQ(cached_other, 0);  // another training protocol: another floor
  fs::remove_all(dir);
}

TEST(AttackSuite, OracleResetIsABoundThatNeedsTheSecretsAndStaysOutOfTheHeadline) {
  Fixture fx("lenet5");
  const auto secrets = splitter::diff_secrets(*fx.victim, *fx.obfuscated);
  const std::string yaml =
      "  kinds: [knockoff]\n  queries: {budgets: [16], labels: truth}\n"
      "  knockoff: {variants: [oracle]}\n"
      "  train: {lrs: [0.05], min_epochs: 1, min_steps: 2, batch: 16}\n";
  auto without = exp::AttackSuite::parse(config(yaml));
  auto ctx = fx.context();
  without.run(ctx, nullptr);
  EXPECT_TRUE(without.lines().empty());  // no secrets: nothing to bound
  auto with = exp::AttackSuite::parse(config(yaml));
  ctx = fx.context();
  ctx.secrets = &secrets;
  with.run(ctx, nullptr);
  const auto lines = with.lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].column, "knockoff.oracle@16");
  EXPECT_EQ(lines[0].role, exp::AttackLine::Role::Bound);
  EXPECT_TRUE(std::isnan(with.headline().best_attack[0]));
}
