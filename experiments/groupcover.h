// The published attack on NNSplitter (GroupCover, Zhang et al., ICML 2024; SPEC §2 "The
// published protocol", docs/attacks.md): identify the obfuscated weights from the weight
// statistics alone, reset them, and fine-tune on a few hundred queries labelled by the deployed
// victim (knockoff), at GroupCover's own settings. (The black-box floor and the attacks at their
// best are the units `floor` and `knockoff`, experiments/attack_*.cpp.)
//
// The attacker's side (detectors, resets, knockoff training) never reads the secrets; they are
// used only to score a detector (precision and recall). Every function works on copies or on
// the model it is explicitly told to change.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/models/zoo.h"
#include "core/splitter/secrets.h"
#include "datasets/datasets.h"
#include "experiments/attacks.h"

namespace nns::exp {

// The tensors GroupCover scans: every trainable parameter (model.parameters(); BatchNorm
// weights and biases included, buffers excluded), in model order.
std::vector<std::string> trainable_keys(models::Model& m);

// What the detectors scan: "trainable" (GroupCover's code: model.parameters()) or "weights" (the
// trainable tensors of two or more dimensions: convolution and linear weights, without
// BatchNorm scales and shifts and biases). With BatchNorm, a global "trainable" scan takes its
// upper end from the BN scales (~1), far above the convolution weights, and misses NNSplitter's
// upper clamp bound (ResNet-20: recall 0.38 against 0.93 with "weights").
const std::vector<std::string>& detector_scopes();
std::vector<std::string> scanned_keys(models::Model& m, const std::string& scope);

// ---- weight identification

// Every detector's settings in one place (unused fields are ignored by the others).
struct DetectorParams {
  double percentile = 0.001;  // extreme_percentile*: percent (0.001 = 1e-5 of the weights)
  double eps = 2e-3;          // extreme_percentile*: flag within ±2·eps of each end value
  double bin_fraction = 1e-3; // cv_bins: bin width as a fraction of the weight range
  int64_t min_count = 8;      // cv_bins: bins with fewer weights are not candidates
  int bins = 2;               // cv_bins: how many lowest-CV bins to flag
};

// One way of guessing which weights were obfuscated from the obfuscated model alone. To add
// one: derive, give it a name, list it in make_detector/detector_names (docs/attacks.md).
class Detector {
 public:
  virtual ~Detector() = default;
  virtual std::string name() const = 0;
  // Flags weights among `keys` (F32 tensors of `model`; unknown key -> std::invalid_argument).
  // Does not modify the model. Non-finite weights are never flagged.
  virtual WeightSet detect(models::Model& model, const std::vector<std::string>& keys) const = 0;
};

// "extreme_percentile" (per_layer false) — GroupCover's test: all scanned weights flattened and
// sorted (n values); lo = sorted[max(floor(n·p/100) − 1, 0)], hi = sorted[min(floor(n·(1 −
// p/100)), n − 1)]; every weight w with |w − lo| <= 2·eps or |w − hi| <= 2·eps is flagged.
// "extreme_percentile_layer" (per_layer true): the same, with lo/hi computed per tensor.
class ExtremePercentileDetector : public Detector {
 public:
  ExtremePercentileDetector(double percentile, double eps, bool per_layer);
  std::string name() const override;
  WeightSet detect(models::Model& model, const std::vector<std::string>& keys) const override;

 private:
  double percentile_, eps_;
  bool per_layer_;
};

// "cv_bins" — the histogram scan of GroupCover's notebook, as we read it (docs/attacks.md): the
// global weight range [min, max] is cut into bins of bin_fraction·(max − min); for every bin
// holding >= min_count weights, the coefficient of variation std/|mean| of its values; the
// `bins` bins with the lowest CV are flagged whole. A clamp bound shared by many obfuscated
// weights makes a bin of (nearly) identical values: CV ≈ 0.
class CvBinDetector : public Detector {
 public:
  CvBinDetector(double bin_fraction, int64_t min_count, int bins);
  std::string name() const override;
  WeightSet detect(models::Model& model, const std::vector<std::string>& keys) const override;

