#include "experiments/protect.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>

#include "core/engine/plan.h"
#include "core/io/atomic_file.h"
#include "core/io/input_file.h"
#include "core/io/json_bounded.h"
#include "core/io/model_io.h"
#include "core/io/onnx.h"
#include "core/io/safetensors.h"
#include "core/random.h"
#include "core/splitter/mask.h"
#include "core/splitter/method.h"
#include "core/splitter/obfuscator.h"
#include "core/splitter/secrets.h"
#include "experiments/progress.h"
#include "experiments/trainer.h"
#include "kernels/ops.h"
#include "rl/controller.h"
#include "rl/random_policy.h"

namespace nns::exp {

namespace fs = std::filesystem;
using nlohmann::json;

void add_method_keys(Schema& s) {
  auto add = [&](std::string path, ValueType t, std::string def, std::string doc,
                 std::optional<double> lo = {}, std::optional<double> hi = {},
                 std::vector<std::string> choices = {}) {
    s.add({std::move(path), t, std::move(def), std::move(doc), lo, hi, std::move(choices)});
  };
  using V = ValueType;
  {
    std::string doc = "how the chosen filters are obfuscated:";
    for (const auto& m : splitter::method_table()) doc += " " + m.name + " (" + m.summary + ");";
    doc.back() = '.';
    add("splitter.method", V::String, "nnsplitter", doc, {}, {}, splitter::method_names());
  }
  add("splitter.bn_stats", V::String, "running",
      "BatchNorm during the search (steps and reward): running = its running statistics (the "
      "paper), batch = each batch's own statistics with the running ones left untouched, so the "
      "damage cannot be a shift that re-estimated statistics or fine-tuning undo",
      {}, {}, {"running", "batch"});
  add("splitter.rule", V::String, "spatial",
      "eligible layers: spatial (>=2-D weights whose last dim > 1) or all (every >=2-D weight)",
      {}, {}, {"spatial", "all"});
  add("splitter.k", V::Int, "1", "filters selected per layer", 1, 4096);
  add("splitter.c", V::FloatOrAuto, "mean",
      "the constant c of |w - c| < eps: a number, or mean (of the eligible weights)", {}, {},
      {"mean"});
  add("splitter.eps", V::FloatOrAuto, "auto",
      "eps of |w - c| < eps: a number, or auto (smallest eps selecting target_per_layer weights "
      "per layer on average)", 0, {}, {"auto"});
  add("splitter.target_per_layer", V::Float, "15",
      "with eps auto: expected number of masked weights per layer", 0.01, {});
  add("splitter.budget", V::Float, "0",
      "share of all the model's weights to change (0.001 = 0.1%, the paper's budget); 0 = off: "
      "k and target_per_layer as given. Sets target_per_layer = budget * weights / layers and "
      "k = the fewest chosen units (filters; input channels for spread) per layer whose entries "
      "hold three times the budget (at most the smallest layer's count)",
      0, 0.5);
  add("splitter.clamp", V::FloatPairOrAuto, "auto",
      "[lo, hi] bounds of the obfuscated weights; auto = min and max of the eligible weights",
      {}, {}, {"auto"});
  add("splitter.l1", V::Float, "0", "lambda of the L1 term lambda * sum |w_masked|", 0, {});
  add("splitter.lr", V::Float, "0.05", "Adam learning rate of the obfuscator", 1e-9, {});
  add("splitter.batch", V::Int, "128", "training batch size of the obfuscator", 1, 65536);
  add("splitter.max_epochs", V::Int, "100", "obfuscation epochs at most", 1, {});
  add("splitter.max_steps", V::Int, "0", "obfuscation steps at most per episode (0 = no cap)", 0, {});
  add("splitter.patience", V::Int, "2", "evaluations without a new minimum before stopping", 1, {});
  add("splitter.eval_every", V::Int, "0",
      "steps between validation evaluations (0 = once per epoch)", 0, {});
  add("splitter.val_size", V::Int, "5000",
      "images held out of the training set for validation (reward and early stopping)", 1, {});
  add("splitter.precision", V::String, "fp32",
      "arithmetic of the obfuscation steps' convolutions: fp32, or bf16 (bf16 operands, fp32 "
      "accumulation and master weights; CPU with avx512_bf16, --cpu-engine onednn or auto). "
      "Every reported accuracy (rewards included) is computed in fp32",
      {}, {}, {"fp32", "bf16"});
  add("splitter.val_source", V::String, "split",
      "where the reward is measured: split (held-out training images) or test (the authors)", {},
      {}, {"split", "test"});
  // Each method's own keys, from its entry in the method table (core/splitter/method.h).
  for (const auto& m : splitter::method_table())
    for (const auto& k : m.keys) {
      using T = splitter::MethodKey::Type;
      const ValueType t = k.type == T::Int     ? V::Int
                          : k.type == T::Float ? V::Float
                          : k.type == T::Bool  ? V::Bool
                                               : V::String;
      add("splitter." + m.name + "." + k.name, t, k.default_value, m.name + ": " + k.doc, k.min,
          k.max, k.choices);
    }
  add("controller.kind", V::String, "rl",
      "filter selection: rl (the LSTM/RNN policy) or random (uniform, same episode budget)", {},
      {}, {"rl", "random"});
  add("controller.cell", V::String, "lstm", "recurrent cell: lstm or rnn (the authors' code)",
      {}, {}, {"lstm", "rnn"});
  add("controller.hidden", V::Int, "512", "hidden size", 1, 8192);
  add("controller.token_size", V::Int, "256", "one-hot input size", 1, 65536);
  add("controller.lr", V::Float, "0.01", "Adam learning rate of the controller", 1e-9, {});
  add("controller.updates", V::Int, "20", "policy updates at most", 1, {});
  add("controller.episodes_per_update", V::Int, "5", "episodes per update (the batch)", 1, {});
  add("controller.early_stop", V::Int, "25",
      "stop when the best reward has not improved for this many episodes", 1, {});
  add("controller.with_replacement", V::Bool, "false",
      "draw the k filters with replacement (reproduces the authors)");
  add("controller.init_range", V::Float, "0.1", "parameters uniform in [-r, r]", 0, {});
}

Schema method_schema() {
  Schema s;
  add_method_keys(s);
  return s;
}

json ProtectResult::to_json() const {
  json j;
  j["original_accuracy"] = original_accuracy;
  j["obfuscated_accuracy"] = obfuscated_accuracy;
  j["restored_accuracy"] = restored_accuracy;
  j["restored_bit_exact"] = restored_bit_exact;
  j["best_val_accuracy"] = best_val_accuracy;
  j["obfuscated_weights"] = obfuscated_weights;
  j["total_weights"] = total_weights;
  j["eligible_weights"] = eligible_weights;
  j["obfuscated_fraction"] = total_weights ? double(obfuscated_weights) / double(total_weights) : 0.0;
  j["layers"] = layers;
  j["per_layer_counts"] = per_layer_counts;
  j["best_filters"] = best_filters;
  j["c"] = c;
  j["eps"] = eps;
  j["clamp"] = {clamp_lo, clamp_hi};
  j["k"] = k;
  j["target_per_layer"] = target_per_layer;
  j["episodes"] = episodes;
  j["updates"] = updates;
  j["seconds"] = seconds;
  j["search_seconds"] = search_seconds;
  j["secrets_bytes"] = secrets_bytes;
  j["obfuscated"] = obfuscated_path;
  j["secrets"] = secrets_path;
  j["trajectory"] = trajectory_path;
  j["fingerprint"] = fingerprint;
  j["interrupted"] = interrupted;
  j["method"] = method;
  j["seed"] = seed;
  j["input_fingerprint"] = input_fingerprint;
  return j;
}

namespace {

// A dataset normalised once into device batches, for fast repeated accuracy measurements.
// Batches are as large as the obfuscation's: every layer keeps its activation buffers at the
// largest batch it has seen, so a larger evaluation batch would raise the peak memory of the
// whole search (256 against 128 took a ResNet-20 protect from ~0.9 to ~1.3 GB).
struct PreparedSet {
  std::vector<Tensor> x, y;
  int64_t total = 0;
  int batch = 0;
  PreparedSet(const data::Dataset& d, const data::Normalization& norm, int pad_to, int batch_,
              Device dev)
      : batch(batch_) {
    data::BatchOptions bo;
    bo.pad_to = pad_to;
    data::Loader loader(d, norm, batch, false, 0, bo);
    Tensor xb, yb;
    while (loader.next(xb, yb)) {
      x.push_back(xb.to(dev));
      y.push_back(yb.to(dev));
      total += xb.dim(0);
    }
  }
  double accuracy(models::Model& m) {
    ops::Context ctx{m.device(), nullptr};
    int k = m.spec().num_classes;
    int64_t correct = 0;
    Tensor pred(Shape{batch}, DType::I32, m.device());
    models::NoGrad no_grad(m);
    m.weights_changed();  // an inference plan packs the weights once per evaluation
    for (size_t b = 0; b < x.size(); ++b) {
      const Tensor& logits = m.forward(x[b]);
      correct += ops::argmax_accuracy(ctx, int(x[b].dim(0)), k, logits.f32(), y[b].i32(), pred.i32());
    }
    return total ? double(correct) / double(total) : 0.0;
  }
};

json episode_json(const EpisodeRecord& e) {
  return {{"episode", e.episode}, {"update", e.update}, {"filters", e.filters},
          {"counts", e.counts},   {"total", e.total},   {"accuracy", e.accuracy},
          {"reward", e.reward},   {"seconds", e.seconds}, {"steps", e.steps},
          {"evaluations", e.evaluations}};
}

EpisodeRecord episode_from_json(const json& j) {
  EpisodeRecord e;
  e.episode = j["episode"];
  e.update = j["update"];
  e.filters = j["filters"].get<std::vector<std::vector<int32_t>>>();
  e.counts = j["counts"].get<std::vector<int64_t>>();
  e.total = j["total"];
  e.accuracy = j["accuracy"];
  e.reward = j["reward"];
  e.seconds = j["seconds"];
  e.steps = j["steps"];
  e.evaluations = j["evaluations"];
  return e;
}

json updates_json(const std::vector<UpdateRecord>& updates) {
  json ur = json::array();
  for (auto& u : updates)
    ur.push_back({{"update", u.update}, {"loss", u.loss}, {"mean_reward", u.mean_reward}});
  return ur;
}

void write_json_atomic(const std::string& path, const json& j) {
  io::write_file_atomically(path, j.dump(1) + "\n");
}

std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// Every protect parameter, parsed once from the configuration; the defaults are the schema's.
// c, eps and clamp may depend on the model ("mean", "auto"): empty = derive from the weights.
struct ProtectOptions {
  std::string rule, val_source;
  int64_t val_size = 0;
  int k = 1, batch = 0, updates = 0, per_update = 0, early_stop = 0;
  std::optional<double> c, eps;
  double target_per_layer = 0;
  std::optional<std::pair<double, double>> clamp;
  double budget = 0;  // splitter.budget (0 = off)
  bool use_rl = true;
  rl::ControllerOptions controller;
  splitter::MethodOptions method;  // c, eps and clamps are filled once the model is known

