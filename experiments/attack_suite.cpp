#include "experiments/attack_suite.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "experiments/groupcover.h"
#include "experiments/trainer.h"

namespace nns::exp {

// Each unit's factory, defined in its own file.
std::unique_ptr<AttackUnit> make_norm_clip_attack();
std::unique_ptr<AttackUnit> make_finetune_attack();
std::unique_ptr<AttackUnit> make_boundary_reset_attack();
std::unique_ptr<AttackUnit> make_groupcover_attack();
std::unique_ptr<AttackUnit> make_bn_recalibrate_attack();
std::unique_ptr<AttackUnit> make_knockoff_attack();
std::unique_ptr<AttackUnit> make_floor_attack();

const std::vector<std::function<std::unique_ptr<AttackUnit>()>>& attack_table() {
  static const std::vector<std::function<std::unique_ptr<AttackUnit>()>> table = {
      make_norm_clip_attack,      make_finetune_attack, make_boundary_reset_attack,
      make_groupcover_attack,     make_bn_recalibrate_attack, make_knockoff_attack,
      make_floor_attack};
  return table;
}

std::vector<std::string> attack_names() {
  std::vector<std::string> n;
  for (const auto& make : attack_table()) n.push_back(make()->name());
  return n;
}

std::unique_ptr<AttackUnit> make_attack(const std::string& name) {
  for (const auto& make : attack_table())
    if (auto u = make(); u->name() == name) return u;
  return nullptr;
}

KeySpec unit_key(std::string name, ValueType type, std::string def, std::string doc,
                 std::optional<double> min, std::optional<double> max,
                 std::vector<std::string> choices) {
  return {std::move(name), type, std::move(def), std::move(doc), min, max, std::move(choices)};
}

std::string at_budget(int64_t b) { return "@" + std::to_string(b); }

void add_attack_keys(Schema& s) {
  using V = ValueType;
  auto add = [&](std::string path, ValueType t, std::string def, std::string doc,
                 std::optional<double> lo = {}, std::optional<double> hi = {},
                 std::vector<std::string> choices = {}) {
    s.add({"attacks." + path, t, std::move(def), std::move(doc), lo, hi, std::move(choices)});
  };
  std::string kinds_doc = "attacks to run after protection ([] = none):";
  for (const auto& make : attack_table()) {
    auto u = make();
    kinds_doc += " " + u->name() + " (" + u->summary() + ");";
  }
  kinds_doc.back() = '.';
  add("kinds", V::StringList, "[norm_clip, boundary_reset, bn_recalibrate, knockoff, floor]",
      kinds_doc, {}, {}, attack_names());
  add("donor", V::String, "\"\"",
      "a public model of the architecture (.safetensors) for the attacks that use one (resets "
      "to a donor, the donor floor); \"\" = run: the victim recipe trained with seed + 1 "
      "(cached like the victim), attack: none");
  add("queries.budgets", V::IntList, "[100, 300, 1000]",
      "query budgets Q: how many images the attacker has the deployed model label (a budget b "
      "uses the first b)", 1, {});
  add("queries.source", V::String, "test",
      "where the queries come from: test = held out of the test split (every attack's accuracy "
      "on the rest), train = the victim's training split (GroupCover's choice)",
      {}, {}, query_sources());
  add("queries.labels", V::String, "victim",
      "query labels: the deployed victim's argmax (API access) or the ground truth", {}, {},
      {"victim", "truth"});
  add("queries.eval_size", V::Int, "0",
      "evaluation images of every attack: the first this many of those left after the queries "
      "(0 = all of them)", 0, {});
  add("train.lrs", V::FloatList, "[0.01, 0.03, 0.1]",
      "learning rates an attacker tries (SGD, cosine schedule); the one with the best accuracy "
      "on a held-out part of its own queries is used", 1e-9, {});
  add("train.holdout", V::Float, "0.2", "share of the queries held out to choose the learning rate",
      0.01, 0.9);
  add("train.min_epochs", V::Int, "30", "epochs at least", 1, {});
  add("train.min_steps", V::Int, "150",
      "optimizer steps at least (more epochs on few queries), so that training converges", 0, {});
  add("train.batch", V::Int, "64", "batch size", 1, 65536);
  add("train.momentum", V::Float, "0.9", "SGD momentum", 0, 1);
  add("train.weight_decay", V::Float, "5e-4", "L2 weight decay", 0, {});
  for (const auto& make : attack_table()) {
    auto u = make();
    for (KeySpec k : u->keys()) {
      k.path = "attacks." + u->name() + "." + k.path;
      s.add(std::move(k));
    }
  }
}

AttackSuite AttackSuite::parse(const Config& cfg) {
  AttackSuite s;
  for (const auto& name : cfg.get_strings("attacks.kinds")) {
    auto u = make_attack(name);
    if (!u) throw ConfigError("attacks.kinds: unknown attack '" + name + "'");
    if (std::any_of(s.units_.begin(), s.units_.end(), [&](auto& v) { return v->name() == name; }))
      throw ConfigError("attacks.kinds: '" + name + "' listed twice");
    u->parse(cfg);
    s.units_.push_back(std::move(u));
  }
  s.donor_path_ = cfg.get_string("attacks.donor");
  s.source_ = cfg.get_string("attacks.queries.source");
  s.labels_ = cfg.get_string("attacks.queries.labels");
  s.budgets_ = cfg.get_ints("attacks.queries.budgets");
  s.eval_size_ = cfg.get_int("attacks.queries.eval_size");
  if (s.budgets_.empty()) throw ConfigError("attacks.queries.budgets: needs at least one budget");
  HonestTraining& t = s.training_;
  t.lrs = cfg.get_floats("attacks.train.lrs");
  if (t.lrs.empty()) throw ConfigError("attacks.train.lrs: needs at least one learning rate");
  t.holdout = cfg.get_float("attacks.train.holdout");
  t.min_epochs = int(cfg.get_int("attacks.train.min_epochs"));
  t.min_steps = cfg.get_int("attacks.train.min_steps");
  t.batch = int(cfg.get_int("attacks.train.batch"));
  t.momentum = float(cfg.get_float("attacks.train.momentum"));
  t.weight_decay = float(cfg.get_float("attacks.train.weight_decay"));
  return s;
}

bool AttackSuite::needs_queries() const {
  return std::any_of(units_.begin(), units_.end(), [](auto& u) { return u->uses_queries(); });
}

void AttackSuite::run(AttackContext& ctx, models::Model* victim) {
  if (!ctx.obfuscated || !ctx.splits) throw std::logic_error("AttackSuite::run: empty context");
  ctx.queries.source = source_;
  ctx.queries.labels = labels_;
  ctx.queries.budgets = budgets_;
  ctx.training = training_;
  ctx.training.seed = ctx.seed;
  ctx.training.pad_to = ctx.pad_to;
  const int64_t n = needs_queries() ? *std::max_element(budgets_.begin(), budgets_.end()) : 0;
  if (n > 0) {
    if (labels_ == "victim" && !victim)
      throw UsageError("attacks.queries.labels victim: the queries need the deployed model");
    QuerySplit q;
    try {
      q = split_queries(*ctx.splits, source_, n, ctx.seed);
    } catch (const std::invalid_argument& e) {
      throw ConfigError(std::string("attacks.queries.budgets: ") + e.what());
    }
    ctx.queries.pool = label_queries(q.pool, labels_ == "victim" ? victim : nullptr, ctx.norm,
                                     ctx.pad_to);
    ctx.queries.eval = std::move(q.eval);
  } else {
    ctx.queries.eval = ctx.splits->test;
  }
  if (eval_size_ > 0 && eval_size_ < ctx.queries.eval.size())
    ctx.queries.eval = first_samples(ctx.queries.eval, eval_size_);
  const data::Dataset* eval = &ctx.queries.eval;
  const data::Normalization norm = ctx.norm;
  const int pad_to = ctx.pad_to;
  ctx.accuracy = [eval, norm, pad_to](models::Model& m) {
    m.set_training(false);
    return evaluate(m, *eval, norm, 256, pad_to).accuracy();
  };
  eval_samples_ = ctx.queries.eval.size();
  obfuscated_eval_ = ctx.accuracy(*ctx.obfuscated);
  if (victim) {
    victim_eval_ = ctx.accuracy(*victim);
    ctx.victim_fingerprint = splitter::fingerprint(*victim);
  }
  for (auto& u : units_) {
    if (ctx.progress) std::fprintf(stderr, "attack %s\n", u->name().c_str());
    u->run(ctx);
  }
}

std::vector<AttackLine> AttackSuite::lines() const {
  std::vector<AttackLine> all;
  for (const auto& u : units_)
    for (auto& l : u->lines()) all.push_back(std::move(l));
  return all;
}

Headline headline_of(const std::vector<AttackLine>& lines, const std::vector<int64_t>& budgets) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Headline h;
  h.budgets = budgets;
  for (int64_t q : budgets) {
    double best = nan, floor = nan;
    std::string best_col, floor_col;
    for (const auto& l : lines) {
      if (std::isnan(l.value)) continue;
      if (l.role == AttackLine::Role::Attack && l.queries >= 0 && l.queries <= q &&
          (std::isnan(best) || l.value > best))
        best = l.value, best_col = l.column;
      if (l.role == AttackLine::Role::Floor && l.queries == q &&
          (std::isnan(floor) || l.value > floor))
        floor = l.value, floor_col = l.column;
    }
    h.best_attack.push_back(best);
    h.floor.push_back(floor);
    h.gap.push_back(best - floor);
    h.best_attack_column.push_back(best_col);
    h.floor_column.push_back(floor_col);
  }
  return h;
}

