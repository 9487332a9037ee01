// Attacks on an obfuscated model (SPEC §2 "Attacks"): the algorithms, below the attack units
// (experiments/attack_unit.h) that configure, run and report them. The attacker holds the
// obfuscated model and the architecture, not the secrets. Every attack works on copies
// (models::clone_model) and never modifies the model it is given. Accuracy is measured by an
// oracle the caller supplies, so the attacks do not depend on how test data is loaded.
// groupcover.h builds on this file (never the other way round).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/models/zoo.h"
#include "core/splitter/secrets.h"
#include "datasets/datasets.h"

namespace nns::exp {

// Test accuracy of a model, a fraction in [0, 1]. The attacks switch the model to eval mode
// before calling it.
using AccuracyFn = std::function<double(models::Model&)>;

// The F32 state entry `key` of m; std::invalid_argument naming `who` when it is missing or not
// F32. Shared by the attacks here and in groupcover.h.
Tensor& f32_state_tensor(models::Model& m, const std::string& key, const char* who);

// Weights picked out of a model: tensor key -> ascending flat indexes into that tensor.
using WeightSet = std::map<std::string, std::vector<int64_t>>;
int64_t weight_count(const WeightSet& w);

// In place: every listed weight of `model` set to 0 ("zero"), to the mean of its tensor's
// unlisted entries ("mean"; 0 when all are listed), or to the donor's value at the same index
// ("donor"; same shapes required). Bad mode, missing donor, unknown key, an index out of range
// or a shape mismatch -> std::invalid_argument.
void reset_weights(models::Model& model, const WeightSet& flagged, const std::string& mode,
                   models::Model* donor = nullptr);
// "zero, mean, donor"
const std::vector<std::string>& reset_modes();

// ---- BatchNorm recalibration (label-free)

// Re-estimates, in place, every BatchNorm's running mean and variance of `model` from the first
// n images of `images` (labels unused; AdaBN, Li et al. 2016): statistics reset, forwards with
// only the BatchNorm layers in training mode, every batch weighted equally (PyTorch's
// momentum=None), the weights untouched; the model is left in eval mode. Returns how many
// BatchNorm layers it re-estimated (0: a model without BatchNorm, nothing changed). n outside
// [1, images.size()] or batch < 1 -> std::invalid_argument.
int recalibrate_batchnorm(models::Model& model, const data::Dataset& images, int64_t n,
                          const data::Normalization& norm, int batch, int pad_to);

// The first n samples of d.
data::Dataset first_samples(const data::Dataset& d, int64_t n);

// ---- training at its best, honestly (attacks.train; docs/attacks.md "The strongest honest
// attacker")

// How an attacker with a few labelled queries trains: SGD with momentum and a cosine schedule,
// epochs = max(min_epochs, enough epochs for min_steps steps), and the learning rate chosen
// from `lrs` by hold-out on its own queries (never on the test set).
struct HonestTraining {
  std::vector<double> lrs = {0.01, 0.03, 0.1};
  double holdout = 0.2;   // share of the queries held out to choose the lr (at least one image)
  int min_epochs = 30;
  int64_t min_steps = 150;
  int batch = 64;
  float momentum = 0.9f, weight_decay = 5e-4f;
  uint64_t seed = 0;      // shuffling
  int pad_to = 0;
  // Parameters trained (by key); null = all. Frozen ones still receive gradients, unused.
  std::function<bool(const std::string&)> trainable;
};

struct HonestFit {
  double lr = 0;                         // the chosen learning rate (0 when every lr diverged)
  std::vector<double> holdout_accuracy;  // [lr]: agreement with the held-out labels (NaN: diverged)
  int epochs = 0;                        // of the final training
  double accuracy = std::numeric_limits<double>::quiet_NaN();  // acc() of the final model
};

// For each lr: a copy of `start`, prepared (`prepare`, e.g. BatchNorm re-estimated, on the
// images it may train on) and trained on the first (1 - holdout) of `queries`, scored on the
// held-out rest; the best lr (ties: the first) then trains a fresh prepared copy on all queries,
// whose accuracy acc() gives. `start` is not modified. Fewer than two queries -> no hold-out:
// the first lr is used.
HonestFit fit_with_holdout(models::Model& start, const data::Dataset& queries,
                           const data::Normalization& norm, const HonestTraining& h,
                           const AccuracyFn& acc,
                           const std::function<void(models::Model&, const data::Dataset&)>&
                               prepare = {});

// ---- norm clipping ----

struct NormClipResult {
  std::vector<double> k, accuracy;  // accuracy[i] after clipping to mean ± k[i]·std per layer
  double global_lo = 0, global_hi = 0;
  double global_accuracy = -1;      // -1 when no global range was given
};

// For each k (>= 0, else std::invalid_argument): clamp every eligible layer to mean ± k·std of
// that layer's obfuscated weights (population std), measure accuracy. If global_lo < global_hi,
// also clamp every eligible layer to [global_lo, global_hi] and measure accuracy.
NormClipResult norm_clip_attack(models::Model& obfuscated, const std::vector<std::string>& layers,
                                const std::vector<double>& ks, double global_lo,
                                double global_hi, const AccuracyFn& acc);

// An attacker's global clipping range without the secrets: mean ± k·std over all eligible
// weights of the (obfuscated) model, population std. (`--global-range auto`, k = 3.)
std::pair<double, double> auto_global_range(models::Model& model,
                                            const std::vector<std::string>& layers,
                                            double k = 3.0);

// ---- fine-tuning ----

struct FinetuneOptions {
  std::vector<double> fractions = {0.01, 0.05, 0.1};  // each in (0, 1]
  int epochs = 5;                                     // >= 0
  std::string optimizer = "sgd";                      // sgd | adam
  float lr = 0.01f;                                   // constant schedule
  float momentum = 0.9f;                              // plain (not Nesterov) momentum
  float weight_decay = 5e-4f;
  int batch = 128;
  bool scratch = true;  // also train the architecture from scratch on the same data
  uint64_t seed = 0;    // data fraction, shuffling, and the scratch model's initialisation
  int pad_to = 0;
  bool augment = false;
  bool progress = false;
};

struct FinetuneResult {
  std::vector<double> fractions;
  // [P][epochs + 1]; column 0 = before training. An epoch whose training diverged (non-finite
  // loss) and every later one hold NaN (a warning is printed on stderr).
  std::vector<std::vector<double>> accuracy, scratch_accuracy;  // scratch empty when !scratch
};

// For each p: fine-tunes ALL weights of a copy of the obfuscated model on
// data::fraction(train, p, seed) (train mode, constant lr, one optimizer for all epochs),
// measuring accuracy after every epoch; and, when o.scratch, trains a freshly initialised model
// of the same architecture (build_model(spec, seed)) on the same data for the same epochs.
FinetuneResult finetune_attack(models::Model& obfuscated, const data::Dataset& train,
                               const data::Normalization& norm, const FinetuneOptions& o,
                               const AccuracyFn& acc);

// ---- boundary reset (GroupCover, ICML 2024) ----

struct BoundaryResetOptions {
  double delta = 1e-3;          // flag weights w with w <= lo + delta or w >= hi - delta
  std::string mode = "zero";    // zero | mean | donor
  models::Model* donor = nullptr;  // mode donor: a model of the same architecture
  int64_t finetune_samples = 0;    // n labelled training samples (0 = no fine-tuning)
  int finetune_epochs = 5;
  float lr = 0.01f;  // SGD, momentum 0.9, weight decay 5e-4, constant lr
  int batch = 64;
  uint64_t seed = 0;  // which n samples (a seeded permutation) and their shuffling
  int pad_to = 0;
};

struct BoundaryResetResult {
  int64_t detected = 0;        // weights flagged
  int64_t true_positives = 0;  // of those, truly obfuscated (needs secrets; else 0)
  int64_t obfuscated = 0;      // secrets->total() (0 without secrets)
  double accuracy_reset = 0;   // right after the reset
  // [finetune_epochs + 1] with column 0 = accuracy_reset; empty when finetune_samples == 0.
  // Diverged epochs hold NaN as in FinetuneResult.
  std::vector<double> accuracy_finetuned;
  double lo = 0, hi = 0;  // min and max over all eligible weights of the obfuscated model
  std::vector<int64_t> detected_per_layer;
};

// The reset step on its own, in place on `model`: flags, in every layer, the entries w with
// w <= lo + delta or w >= hi - delta, and sets them to 0 (zero), to the layer's mean over its
// unflagged entries (mean; 0 when every entry is flagged), or to donor's values at the same
// positions (donor; same shapes required). Returns, per layer, the flagged flat indexes in
// ascending order. Unknown mode, missing donor or a shape mismatch → std::invalid_argument.
std::vector<std::vector<int64_t>> apply_boundary_reset(models::Model& model,
                                                       const std::vector<std::string>& layers,
                                                       double lo, double hi, double delta,
                                                       const std::string& mode,
                                                       models::Model* donor = nullptr);

// lo/hi = min/max over all eligible weights of the obfuscated model; apply_boundary_reset on a
// copy; accuracy; optionally fine-tune on a seeded subset of n training samples for E epochs
// with accuracy per epoch. `secrets` (may be null) lets the result count true positives
// (flagged entries listed in the secrets) and the obfuscated total.
BoundaryResetResult boundary_reset_attack(models::Model& obfuscated,
                                          const std::vector<std::string>& layers,
                                          const splitter::Secrets* secrets,
                                          const data::Dataset& train,
                                          const data::Normalization& norm,
                                          const BoundaryResetOptions& o, const AccuracyFn& acc);

}  // namespace nns::exp