  static ProtectOptions parse(const Config& cfg) {
    ProtectOptions o;
    o.rule = cfg.get_string("splitter.rule");
    o.val_source = cfg.get_string("splitter.val_source");
    o.val_size = cfg.get_int("splitter.val_size");
    o.k = int(cfg.get_int("splitter.k"));
    if (!cfg.is_word("splitter.c", "mean")) o.c = cfg.get_float("splitter.c");
    if (!cfg.is_word("splitter.eps", "auto")) o.eps = cfg.get_float("splitter.eps");
    o.target_per_layer = cfg.get_float("splitter.target_per_layer");
    if (!cfg.is_word("splitter.clamp", "auto")) o.clamp = cfg.get_pair("splitter.clamp");
    o.batch = int(cfg.get_int("splitter.batch"));
    o.updates = int(cfg.get_int("controller.updates"));
    o.per_update = int(cfg.get_int("controller.episodes_per_update"));
    o.early_stop = int(cfg.get_int("controller.early_stop"));
    o.use_rl = cfg.get_string("controller.kind") == "rl";
    auto& co = o.controller;
    co.cell = cfg.get_string("controller.cell");
    co.hidden = int(cfg.get_int("controller.hidden"));
    co.token_size = int(cfg.get_int("controller.token_size"));
    co.k = o.k;
    co.with_replacement = cfg.get_bool("controller.with_replacement");
    co.init_range = float(cfg.get_float("controller.init_range"));
    co.lr = float(cfg.get_float("controller.lr"));
    auto& m = o.method;
    m.method = cfg.get_string("splitter.method");
    m.obfuscator.lr = float(cfg.get_float("splitter.lr"));
    m.obfuscator.l1 = float(cfg.get_float("splitter.l1"));
    m.obfuscator.max_epochs = int(cfg.get_int("splitter.max_epochs"));
    m.obfuscator.patience = int(cfg.get_int("splitter.patience"));
    m.obfuscator.eval_every = cfg.get_int("splitter.eval_every");
    m.obfuscator.max_steps = cfg.get_int("splitter.max_steps");
    m.obfuscator.bn_batch_stats = cfg.get_string("splitter.bn_stats") == "batch";
    const splitter::MethodInfo* info = splitter::find_method(m.method);
    if (!info) throw ConfigError("splitter.method: unknown method '" + m.method + "'");
    for (const auto& k : info->keys)
      m.params.set(k.name, cfg.text("splitter." + m.method + "." + k.name));
    o.budget = cfg.get_float("splitter.budget");
    return o;
  }
};

// ---- settings of an output folder: a finished result is never replaced by other settings

json settings_json(const Config& cfg, const ProtectInputs& in, const std::string& input_fp) {
  json keys = json::object();
  static const Schema schema = method_schema();
  for (const auto& k : schema.keys()) keys[k.path] = cfg.text(k.path);
  return {{"config", keys}, {"seed", in.seed}, {"input_fingerprint", input_fp},
          {"dataset", in.dataset_name}};
}

// What differs between recorded and current settings, in words ("seed 1 -> 2").
std::vector<std::string> settings_differences(const json& old_s, const json& new_s) {
  std::vector<std::string> out;
  auto text = [](const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
  if (old_s.value("seed", json()) != new_s["seed"])
    out.push_back("seed " + text(old_s.value("seed", json())) + " -> " + text(new_s["seed"]));
  if (old_s.value("dataset", json()) != new_s["dataset"])
    out.push_back("dataset " + text(old_s.value("dataset", json())) + " -> " + text(new_s["dataset"]));
  if (old_s.value("input_fingerprint", json()) != new_s["input_fingerprint"])
    out.push_back("input weights (fingerprint " + text(old_s.value("input_fingerprint", json())).substr(0, 12) +
                  "... -> " + text(new_s["input_fingerprint"]).substr(0, 12) + "...)");
  const json old_cfg = old_s.value("config", json::object());
  static const Schema schema = method_schema();
  for (auto& [key, value] : new_s["config"].items()) {
    // A key added after the folder was made, at its default, is the run the folder holds.
    const KeySpec* spec = schema.find(key);
    if (!old_cfg.contains(key) && spec && value == json(spec->default_yaml)) continue;
    if (old_cfg.value(key, json()) != value)
      out.push_back(key + " " + (old_cfg.contains(key) ? text(old_cfg[key]) : "(absent)") + " -> " +
                    text(value));
  }
  return out;
}

// Refuses (UsageError, exit 2) to run into a folder holding a finished result (obfuscated model
// or secrets) made with other settings, naming what differs, and into one made with the same
// settings unless resuming (which recomputes the same result). Writes the settings record
// before the search so that every finished result has one.
void guard_output(const ProtectInputs& in, const json& settings) {
  const fs::path dir(in.out_dir);
  const fs::path record = dir / "protect_settings.json";
  std::vector<std::string> finished;
  for (auto name : {"obfuscated.safetensors", "secrets.safetensors"})
    if (fs::exists(dir / name)) finished.push_back((dir / name).string());
  if (!finished.empty()) {
    const std::string what = finished.back();
    if (!fs::exists(record))
      throw UsageError(what + " exists and " + record.string() +
                       " (its settings) does not: refusing to overwrite a finished result; choose "
                       "another --out or delete it");
    json old_s;
    try {
      old_s = io::parse_json_bounded(
          io::read_input_file(record.string(), io::kMaxRecordBytes, "settings record"),
          record.string(), "settings record");
    } catch (const std::exception& e) {
      throw UsageError(record.string() + ": unreadable (" + e.what() +
                       "): refusing to overwrite the finished result beside it");
    }
    auto diff = settings_differences(old_s, settings);
    if (!diff.empty()) {
      std::string list;
      for (size_t i = 0; i < diff.size(); ++i) list += (i ? "; " : "") + diff[i];
      throw UsageError(what + " was made with other settings (" + list +
                       "): refusing to overwrite it (its secrets would be lost); choose another "
                       "--out or delete it");
    }
    if (!in.resume)
      throw UsageError(what + " exists: choose another --out or delete it (or --resume to redo "
                              "it with the same settings)");
  }
  write_json_atomic(record.string(), settings);
}

// ---- the search

// The reward and obfuscation data: validation split (reward), training part (obfuscation),
// test set (report).
struct SearchData {
  data::Dataset train;
  std::unique_ptr<PreparedSet> val, test;
};

SearchData prepare_data(const ProtectInputs& in, const ProtectOptions& o, Device dev) {
  SearchData d;
  data::Dataset val_part;
  if (o.val_source == "test") {
    d.train = *in.train;
    val_part = *in.test;
  } else {
    if (o.val_size >= in.train->size())
      throw ConfigError("splitter.val_size = " + std::to_string(o.val_size) +
                        " must be smaller than the training set (" +
                        std::to_string(in.train->size()) + " images)");
    std::tie(d.train, val_part) = data::split_train_val(*in.train, o.val_size, in.seed);
  }
  d.val = std::make_unique<PreparedSet>(val_part, in.norm, in.pad_to, o.batch, dev);
  d.test = std::make_unique<PreparedSet>(*in.test, in.norm, in.pad_to, o.batch, dev);
  return d;
}

// Everything a resumed search needs besides the policy's and the method's own state.
struct SearchState {
  int next_update = 0, since_improved = 0;
  double best_reward = -std::numeric_limits<double>::infinity();
  EpisodeRecord best_record;
  std::vector<EpisodeRecord> trajectory;
  std::vector<UpdateRecord> updates;
};

class Search {
 public:
  Search(const ProtectInputs& in, const Config& cfg, const ProtectOptions& o, SearchData& data,
         splitter::Method& method, std::vector<int> filters_per_layer)
      : in_(in), cfg_(cfg), o_(o), data_(data), method_(method),
        state_path_((fs::path(in.out_dir) / "search_state.safetensors").string()),
        random_(filters_per_layer, o.k) {
    rl::ControllerOptions co = o.controller;
    co.seed = Rng::derive(in.seed, 0xC0);
    co.device = in.model->device();
    controller_ = std::make_unique<rl::Controller>(std::move(filters_per_layer), co);
  }

  // Loads the saved state when resuming and one exists.
  void maybe_resume() {
    if (!in_.resume || !fs::exists(state_path_)) return;
    auto f = io::read_safetensors(state_path_);
    auto search = f.metadata.find("search");
    if (search == f.metadata.end())
      throw std::runtime_error(state_path_ + ": not a saved search (metadata lacks 'search'); "
                               "delete it to start afresh");
    try {
      json meta = io::parse_json_bounded(search->second, state_path_, "metadata 'search'");
      if (!meta["config"].is_string() ||
          !cfg_.same_as_saved(meta["config"].get<std::string>()) || meta["seed"] != in_.seed)
        throw UsageError(state_path_ + ": saved search used another configuration or seed; "
                         "delete it or rerun with the same settings");
      S_.next_update = meta.at("next_update").get<int>();
      if (S_.next_update < 0 || S_.next_update > o_.updates)
        throw std::runtime_error(state_path_ + ": metadata next_update = " +
                                 std::to_string(S_.next_update) + " is outside [0, " +
                                 std::to_string(o_.updates) + "]");
      S_.since_improved = meta.at("since_improved").get<int>();
      for (auto& e : meta.at("trajectory")) S_.trajectory.push_back(episode_from_json(e));
      for (auto& u : meta.at("updates"))
        S_.updates.push_back({u.at("update"), u.at("loss"), u.at("mean_reward")});
      if (o_.use_rl) controller_->load_state(f.tensors);
      if (meta["best"].is_object()) {
        S_.best_reward = meta["best"].at("reward");
        S_.best_record = episode_from_json(meta["best"].at("record"));
        std::map<std::string, const Tensor*> tensors;
        for (auto& [name, t] : f.tensors) tensors[name] = &t;
        method_.import_best(S_.best_record.filters, tensors, state_path_);
      }
    } catch (const json::exception& e) {
      throw std::runtime_error(state_path_ + ": metadata 'search' is malformed (" + e.what() +
                               "); delete it to start afresh");
    }
    std::fprintf(stderr, "resuming the search from %s at update %d (%zu episodes done)\n",
                 state_path_.c_str(), S_.next_update + 1, S_.trajectory.size());
  }

  // Runs the remaining updates; false when interrupted (the state of the last finished update
  // stays on disk for --resume).
  bool run() {
    search_t0_ = std::chrono::steady_clock::now();
    bool stopped_early = false;
    for (int u = S_.next_update; u < o_.updates && !stopped_early; ++u) {
      std::vector<rl::Controller::Episode> eps;
      std::vector<double> rewards;
      for (int e = 0; e < o_.per_update; ++e) {
        if (stop_requested()) return false;
        EpisodeRecord rec;
        rl::Controller::Episode ep;
        if (!run_episode(u, u * o_.per_update + e, ep, rec)) return false;
        eps.push_back(std::move(ep));
        rewards.push_back(rec.reward);
        if (S_.since_improved >= o_.early_stop) {
          stopped_early = true;
          break;
        }
      }
      if (o_.use_rl && eps.size() > 1) {
        double mean = 0;
        for (double r : rewards) mean += r;
        mean /= double(rewards.size());
        double loss = controller_->update(eps, rewards);
        S_.updates.push_back({u + 1, loss, mean});
      }
      S_.next_update = u + 1;
      save_state();
      if (in_.on_update_end) in_.on_update_end(u + 1);
    }
    return true;
  }

  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - search_t0_).count();
  }
  const SearchState& state() const { return S_; }
  const std::string& state_path() const { return state_path_; }

