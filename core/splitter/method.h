// Protection methods behind one interface (SPEC §2 "Methods"). The search (experiments/protect)
// picks filters per layer; a method turns one filter choice into changed weights of the model,
// in place, and can undo that. A method object owns the entries it changes (MaskSet: indexes,
// pretrained values and changed values, all on the model's device, uploaded once per episode)
// and the best episode so far. The secrets are not built here: the caller diffs the original
// and the obfuscated model (diff_secrets), so a method cannot leave a change out of them.
//
//   nnsplitter  the paper: entries with |w - c| < eps in the chosen filters, pushed by Adam to
//               maximise the loss, clamped to one shared [lo, hi] (the eligible range).
//   quantile    hypothesis: the extreme-value detectors find NNSplitter because its values pile
//               up on the shared bounds; the same mask and objective with a bound per weight
//               drawn inside the high-density part of its own layer (between two quantiles of
//               the layer's pretrained values) leaves no spike and nothing at the extremes.
//   permute     hypothesis: a detector that looks at values cannot see a permutation; swapping
//               values among entries of the chosen filters (pairs picked by the first-order loss
//               gain, kept when they lower the validation accuracy) preserves every layer's
//               multiset of values exactly; the secret is still indexes + original values.
//   swap        hypothesis: values inside one filter are too alike for permute to do damage; a
//               permutation at layer scope (each swap pairs an entry of a chosen filter with any
//               entry of the same layer, picked by the first-order loss gain with the layer's
//               full weight gradient) moves far more damaging values and still keeps every
//               layer's multiset; only values strictly inside the layer's [q, 1 - q] quantiles
//               move, so no per-layer extreme ever lands in a secret position.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/splitter/mask.h"
#include "core/splitter/obfuscator.h"
#include "core/tensor.h"

namespace nns::splitter {

// Per eligible layer, the chosen filters (sorted, distinct).
using FilterChoice = std::vector<std::vector<int32_t>>;

// One parameter of a method. Its configuration key is splitter.<method>.<name>; the schema
// (experiments/protect.cpp) is generated from these descriptions, so the default lives here and
// nowhere else. A neutral description: core/ knows nothing of the config system.
struct MethodKey {
  enum class Type { Int, Float, String, Bool };
  std::string name;
  Type type = Type::Float;
  std::string default_value;  // YAML text, e.g. "12", "0.25", "negate"
  std::string doc;
  std::optional<double> min, max;     // numbers
  std::vector<std::string> choices;   // strings
};

// A method's parameter values by name (YAML text, validated by the schema before they get
// here). A name that was not set reads as its key's default; a name the method does not declare
// is a std::invalid_argument.
class MethodParams {
 public:
  void set(const std::string& name, std::string value) { values_[name] = std::move(value); }
  int64_t integer(const std::string& method, const std::string& name) const;
  double number(const std::string& method, const std::string& name) const;
  std::string text(const std::string& method, const std::string& name) const;
  bool flag(const std::string& method, const std::string& name) const;

 private:
  std::map<std::string, std::string> values_;
};

struct MethodOptions;
class Method;

// Everything the rest of the program needs to know about one method: its name (the value of
// splitter.method), a one-line description for the schema, its hypothesis (docs/methods.md
// says the same at length), its keys, and how to build it.
struct MethodInfo {
  std::string name, summary, hypothesis;
  std::vector<MethodKey> keys;
  std::function<std::unique_ptr<Method>(models::Model&, std::vector<EligibleLayer>, MethodOptions)>
      make;
};

// Every method, the default first. Adding a method: one file core/splitter/method_<name>.cpp
// holding the class and its `MethodInfo <name>_method_info()`, its line in this table
// (method.cpp), and its test (tests/core/test_methods.cpp runs the shared contract on every
// entry of the table by itself).
const std::vector<MethodInfo>& method_table();
// The entry named `name`, or null.
const MethodInfo* find_method(const std::string& name);
// The names in the table, in its order.
std::vector<std::string> method_names();

// Typed method parameters, parsed once from the configuration. The common part (c, eps, the
// obfuscator's Adam and stopping) is shared by every method; each method reads its own keys
// from `params`.
struct MethodOptions {
  std::string method = "nnsplitter";
  float c = 0, eps = 0;                  // mask: |w - c| < eps (and the swap methods' budget)
  ObfuscatorOptions obfuscator;          // Adam, shared clamp, stopping
  MethodParams params;                   // splitter.<method>.*
  // Convenience for the methods: their own parameters.
  int64_t integer(const std::string& name) const { return params.integer(method, name); }
  double number(const std::string& name) const { return params.number(method, name); }
  std::string text(const std::string& name) const { return params.text(method, name); }
  bool flag(const std::string& name) const { return params.flag(method, name); }
};

// What one episode did.
struct EpisodeOutcome {
  double accuracy = 1.0;           // lowest validation accuracy reached (the kept values)
  int64_t steps = 0;               // optimiser steps (nnsplitter, quantile) or swap rounds
  int evaluations = 0;
  std::vector<int64_t> counts;     // entries the episode may change, per eligible layer
};

// The entries one episode changes, per eligible layer, on the model's device: flat indexes
// (ascending), the pretrained values there and the episode's values.
class MaskSet {
 public:
  MaskSet() = default;
  // Uploads the indexes and reads the pretrained values: the model must hold them.
  MaskSet(const std::vector<EligibleLayer>& layers, std::vector<LayerMask> masks);

  void put_original() const;  // writes the pretrained values back
  void capture();             // values := what the model holds at the indexes
  void put_values() const;    // writes the captured values into the model

