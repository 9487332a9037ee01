// The inner optimisation of NNSplitter (SPEC §1 "Obfuscator"): push only the masked weights,
// with Adam and a clamp to [lo, hi], to maximise the training cross-entropy; keep the weights of
// the lowest validation accuracy seen.
//
// Cost model: the model runs in eval mode with every BatchNorm folded into its convolution's
// epilogue; backward computes activation gradients through the whole network but weight
// gradients only for the selected filters of the masked layers; the update is one fused
// masked Adam + clamp over the sparse list of masked entries.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "core/splitter/mask.h"
#include "core/tensor.h"

namespace nns::splitter {

struct ObfuscatorOptions {
  float lr = 0.05f, beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;
  float l1 = 0.0f;            // lambda of lambda * sum |w_masked|
  float clamp_lo = -1, clamp_hi = 1;
  int max_epochs = 100;       // over the training data
  int patience = 2;           // evaluations without a new minimum before stopping
  int64_t eval_every = 0;     // steps between evaluations (0 = once per epoch)
  int64_t max_steps = 0;      // hard cap on steps (0 = none)
  // BatchNorm during the obfuscation (its steps and its accuracy measurements): false = the
  // running statistics (the paper: eval mode, BN folded); true = each batch's own statistics,
  // the running ones left untouched, so that what the search optimises and measures is what an
  // attacker who re-estimates the statistics (or fine-tunes in training mode) gets.
  bool bn_batch_stats = false;
  // Checked before every step: when set, the obfuscation stops at once (the caller discards
  // the episode; the best weights so far are still put in place).
  const std::atomic<bool>* stop = nullptr;
};

// A source of training batches (shuffled, no augmentation) and an accuracy oracle on the
// validation data. Both run the model in whatever mode it is in.
struct ObfuscationData {
  // Fills x, y with the next training batch; returns false at the end of an epoch (the next
  // call starts a new epoch).
  std::function<bool(Tensor& x, Tensor& y)> next_batch;
  // Accuracy of the model on the validation data, in [0, 1].
  std::function<double()> accuracy;
};

struct ObfuscationResult {
  double best_accuracy = 1.0;
  int64_t steps = 0;
  int evaluations = 0;
  std::vector<double> accuracy_curve;  // one entry per evaluation
  std::vector<int64_t> curve_steps;
  double seconds = 0;
};

// Optional bounds per masked entry, replacing the shared clamp: lo[m][i] <= hi[m][i] for entry
// i of masks[m] (one vector per mask, empty for an empty mask), inside [clamp_lo, clamp_hi].
struct EntryBounds {
  std::vector<std::vector<float>> lo, hi;
};

// Runs one obfuscation of `model` on the given masks (weights of `layers`), leaving the best
// weights in place. The caller saves and later restores the original masked values. With
// `bounds`, every entry is clamped to its own bounds after each step (on the host: a few
// hundred values, not worth a kernel).
ObfuscationResult obfuscate(models::Model& model, const std::vector<EligibleLayer>& layers,
                            const std::vector<LayerMask>& masks, ObfuscationData& data,
                            const ObfuscatorOptions& opt, const EntryBounds* bounds = nullptr);

// One training-loss pass: forward x, mean cross-entropy against y, backward of dCE/dlogits into
// the model's gradients (only the masked filters' in masked mode). probs and dlogits are scratch
// buffers on the model's device, resized here and reused across calls. The step shared by the
// obfuscator and the permutation method.
void cross_entropy_backward(models::Model& model, const Tensor& x, const Tensor& y, Tensor& probs,
                            Tensor& dlogits);

// Puts the model in (or out of) the obfuscation mode: eval mode, BN folded (with
// bn_batch_stats: BN in training mode without updating its statistics, not folded), weight
// gradients only for the masked filters. Exposed for tests and benchmarks.
void enter_masked_mode(models::Model& model, const std::vector<EligibleLayer>& layers,
                       const std::vector<LayerMask>& masks, bool bn_batch_stats = false);
void leave_masked_mode(models::Model& model);

}  // namespace nns::splitter