 private:
  bool stop_requested() const { return in_.stop_flag && in_.stop_flag->load(); }

  // One episode: policy draw, the method's obfuscation, the record, back to the pretrained
  // weights. False when interrupted inside it (the episode is dropped).
  bool run_episode(int u, int episode, rl::Controller::Episode& ep, EpisodeRecord& rec) {
    auto t0 = std::chrono::steady_clock::now();
    Rng rng(Rng::derive(in_.seed, 1000 + uint64_t(episode)));
    ep = o_.use_rl ? controller_->sample(rng) : random_.sample(rng);
    data::BatchOptions bo;
    bo.pad_to = in_.pad_to;
    data::Loader loader(data_.train, in_.norm, o_.batch, true, Rng::derive(in_.seed, 5000 + episode),
                        bo, true);
    int64_t loader_epoch = 0;
    splitter::ObfuscationData od;
    od.next_batch = [&](Tensor& x, Tensor& y) {
      if (loader.next(x, y)) return true;
      loader.start_epoch(++loader_epoch);
      return false;
    };
    od.accuracy = [&] { return data_.val->accuracy(*in_.model); };
    auto res = method_.run_episode(ep.filters, od, Rng::derive(in_.seed, 9000 + uint64_t(episode)));
    if (stop_requested()) {
      method_.undo_episode();
      return false;
    }
    rec.episode = episode + 1;
    rec.update = u + 1;
    rec.filters = ep.filters;
    rec.counts = res.counts;
    for (int64_t c : res.counts) rec.total += c;
    rec.accuracy = res.accuracy;
    rec.reward = -res.accuracy;
    rec.steps = res.steps;
    rec.evaluations = res.evaluations;
    // Ties go to the newer episode; only a strict improvement resets the early-stop count.
    if (rec.reward > S_.best_reward) S_.since_improved = 0;
    else ++S_.since_improved;
    const bool best = rec.reward >= S_.best_reward;
    if (best) {
      S_.best_reward = rec.reward;
      method_.keep_episode_as_best();
    }
    method_.undo_episode();
    rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (best) S_.best_record = rec;
    S_.trajectory.push_back(rec);
    ++done_this_run_;
    report(rec);
    return true;
  }