  const std::vector<LayerMask>& masks() const { return masks_; }
  std::vector<int64_t> counts() const;
  int64_t total() const;
  bool empty() const { return masks_.empty(); }

  // Host copies for a resumable state: "<prefix><key>.index" (I64 [n]) and "<prefix><key>.value"
  // (F32 [n]) per layer.
  std::vector<std::pair<std::string, Tensor>> export_values(const std::string& prefix) const;
  // The inverse, with the filters of each layer given; the model must hold the pretrained
  // values. Throws std::runtime_error naming `what` when an entry is missing or malformed.
  static MaskSet import_values(const std::vector<EligibleLayer>& layers, const FilterChoice& filters,
                               const std::map<std::string, const Tensor*>& tensors,
                               const std::string& prefix, const std::string& what);

 private:
  const std::vector<EligibleLayer>* layers_ = nullptr;
  std::vector<LayerMask> masks_;               // host indexes, for records and state
  std::vector<Tensor> index_, original_, value_;  // device, one per layer (empty when n = 0)
};

class Method {
 public:
  Method(models::Model& model, std::vector<EligibleLayer> layers, MethodOptions opt);
  virtual ~Method() = default;
  Method(const Method&) = delete;
  Method& operator=(const Method&) = delete;

  const std::string& name() const { return opt_.method; }
  const std::vector<EligibleLayer>& layers() const { return layers_; }

  // One episode on the model, in place: chooses the entries of `filters` to change and leaves
  // the model holding the episode's most damaging values. The model must hold the pretrained
  // values. `seed` is the episode's own randomness. When opt.obfuscator.stop is set during the
  // episode the returned outcome is incomplete; the caller undoes the episode.
  EpisodeOutcome run_episode(const FilterChoice& filters, ObfuscationData& data, uint64_t seed);
  // Puts the pretrained values back in place of the last episode's.
  void undo_episode();
  // Remembers the last episode (call before undo_episode) as the best.
  void keep_episode_as_best();
  bool has_best() const { return !best_.empty(); }
  const MaskSet& best() const { return best_; }
  // Leaves the model holding the best episode's values (the obfuscated model).
  void apply_best();
  // Resume: the best episode's entries and values (see MaskSet::export_values), and back.
  std::vector<std::pair<std::string, Tensor>> export_best() const;
  void import_best(const FilterChoice& filters, const std::map<std::string, const Tensor*>& tensors,
                   const std::string& what);
  // The method's parameters, for the secrets' metadata: "method" and "<method>_<key>" for every
  // key of its table entry.
  std::map<std::string, std::string> metadata() const;
  // What the search chooses in each eligible layer (the controller's action space): by default
  // its filters (output slices). A method may choose other units (spread: input channels).
  virtual std::vector<int> choices_per_layer() const;
  // Entries of one chosen unit of layer l (a filter's filter_size by default): the budget knob
  // (splitter.budget) sizes k with it.
  virtual int64_t choice_size(size_t l) const;

 protected:
  // Changes the model for one episode; returns the entries it may have changed (their
  // pretrained values are what the model held before the call).
  virtual MaskSet obfuscate_episode(const FilterChoice& filters, ObfuscationData& data,
                                    uint64_t seed, EpisodeOutcome& out) = 0;
  // NNSplitter's objective and clamp (Adam maximising the loss) on the entries of `set`, the
  // outcome in `out`: the episode of every method that differs from nnsplitter only in its mask.
  MaskSet adam_episode(MaskSet set, ObfuscationData& data, EpisodeOutcome& out);

  models::Model& model_;
  std::vector<EligibleLayer> layers_;
  MethodOptions opt_;

 private:
  MaskSet current_, best_;
};

// Builds the method opt.method names (method_table()); std::invalid_argument for an unknown
// name.
std::unique_ptr<Method> make_method(models::Model& model, std::vector<EligibleLayer> layers,
                                    MethodOptions opt);

// The methods, exposed for tests.
class NNSplitterMethod : public Method {
 public:
  using Method::Method;

 protected:
  MaskSet obfuscate_episode(const FilterChoice& filters, ObfuscationData& data, uint64_t seed,
                            EpisodeOutcome& out) override;
};

class QuantileMethod : public Method {
 public:
  using Method::Method;
  // Per-weight bounds of the masks of one episode, drawn from `seed` (the contract above):
  // lo[l][i] <= hi[l][i], both values between two quantiles of layer l's pretrained weights.
  std::pair<std::vector<std::vector<float>>, std::vector<std::vector<float>>> bounds(
      const std::vector<LayerMask>& masks, uint64_t seed);

 protected:
  MaskSet obfuscate_episode(const FilterChoice& filters, ObfuscationData& data, uint64_t seed,
                            EpisodeOutcome& out) override;

 private:
  std::vector<std::vector<float>> sorted_;  // per layer, the pretrained weights, sorted (lazy)
};

class PermuteMethod : public Method {
 public:
  using Method::Method;

 protected:
  MaskSet obfuscate_episode(const FilterChoice& filters, ObfuscationData& data, uint64_t seed,
                            EpisodeOutcome& out) override;
};

class SwapMethod : public Method {
 public:
  using Method::Method;
  // The open interval of values that may move in each eligible layer: its pretrained values'
  // quantiles at swap_quantile and 1 - swap_quantile. The model must hold the pretrained values
  // on the first call (or the first episode).
  const std::vector<std::pair<float, float>>& movable_range();

 protected:
  MaskSet obfuscate_episode(const FilterChoice& filters, ObfuscationData& data, uint64_t seed,
                            EpisodeOutcome& out) override;

 private:
  std::vector<std::pair<float, float>> range_;  // per layer (lazy)
};

}  // namespace nns::splitter
