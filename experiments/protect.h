// `protect`: the NNSplitter search end to end (SPEC §1). The controller proposes filters, the
// mask generator picks the weights near c, the obfuscator pushes them; every episode starts
// from the pretrained weights; the best episode is split into an obfuscated model and secrets.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/models/zoo.h"
#include "datasets/datasets.h"
#include "experiments/config.h"

namespace nns::exp {

// The splitter.* and controller.* keys (every method parameter), with defaults and docs.
void add_method_keys(Schema& s);
Schema method_schema();

struct ProtectInputs {
  models::Model* model = nullptr;          // pretrained; left holding the OBFUSCATED weights
  const data::Dataset* train = nullptr;    // full training split (the validation split is held out of it)
  const data::Dataset* test = nullptr;
  data::Normalization norm;
  int pad_to = 0;
  std::string dataset_name;
  std::string out_dir;                     // obfuscated.safetensors, secrets.safetensors, trajectory.json
  std::vector<uint8_t> seal_key;           // empty = unsealed secrets
  uint64_t seed = 0;
  bool progress = true;
  bool resume = false;                     // continue from out_dir/search_state.safetensors
  const std::atomic<bool>* stop_flag = nullptr;
  // Called after every finished update (after its resumable state is saved), 1-based.
  std::function<void(int)> on_update_end;
  std::map<std::string, std::string> weights_metadata;  // copied into the obfuscated file
};

struct EpisodeRecord {
  int episode = 0, update = 0;
  std::vector<std::vector<int32_t>> filters;
  std::vector<int64_t> counts;
  int64_t total = 0;
  double accuracy = 0, reward = 0, seconds = 0;
  int64_t steps = 0;
  int evaluations = 0;
};

struct UpdateRecord {
  int update = 0;
  double loss = 0, mean_reward = 0;
};

struct ProtectResult {
  double original_accuracy = 0, obfuscated_accuracy = 0, restored_accuracy = 0;
  double best_val_accuracy = 0;
  int64_t obfuscated_weights = 0, total_weights = 0, eligible_weights = 0;
  std::vector<std::string> layers;
  std::vector<int64_t> per_layer_counts;
  std::vector<std::vector<int32_t>> best_filters;
  double c = 0, eps = 0, clamp_lo = 0, clamp_hi = 0;
  int k = 0;                      // chosen units per layer (splitter.k, or from splitter.budget)
  double target_per_layer = 0;    // eps auto's target (idem)
  int episodes = 0, updates = 0;
  double seconds = 0, search_seconds = 0;
  bool interrupted = false;
  bool restored_bit_exact = false;
  int64_t secrets_bytes = 0;
  std::vector<EpisodeRecord> trajectory;
  std::vector<UpdateRecord> update_records;
  std::string obfuscated_path, secrets_path, trajectory_path, fingerprint;
  std::string method;             // splitter.method
  uint64_t seed = 0;
  std::string input_fingerprint;  // of the pretrained model protect was given
  nlohmann::json to_json() const;
};

ProtectResult protect(const ProtectInputs& in, const Config& cfg);

}  // namespace nns::exp
