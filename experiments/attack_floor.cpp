// The black-box floor (docs/attacks.md): what the same queries buy without the obfuscated model:
// the architecture trained from scratch (scratch) or from the public donor (donor), each as well
// as the attacker can (attacks.train: learning rate by hold-out, trained to convergence). A floor
// does not depend on the protection, so it is cached (attacks.floor.cache) by everything it does
// depend on: the deployed model's answers, the query split, the evaluation images, the training
// protocol and the starting model.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/io/atomic_file.h"
#include "experiments/attack_unit.h"
#include "experiments/progress.h"

namespace nns::exp {

namespace {

namespace fs = std::filesystem;

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

class FloorAttack : public AttackUnit {
 public:
  std::string name() const override { return "floor"; }
  std::string summary() const override {
    return "the black-box floor: the architecture trained on the same queries from scratch or "
           "from the public donor, learning rate chosen by hold-out";
  }
  std::vector<KeySpec> keys() const override {
    return {unit_key("sources", ValueType::StringList, "[scratch]",
                     "starting points: scratch (a fresh model) and donor (attacks.donor; a donor "
                     "trained on the victim's own task is not a public model)",
                     {}, {}, {"scratch", "donor"}),
            unit_key("cache", ValueType::Bool, "true",
                     "reuse floors computed before with the same inputs (<cache>/floors/)")};
  }
  void parse(const Config& cfg) override {
    sources_ = cfg.get_strings("attacks.floor.sources");
    cache_ = cfg.get_bool("attacks.floor.cache");
    if (sources_.empty()) throw ConfigError("attacks.floor.sources: needs at least one source");
  }
  bool uses_queries() const override { return true; }

  void run(AttackContext& ctx) override {
    budgets_ = ctx.queries.budgets;
    fits_.clear();
    cached_ = 0;
    Progress bar("floor", int64_t(sources_.size() * budgets_.size()), ctx.progress);
    int64_t done = 0;
    for (const auto& src : sources_) {
      std::unique_ptr<models::Model> start;
      std::string start_id;
      if (src == "donor") {
        models::Model* d = ctx.donor ? ctx.donor() : nullptr;
        if (!d) throw ConfigError("attacks.floor.sources: donor needs a donor (attacks.donor)");
        start = models::clone_model(*d);
        start_id = "donor " + splitter::fingerprint(*d);
      } else {
        start = models::build_model(ctx.obfuscated->spec(), ctx.seed + 1);
        start->to(ctx.obfuscated->device());
        start_id = "scratch seed " + std::to_string(ctx.seed + 1);
      }
      std::vector<HonestFit> row;
      for (int64_t b : budgets_) {
        const std::string key = cache_key(ctx, start_id, b);
        const fs::path file = ctx.cache_dir.empty() || !cache_
                                  ? fs::path()
                                  : fs::path(ctx.cache_dir) / "floors" /
                                        (std::to_string(fnv1a(key)) + ".json");
        HonestFit fit;
        if (!file.empty() && read_cached(file, key, fit)) {
          ++cached_;
        } else {
          fit = fit_with_holdout(*start, first_samples(ctx.queries.pool, b), ctx.norm,
                                 ctx.training, ctx.accuracy);
          if (!file.empty()) write_cached(file, key, fit);
        }
        row.push_back(fit);
        char stats[96];
        std::snprintf(stats, sizeof stats, "%s@%lld %.2f%% (lr %g)", src.c_str(), (long long)b,
                      100 * fit.accuracy, fit.lr);
        ++done;
        bar.update(done, double(done), stats);
      }
      fits_.push_back(std::move(row));
    }
    bar.finish("done");
  }

  void write(h5::File& f, const std::string& g) const override {
    f.write(g + "/budgets", budgets_, "count");
    f.write(g + "/sources", sources_);
    std::vector<double> acc, lr;
    for (const auto& row : fits_)
      for (const auto& fit : row) acc.push_back(fit.accuracy), lr.push_back(fit.lr);
    const int64_t S = int64_t(fits_.size()), B = int64_t(budgets_.size());
    f.write(g + "/accuracy", acc, "fraction", {S, B});
    f.write(g + "/lr", lr, "1", {S, B});
    f.write(g + "/from_cache", cached_, "count");
  }

  std::vector<AttackLine> lines() const override {
    std::vector<AttackLine> out;
    for (size_t s = 0; s < fits_.size(); ++s)
      for (size_t b = 0; b < budgets_.size(); ++b)
        out.push_back({"floor." + sources_[s] + at_budget(budgets_[b]),
                       "floor: " + sources_[s] + " + " + std::to_string(budgets_[b]) + " queries",
                       fits_[s][b].accuracy, budgets_[b], AttackLine::Role::Floor});
    return out;
  }

 private:
  // Everything a floor depends on, as text.
  static std::string cache_key(const AttackContext& ctx, const std::string& start_id, int64_t b) {
    const auto& s = ctx.obfuscated->spec();
    const HonestTraining& t = ctx.training;
    std::ostringstream k;
    k << "floor-1\narch " << s.arch << " " << s.in_channels << " " << s.input_size << " "
      << s.num_classes << " " << s.width_mult << "\nstart " << start_id << "\nvictim "
      << ctx.victim_fingerprint << "\nqueries " << ctx.queries.source << " " << ctx.queries.labels
      << " seed " << ctx.seed << " pool " << ctx.queries.pool.size() << " budget " << b
      << "\neval " << ctx.queries.eval.size() << " train " << ctx.splits->train.size()
      << " norm " << ctx.norm.mean.at(0) << " " << ctx.norm.std.at(0) << " pad " << ctx.pad_to
      << "\ntrain";
    for (double lr : t.lrs) k << " " << lr;
    k << " holdout " << t.holdout << " epochs " << t.min_epochs << " steps " << t.min_steps
      << " batch " << t.batch << " momentum " << t.momentum << " wd " << t.weight_decay << "\n";
    return k.str();
  }

  static bool read_cached(const fs::path& file, const std::string& key, HonestFit& fit) {
    if (!fs::exists(file)) return false;
    try {
      std::ifstream in(file);
      const auto j = nlohmann::json::parse(in);
      if (j.at("key") != key) return false;
      fit.lr = j.at("lr");
      fit.epochs = j.at("epochs");
      fit.accuracy = j.at("accuracy").is_null() ? std::nan("") : j.at("accuracy").get<double>();
      for (const auto& h : j.at("holdout"))
        fit.holdout_accuracy.push_back(h.is_null() ? std::nan("") : h.get<double>());
      return true;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "warning: %s: unreadable floor cache (%s); recomputing\n",
                   file.c_str(), e.what());
      return false;
    }
  }

  static void write_cached(const fs::path& file, const std::string& key, const HonestFit& fit) {
    auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
    nlohmann::json h = nlohmann::json::array();
    for (double v : fit.holdout_accuracy) h.push_back(num(v));
    const nlohmann::json j = {{"key", key},          {"lr", fit.lr},      {"epochs", fit.epochs},
                              {"accuracy", num(fit.accuracy)}, {"holdout", h}};
    fs::create_directories(file.parent_path());
    io::write_file_atomically(file.string(), j.dump(1) + "\n");
  }

  std::vector<std::string> sources_;
  bool cache_ = true;
  std::vector<int64_t> budgets_;
  std::vector<std::vector<HonestFit>> fits_;  // [source][budget]
  int64_t cached_ = 0;
};

}  // namespace

std::unique_ptr<AttackUnit> make_floor_attack() { return std::make_unique<FloorAttack>(); }

}  // namespace nns::exp
