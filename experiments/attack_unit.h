// An attack as a unit (docs/attacks.md "Adding an attack"). Each kind of attack is one class in
// its own file experiments/attack_<name>.cpp: its config keys under attacks.<name>. (defaults in
// the schema only, nowhere else), one parse, one run, what it writes into the result file, and
// the lines every front end prints and `collect` tabulates. The units are listed in one table
// (attack_suite.cpp, attack_table()); `nnsplitter run` and `nnsplitter attack` loop over it.
//
// What an attacker may see is fixed by the context: the obfuscated model and the architecture,
// a public donor when there is one, and the deployed model through its answers to the queries.
// The secrets are in the context only to score detectors; no attack may read them otherwise.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/models/zoo.h"
#include "core/splitter/secrets.h"
#include "datasets/datasets.h"
#include "experiments/attacks.h"
#include "experiments/config.h"
#include "experiments/h5file.h"

namespace nns::exp {

// The attacker's queries (attacks.queries), shared by every unit that uses them: `pool` holds the
// largest budget's images, labelled by the deployed victim (or the ground truth); a budget b uses
// its first b. Every accuracy of every unit is measured on `eval` (the test split minus the
// queries when they come from it), so the numbers of all units compare.
struct QueryPlan {
  std::string source = "test", labels = "victim";
  std::vector<int64_t> budgets;
  data::Dataset pool;  // labelled
  data::Dataset eval;
};

struct AttackContext {
  models::Model* obfuscated = nullptr;         // never modified by a unit
  const splitter::Secrets* secrets = nullptr;  // to score detectors only; may be null
  const data::Splits* splits = nullptr;
  data::Normalization norm;
  int pad_to = 0;
  std::string rule = "spatial";
  std::vector<std::string> layers;  // eligible layers under `rule`
  uint64_t seed = 0;
  bool progress = false;
  std::string cache_dir;  // where expensive results that do not depend on the protection (the
                          // floors) are cached; "" = no cache
  // The public donor (a model of the architecture), loaded or trained on first use; null when
  // the attacker has none.
  std::function<models::Model*()> donor;
  // Filled by the suite before the units run.
  QueryPlan queries;
  HonestTraining training;  // attacks.train: how every unit that trains on queries trains
  AccuracyFn accuracy;      // on queries.eval
  std::string victim_fingerprint;  // of the deployed model (cache keys)
};

// One number a unit reports.
struct AttackLine {
  // Score: a detector's precision or recall; Bound: an analysis that reads the secrets (what a
  // perfect detector would allow), never an attack. Neither enters the headline.
  enum class Role { Attack, Floor, Score, Bound };
  std::string column;  // collect's column, stable: "knockoff.bn+finetune@300"
  std::string label;   // for people: "BN re-estimated + fine-tune, 300 queries"
  double value = std::numeric_limits<double>::quiet_NaN();  // a fraction
  // Queries of the deployed model it used (labelled or not): 0 = none; -1 = not a query attack
  // (it used other data, e.g. the training split), which keeps it out of the headline.
  int64_t queries = 0;
  Role role = Role::Attack;
};

class AttackUnit {
 public:
  virtual ~AttackUnit() = default;
  virtual std::string name() const = 0;     // attacks.kinds value and key section
  virtual std::string summary() const = 0;  // one line for --help and the schema
  // The unit's keys, named relative to attacks.<name>. (e.g. "k" for attacks.norm_clip.k).
  virtual std::vector<KeySpec> keys() const = 0;
  // Reads attacks.<name>.* once; errors are ConfigError naming the key.
  virtual void parse(const Config& cfg) = 0;
  // Whether run() needs ctx.queries (the suite then builds them).
  virtual bool uses_queries() const { return false; }
  virtual void run(AttackContext& ctx) = 0;
  // Its details under `group` (attacks/<name>) of the result file (docs/results-format.md). The
  // suite writes lines() beside them.
  virtual void write(h5::File& f, const std::string& group) const = 0;
  virtual std::vector<AttackLine> lines() const = 0;
};

// The key helper every unit uses: a KeySpec whose path is relative to attacks.<name>.
KeySpec unit_key(std::string name, ValueType type, std::string def, std::string doc,
                 std::optional<double> min = {}, std::optional<double> max = {},
                 std::vector<std::string> choices = {});

// "@300" -> the column suffix of a budget.
std::string at_budget(int64_t b);

}  // namespace nns::exp
