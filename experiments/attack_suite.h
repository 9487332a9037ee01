// The GroupCover protocol inside `nnsplitter run` (attacks.kinds: [groupcover]): its config keys,
// running it on a freshly protected model, and its part of the result file
// (docs/results-format.md, attacks/groupcover). Kept apart from run_experiment so that adding an
// attack touches this file and attacks/groupcover, not the pipeline.
#pragma once

#include <functional>
#include <memory>

#include "core/models/zoo.h"
#include "core/splitter/secrets.h"
#include "datasets/datasets.h"
#include "experiments/config.h"
#include "experiments/groupcover.h"
#include "experiments/h5file.h"

namespace nns::exp {

// attacks.groupcover.* (detector, percentile, eps, resets, donor, budgets, epochs, lr, momentum,
// batch, queries, labels, bn_recalibrate, floor).
void add_groupcover_keys(Schema& s);

// What the run needs besides the config. `victim` is the deployed model (the obfuscated one
// restored with its secrets) that labels the queries; `donor_for_seed` returns the public model
// (trained with the victim's recipe and another seed) when attacks.groupcover.donor is "", or
// null when the run was interrupted meanwhile.
struct GroupCoverRun {
  GroupCoverOptions options;
  std::string query_source, labels;
  int64_t eval_samples = 0;
  double accuracy_victim_eval = 0, accuracy_obfuscated_eval = 0;
  GroupCoverResult result;
  bool interrupted = false;
};
GroupCoverRun run_groupcover(const Config& cfg, models::Model& obfuscated, models::Model& victim,
                             const splitter::Secrets& secrets, const data::Splits& splits,
                             const data::Normalization& norm, int pad_to,
                             const std::function<std::unique_ptr<models::Model>()>& trained_donor);

// attacks/groupcover/... of the run file.
void write_groupcover(h5::File& f, const GroupCoverRun& r);

// The attack columns of one run's row in `collect`'s table, in a stable order: secrets_bytes;
// per scored detector precision.NAME and recall.NAME; per reset mode and budget
// groupcover.MODE@B, then bn_recal@B (BatchNorm statistics re-estimated on B queries), floor.donor@B and floor.scratch@B; boundary_reset (after the reset)
// and boundary_reset+ft (after its fine-tuning). Only what the file holds.
std::vector<std::pair<std::string, double>> attack_columns(const h5::File& f);

}  // namespace nns::exp