  void report(const EpisodeRecord& rec) const {
    if (!in_.progress || Progress::silenced()) return;
    const int total = o_.updates * o_.per_update;
    double eta = seconds() / done_this_run_ * double(total - rec.episode);
    std::fprintf(stderr,
                 "episode %d/%d | update %d | weights %lld | val acc %.2f%% | reward %.4f | "
                 "best %.4f | %lld steps | %.1f s | eta %s\n",
                 rec.episode, total, rec.update, (long long)rec.total, 100 * rec.accuracy,
                 rec.reward, S_.best_reward, (long long)rec.steps, rec.seconds,
                 Progress::format_duration(eta).c_str());
  }

  void save_state() const {
    json meta;
    meta["config"] = cfg_.effective_yaml();
    meta["seed"] = in_.seed;
    meta["next_update"] = S_.next_update;
    meta["since_improved"] = S_.since_improved;
    json tr = json::array();
    for (auto& e : S_.trajectory) tr.push_back(episode_json(e));
    meta["trajectory"] = tr;
    meta["updates"] = updates_json(S_.updates);
    std::vector<std::pair<std::string, Tensor>> owned;
    if (o_.use_rl) owned = controller_->state();
    if (method_.has_best()) {
      meta["best"] = {{"reward", S_.best_reward}, {"record", episode_json(S_.best_record)}};
      for (auto& entry : method_.export_best()) owned.push_back(std::move(entry));
    } else {
      meta["best"] = nullptr;
    }
    std::vector<std::pair<std::string, const Tensor*>> ptrs;
    for (auto& [name, t] : owned) ptrs.emplace_back(name, &t);
    io::write_safetensors(state_path_, ptrs, {{"search", meta.dump()}});
  }

