// The attacks of one protected model, unit by unit (experiments/attack_unit.h): the table of
// every unit, the shared settings (attacks.kinds, attacks.donor, attacks.queries, attacks.train),
// the loop that runs the chosen units on one context, the headline (best attack at Q queries
// against the floor at Q), and their part of the result file (docs/results-format.md, attacks/).
// Both `nnsplitter run` (experiments/experiment.cpp) and `nnsplitter attack` use it.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "experiments/attack_unit.h"

namespace nns::exp {

// Every attack unit, in a stable order. Adding an attack: its file experiments/attack_<name>.cpp
// (a class deriving AttackUnit and `std::unique_ptr<AttackUnit> make_<name>_attack()`), its line
// in this table (attack_suite.cpp), its test.
const std::vector<std::function<std::unique_ptr<AttackUnit>()>>& attack_table();
std::vector<std::string> attack_names();
std::unique_ptr<AttackUnit> make_attack(const std::string& name);  // null when unknown

// attacks.kinds, attacks.donor, attacks.queries.*, attacks.train.* and attacks.<unit>.* of every
// unit.
void add_attack_keys(Schema& s);

// Per query budget Q: the best attack that used at most Q queries of the deployed model (label-free
// and weight-only attacks count at every Q) against the best floor at exactly Q.
struct Headline {
  std::vector<int64_t> budgets;
  std::vector<double> best_attack, floor, gap;  // NaN when there is none
  std::vector<std::string> best_attack_column, floor_column;
};
Headline headline_of(const std::vector<AttackLine>& lines, const std::vector<int64_t>& budgets);

class AttackSuite {
 public:
  // Reads attacks.kinds and the shared settings, and every chosen unit's keys.
  static AttackSuite parse(const Config& cfg);

  const std::vector<std::unique_ptr<AttackUnit>>& units() const { return units_; }
  bool empty() const { return units_.empty(); }
  bool needs_queries() const;
  // Whether the queries need the deployed model's answers (labels: victim).
  bool needs_victim() const { return needs_queries() && labels_ == "victim"; }
  const std::string& donor_path() const { return donor_path_; }  // attacks.donor ("" = none given)

  // Builds the queries (labelled by `victim`, null when needs_victim() is false) and the
  // accuracy oracle into ctx, then runs every unit. ctx.obfuscated and ctx.splits must be set.
  void run(AttackContext& ctx, models::Model* victim);

  std::vector<AttackLine> lines() const;
  Headline headline() const { return headline_of(lines(), budgets_); }
  // attacks/<unit>/... with attacks/<unit>/lines/*, attacks/headline/*, attacks/eval/*.
  void write(h5::File& f) const;

 private:
  std::vector<std::unique_ptr<AttackUnit>> units_;
  std::string donor_path_, source_, labels_;
  std::vector<int64_t> budgets_;
  int64_t eval_size_ = 0;
  HonestTraining training_;
  double victim_eval_ = std::numeric_limits<double>::quiet_NaN(), obfuscated_eval_ = 0;
  int64_t eval_samples_ = 0;
};

// collect's attack columns of one run file: secrets_bytes, every unit's lines (column -> value)
// in the order written, then best@Q, floor@Q and gap@Q of the headline.
std::vector<std::pair<std::string, double>> attack_columns(const h5::File& f);

}  // namespace nns::exp
