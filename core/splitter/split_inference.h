// TEE-style split inference (SPEC.md §1, the authors' later README): the normal world runs the
// OBFUSCATED model, O_n = (W + ΔW′) * X; a secure side knows, per obfuscated filter, the change
// ΔW′ = W_obf − W_orig and computes O_s = ΔW′ * X on the affected output channels only; since
// convolution and linear layers are linear in their weights, O_n − O_s = W * X.
//
// SplitInference installs `post_forward` hooks on the Conv2d/Linear modules whose weight (or
// bias) has secrets. Each hook runs a small convolution / linear layer made of the affected
// filters only (ΔW′ rows gathered into a [n_affected, ...] tensor, Δb as its bias), and
// subtracts its output from the corresponding output channels (gather, axpy, scatter on the
// model's device). Grouped and depthwise convolutions are handled per group. Secrets on any
// other tensor (BatchNorm parameters, ...) cannot be corrected linearly: the constructor throws.
//
// The result equals the original model's output up to float rounding (not bit for bit: use
// apply_secrets for an exact restore).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/splitter/secrets.h"

namespace nns::splitter {

struct SplitLayerInfo {
  std::string module;              // dotted module path, e.g. "layer1.0.conv1"
  std::string kind;                // "conv" or "linear"
  std::vector<int32_t> filters;    // affected output channels, ascending
  int64_t secure_macs_per_image;   // multiply-accumulates of O_s for one image
};

class SplitInference {
 public:
  // Checks the secrets against the model (check_secrets_for_model: fingerprint, keys, ranges)
  // and that every secret tensor is a Conv2d/Linear weight or bias; computes ΔW′ per affected
  // filter. Runs one probe forward of a single zero image (eval mode, restored afterwards) to
  // learn the output sizes for secure_macs_per_image. The model must outlive this object.
  SplitInference(models::Model& obfuscated, const Secrets& s);
  ~SplitInference();
  SplitInference(const SplitInference&) = delete;
  SplitInference& operator=(const SplitInference&) = delete;

  // Installs the hooks (chained after any hook already present); idempotent.
  void install();
  // Removes them, restoring the hooks that were there before; idempotent.
  void remove();
  bool installed() const { return installed_; }

  // Total multiply-accumulates the secure side performs per image (over every hooked layer).
  int64_t secure_macs_per_image() const;
  int64_t affected_filters() const;
  std::vector<SplitLayerInfo> layers() const;

  struct Layer;  // implementation detail

 private:
  std::vector<std::unique_ptr<Layer>> layers_;
  bool installed_ = false;
};

}  // namespace nns::splitter