  const ProtectInputs& in_;
  const Config& cfg_;
  const ProtectOptions& o_;
  SearchData& data_;
  splitter::Method& method_;
  const std::string state_path_;
  std::unique_ptr<rl::Controller> controller_;
  rl::RandomPolicy random_;
  SearchState S_;
  std::chrono::steady_clock::time_point search_t0_;
  int done_this_run_ = 0;
};

// The secrets of the obfuscated model (what differs from the original), with the method's
// parameters merged into the metadata diff_secrets records.
splitter::Secrets make_secrets(models::Model& original, models::Model& obfuscated,
                               const splitter::Method& method, const ProtectResult& R,
                               const ProtectInputs& in, const ProtectOptions& o) {
  splitter::Secrets secrets = splitter::diff_secrets(original, obfuscated);
  std::map<std::string, std::string> extra = {{"dataset", in.dataset_name},
                                              {"c", num(R.c)},
                                              {"eps", num(R.eps)},
                                              {"clamp_lo", num(R.clamp_lo)},
                                              {"clamp_hi", num(R.clamp_hi)},
                                              {"rule", o.rule},
                                              {"k", std::to_string(R.k)},
                                              {"seed", std::to_string(in.seed)},
                                              {"layers", json(R.layers).dump()},
                                              {"layer_counts", json(R.per_layer_counts).dump()}};
  for (auto& [key, value] : method.metadata()) extra[key] = value;
  for (auto& [key, value] : extra) secrets.metadata.emplace(key, value);  // diff's own keys win
  return secrets;
}

// Restores through the files just written and compares every state entry bit for bit. The
// restored accuracy is measured through `model` (holding the obfuscated weights, put back after),
// not through the loaded copy: a second model would allocate a second set of activation buffers.
void check_restore(ProtectResult& R, models::Model& model, models::Model& original,
                   const ProtectInputs& in, PreparedSet& test) {
  auto obf = io::load_model(R.obfuscated_path);
  obf->to(original.device());
  auto sec = splitter::read_secrets(R.secrets_path, in.seal_key.empty() ? nullptr : &in.seal_key);
  splitter::apply_secrets(*obf, sec);
  bool exact = true;
  auto& a = obf->state();
  auto& b = original.state();
  for (size_t i = 0; i < a.size(); ++i) {
    Tensor x = a[i].tensor->to(Device::CPU), y = b[i].tensor->to(Device::CPU);
    if (x.nbytes() != y.nbytes() || std::memcmp(x.raw(), y.raw(), x.nbytes()) != 0) exact = false;
  }
  R.restored_bit_exact = exact;
  auto& m = model.state();
  if (m.size() != a.size()) throw std::logic_error("check_restore: models of different layouts");
  std::vector<Tensor> obfuscated;
  for (size_t i = 0; i < m.size(); ++i) {
    obfuscated.push_back(m[i].tensor->clone());
    m[i].tensor->copy_from(*a[i].tensor);
  }
  obf.reset();
  model.set_training(false);
  R.restored_accuracy = test.accuracy(model);
  for (size_t i = 0; i < m.size(); ++i) m[i].tensor->copy_from(obfuscated[i]);
}

}  // namespace