void AttackSuite::write(h5::File& f) const {
  if (units_.empty()) return;
  for (const auto& u : units_) {
    const std::string g = "attacks/" + u->name();
    u->write(f, g);
    const auto ls = u->lines();
    std::vector<std::string> column, label, role;
    std::vector<double> value;
    std::vector<int64_t> queries;
    for (const auto& l : ls) {
      column.push_back(l.column);
      label.push_back(l.label);
      value.push_back(l.value);
      queries.push_back(l.queries);
      role.push_back(l.role == AttackLine::Role::Attack  ? "attack"
                     : l.role == AttackLine::Role::Floor ? "floor"
                     : l.role == AttackLine::Role::Bound ? "bound"
                                                         : "score");
    }
    f.write(g + "/lines/column", column);
    f.write(g + "/lines/label", label);
    f.write(g + "/lines/value", value, "fraction");
    f.write(g + "/lines/queries", queries, "count");
    f.write(g + "/lines/role", role);
  }
  f.write("attacks/eval/samples", eval_samples_, "count");
  f.write("attacks/eval/obfuscated", obfuscated_eval_, "fraction");
  f.write("attacks/eval/victim", victim_eval_, "fraction");
  f.attr("attacks/eval", "queries", source_);
  f.attr("attacks/eval", "labels", labels_);
  const Headline h = headline();
  f.write("attacks/headline/budgets", h.budgets, "count");
  f.write("attacks/headline/best_attack", h.best_attack, "fraction");
  f.write("attacks/headline/best_attack_column", h.best_attack_column);
  f.write("attacks/headline/floor", h.floor, "fraction");
  f.write("attacks/headline/floor_column", h.floor_column);
  f.write("attacks/headline/gap", h.gap, "fraction");
  const HonestTraining& t = training_;
  f.write("attacks/train/lrs", t.lrs, "1");
  f.attr("attacks/train", "holdout", t.holdout);
  f.attr("attacks/train", "min_epochs", int64_t(t.min_epochs));
  f.attr("attacks/train", "min_steps", t.min_steps);
  f.attr("attacks/train", "batch", int64_t(t.batch));
  f.attr("attacks/train", "momentum", double(t.momentum));
  f.attr("attacks/train", "weight_decay", double(t.weight_decay));
}

std::vector<std::pair<std::string, double>> attack_columns(const h5::File& f) {
  std::vector<std::pair<std::string, double>> c;
  if (f.exists("secrets/bytes")) c.emplace_back("secrets_bytes", f.read_double("secrets/bytes"));
  if (!f.is_group("attacks")) return c;
  for (const auto& make : attack_table()) {
    const std::string g = "attacks/" + make()->name() + "/lines";
    if (!f.exists(g + "/column")) continue;
    const auto cols = f.read_strings(g + "/column");
    const auto vals = f.read_doubles(g + "/value");
    for (size_t i = 0; i < cols.size() && i < vals.size(); ++i) c.emplace_back(cols[i], vals[i]);
  }
  if (f.exists("attacks/headline/budgets")) {
    const auto b = f.read_ints("attacks/headline/budgets");
    for (const char* what : {"best_attack", "floor", "gap"}) {
      const auto v = f.read_doubles(std::string("attacks/headline/") + what);
      const std::string name = std::string(what) == "best_attack" ? "best" : what;
      for (size_t i = 0; i < b.size() && i < v.size(); ++i)
        c.emplace_back(name + at_budget(b[i]), v[i]);
    }
  }
  return c;
}

}  // namespace nns::exp