 private:
  double bin_fraction_;
  int64_t min_count_;
  int bins_;
};

// "extreme_percentile, extreme_percentile_layer, cv_bins"
const std::vector<std::string>& detector_names();
// Unknown name or invalid params (percentile not in (0, 50), eps < 0, bin_fraction not in
// (0, 1), min_count < 1, bins < 1) -> std::invalid_argument.
std::unique_ptr<Detector> make_detector(const std::string& name, const DetectorParams& p);

struct DetectionScore {
  std::string detector;
  int64_t flagged = 0, true_positives = 0, secrets = 0;
  double precision = 0;  // true_positives / flagged (NaN when nothing is flagged)
  double recall = 0;     // true_positives / secrets (NaN when the secrets are empty)
};
DetectionScore score_detection(const std::string& detector, const WeightSet& flagged,
                               const splitter::Secrets& secrets);

// ---- knockoff fine-tuning

// Where the queries come from (docs/attacks.md): "test" = the first n of a seeded permutation of
// the test split, and accuracy is measured on the rest of the test split (data the victim never
// trained on); "train" = n seeded samples of the victim's own training split (GroupCover's
// literal choice: knockoff's random adversary draws from the victim's training set), accuracy
// on the whole test split. n > the split's size -> std::invalid_argument.
struct QuerySplit {
  data::Dataset pool;  // n images; labels are the ground truth until label_queries
  data::Dataset eval;  // where every attack's accuracy is measured
};
QuerySplit split_queries(const data::Splits& s, const std::string& source, int64_t n,
                         uint64_t seed);
const std::vector<std::string>& query_sources();  // "test, train"

// The transfer set: `pool` with every label replaced by the argmax of `victim` (the deployed
// model, API access), or unchanged when victim is null (ground-truth labels).
data::Dataset label_queries(const data::Dataset& pool, models::Model* victim,
                            const data::Normalization& norm, int pad_to);

struct KnockoffOptions {
  std::vector<int64_t> budgets = {300, 500};  // each >= 1 and <= the transfer set's size
  // GroupCover's scripts/knockoff_nnsplitter.sh for CIFAR-10: SGD momentum 0.5, lr 0.1,
  // batch 64, 10 epochs (no weight decay, constant lr within 10 epochs).
  int epochs = 10;
  int batch = 64;
  float lr = 0.1f;
  float momentum = 0.5f;
  float weight_decay = 0.0f;
  uint64_t seed = 0;  // shuffling (and the scratch model's initialisation)
  int pad_to = 0;
};

// For each budget b: a fresh copy of `start`, trained on the first b samples of `transfer`
// (train mode, plain SGD with momentum, constant lr), its accuracy afterwards. A diverged run
// gives NaN with a warning. (GroupCover's script keeps training one model across budgets; a
// fresh copy per budget makes each budget's number stand on its own.)
std::vector<double> knockoff_train(models::Model& start, const data::Dataset& transfer,
                                   const data::Normalization& norm, const KnockoffOptions& o,
                                   const AccuracyFn& acc);

// ---- the protocol

struct GroupCoverOptions {
  std::string detector = "extreme_percentile";  // drives the reset
  DetectorParams params;
  std::string scope = "trainable";  // scanned_keys(): trainable (GroupCover) or weights
  std::vector<std::string> scored = detector_names();  // detectors scored against the secrets
  std::vector<std::string> resets = {"donor"};         // each: reset, then knockoff
  KnockoffOptions knockoff;
};

struct GroupCoverResult {
  std::vector<int64_t> budgets;
  std::vector<DetectionScore> scores;  // one per scored detector (empty without secrets)
  WeightSet flagged;                   // what `detector` flagged
  std::vector<std::string> resets;
  std::vector<double> accuracy_reset;          // [reset]: after the reset, before training
  std::vector<std::vector<double>> recovered;  // [reset][budget]
};

// detect (o.detector on scanned_keys(o.scope)) -> for each reset mode: reset a copy, measure,
// knockoff on `transfer` per budget. `secrets` (may be null) only scores the detectors. Mode
// donor without a donor -> std::invalid_argument.
GroupCoverResult groupcover_attack(models::Model& obfuscated, const splitter::Secrets* secrets,
                                   models::Model* donor, const data::Dataset& transfer,
                                   const data::Normalization& norm, const GroupCoverOptions& o,
                                   const AccuracyFn& acc);

}  // namespace nns::exp