ProtectResult protect(const ProtectInputs& in, const Config& cfg) {
  auto t_start = std::chrono::steady_clock::now();
  models::Model& model = *in.model;
  const Device dev = model.device();
  ProtectOptions o = ProtectOptions::parse(cfg);
  // splitter.precision (core/engine/plan.h): the obfuscation steps' convolutions only.
  const auto precision = engine::parse_precision(cfg.get_string("splitter.precision"));
  if (precision == engine::Precision::Bf16)
    if (std::string why = engine::bf16_unavailable(dev); !why.empty())
      throw ConfigError("splitter.precision: bf16 cannot run here: " + why + "; use fp32");
  engine::set_search_precision(precision);
  struct PrecisionReset {
    ~PrecisionReset() { engine::set_search_precision(engine::Precision::Fp32); }
  } precision_reset;
  if (!fs::is_directory(in.out_dir)) fs::create_directories(in.out_dir);
  ProtectResult R;
  R.method = o.method.method;
  R.seed = in.seed;
  R.input_fingerprint = splitter::fingerprint(model);
  guard_output(in, settings_json(cfg, in, R.input_fingerprint));
  SearchData data = prepare_data(in, o, dev);

  // ---- the pretrained model: layers, statistics, c, eps, clamp
  model.set_training(false);
  R.original_accuracy = data.test->accuracy(model);
  auto original = models::clone_model(model);
  auto layers = splitter::eligible(model, o.rule);
  if (layers.empty()) throw std::runtime_error(model.spec().arch + " has no eligible layers");
  auto stats = splitter::eligible_stats(layers);
  R.eligible_weights = stats.count;
  R.total_weights = model.num_parameters();
  for (auto& l : layers) R.layers.push_back(l.key);
  R.c = o.c ? *o.c : stats.mean;
  std::tie(R.clamp_lo, R.clamp_hi) = o.clamp ? *o.clamp : std::pair<double, double>(stats.min, stats.max);
  splitter::MethodOptions mo = o.method;
  mo.c = float(R.c);
  mo.eps = 1;  // provisional: the probe below only reports what the method chooses per layer
  mo.obfuscator.clamp_lo = float(R.clamp_lo);
  mo.obfuscator.clamp_hi = float(R.clamp_hi);
  mo.obfuscator.stop = in.stop_flag;
  // What the search chooses in each layer (filters; input channels for spread) and the budget.
  // A layer with k or fewer units has all of them chosen.
  std::vector<int> filters_per_layer;
  std::vector<int64_t> unit_entries;
  {
    auto probe = splitter::make_method(model, layers, mo);
    filters_per_layer = probe->choices_per_layer();
    for (size_t l = 0; l < layers.size(); ++l) unit_entries.push_back(probe->choice_size(l));
  }
  if (o.budget > 0) {  // the fewest units per layer whose entries hold three times the budget
    const double target = o.budget * double(R.total_weights);
    const int most = *std::max_element(filters_per_layer.begin(), filters_per_layer.end());
    auto held = [&](int k) {
      double n = 0;
      for (size_t l = 0; l < layers.size(); ++l)
        n += double(std::min(k, filters_per_layer[l])) * double(unit_entries[l]);
      return n;
    };
    o.k = 1;
    while (o.k < most && held(o.k) < 3 * target) ++o.k;
    o.controller.k = o.k;
    o.target_per_layer = target / double(layers.size());
  }
  R.k = o.k;
  R.target_per_layer = o.target_per_layer;
  if (o.eps) {
    R.eps = *o.eps;
  } else {  // auto: the expected count over the method's own choice units
    auto units = layers;
    for (size_t l = 0; l < units.size(); ++l) units[l].filters = filters_per_layer[l];
    R.eps = splitter::auto_eps(units, float(R.c), o.k, o.target_per_layer);
  }
  mo.eps = float(R.eps);
  auto method = splitter::make_method(model, layers, mo);

  // ---- the search
  Search search(in, cfg, o, data, *method, filters_per_layer);
  search.maybe_resume();
  if (in.progress && !Progress::silenced())
    std::fprintf(stderr,
                 "protect %s (%s): %zu eligible layers (%lld weights), c=%.6g eps=%.6g "
                 "clamp=[%.6g, %.6g], k=%d, %s policy, up to %d episodes; original test accuracy "
                 "%.2f%%\n",
                 model.spec().arch.c_str(), R.method.c_str(), layers.size(), (long long)stats.count,
                 R.c, R.eps, R.clamp_lo, R.clamp_hi, o.k, o.use_rl ? "RL" : "random",
                 o.updates * o.per_update, 100 * R.original_accuracy);
  R.interrupted = !search.run();
  R.search_seconds = search.seconds();
  const SearchState& S = search.state();
  R.trajectory = S.trajectory;
  R.update_records = S.updates;
  R.episodes = int(R.trajectory.size());
  R.updates = int(R.update_records.size());
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  };
  if (R.interrupted) {
    R.seconds = elapsed();
    return R;  // the state of the last finished update stays valid for --resume
  }
  if (!method->has_best()) throw std::runtime_error("protect: no episode ran");

  // ---- the best episode: the obfuscated model and its secrets
  method->apply_best();
  R.best_filters = S.best_record.filters;
  R.best_val_accuracy = S.best_record.accuracy;
  model.set_training(false);
  R.obfuscated_accuracy = data.test->accuracy(model);
  R.fingerprint = splitter::fingerprint(model);
  {
    // Changed weights per eligible layer, from what actually differs.
    auto diff = splitter::diff_secrets(*original, model);
    for (auto& l : layers) {
      int64_t n = 0;
      for (auto& t : diff.tensors)
        if (t.key == l.key) n = int64_t(t.index.size());
      R.per_layer_counts.push_back(n);
    }
  }
  splitter::Secrets secrets = make_secrets(*original, model, *method, R, in, o);
  R.obfuscated_weights = secrets.total();
  auto meta = in.weights_metadata;
  meta["obfuscated"] = "true";
  meta["test_accuracy"] = std::to_string(R.obfuscated_accuracy);
  meta.erase("test_correct");
  // A model whose secrets are sealed says so: an unsealed file is then refused for it (no downgrade).
  if (!in.seal_key.empty()) splitter::mark_secrets_sealed(meta);
  // A model read from ONNX is written back as ONNX (the same graph, the changed initializers)
  // and, for Python, as its state dict under the same names.
  const bool onnx = io::is_onnx_model(model);
  R.obfuscated_path =
      (fs::path(in.out_dir) / (onnx ? "obfuscated.onnx" : "obfuscated.safetensors")).string();
  R.secrets_path = (fs::path(in.out_dir) / "secrets.safetensors").string();
  R.trajectory_path = (fs::path(in.out_dir) / "trajectory.json").string();
  io::save_model(model, R.obfuscated_path, meta);
  if (onnx) io::save_model(model, (fs::path(in.out_dir) / "obfuscated.safetensors").string(), meta);
  splitter::write_secrets(R.secrets_path, secrets, in.seal_key.empty() ? nullptr : &in.seal_key);
  R.secrets_bytes = int64_t(fs::file_size(R.secrets_path));
  check_restore(R, model, *original, in, *data.test);

  json traj;
  traj["episodes"] = json::array();
  for (auto& e : R.trajectory) traj["episodes"].push_back(episode_json(e));
  traj["updates"] = updates_json(R.update_records);
  traj["best_episode"] = S.best_record.episode;
  traj["summary"] = R.to_json();
  write_json_atomic(R.trajectory_path, traj);
  fs::remove(search.state_path());
  R.seconds = elapsed();
  return R;
}

}  // namespace nns::exp
