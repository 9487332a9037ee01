#include "experiments/protect.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include "core/io/atomic_file.h"
#include "core/io/model_io.h"
#include "core/io/safetensors.h"
#include "core/random.h"
#include "core/splitter/mask.h"
#include "core/splitter/obfuscator.h"
#include "core/splitter/secrets.h"
#include "experiments/progress.h"
#include "experiments/trainer.h"
#include "kernels/ops.h"
#include "rl/controller.h"

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
  add("splitter.val_source", V::String, "split",
      "where the reward is measured: split (held-out training images) or test (the authors)", {},
      {}, {"split", "test"});
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
  return j;
}

namespace {

// A dataset normalised once into device batches, for fast repeated accuracy measurements.
struct PreparedSet {
  std::vector<Tensor> x, y;
  int64_t total = 0;
  PreparedSet(const data::Dataset& d, const data::Normalization& norm, int pad_to, Device dev) {
    data::BatchOptions bo;
    bo.pad_to = pad_to;
    data::Loader loader(d, norm, 256, false, 0, bo);
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
    Tensor pred(Shape{256}, DType::I32, m.device());
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

// The best episode so far: its masks, the obfuscated values, and its record.
struct Best {
  bool valid = false;
  double reward = -std::numeric_limits<double>::infinity();
  EpisodeRecord record;
  std::vector<splitter::LayerMask> masks;
  std::vector<std::vector<float>> values;  // obfuscated values per mask
};

void write_json_atomic(const std::string& path, const json& j) {
  io::write_file_atomically(path, j.dump(1) + "\n");
}

}  // namespace

ProtectResult protect(const ProtectInputs& in, const Config& cfg) {
  auto t_start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  };
  models::Model& model = *in.model;
  const Device dev = model.device();
  const ops::Context ctx{dev, nullptr};
  if (!fs::is_directory(in.out_dir)) fs::create_directories(in.out_dir);
  ProtectResult R;

  // ---- data: validation split (reward), training batches (obfuscation), test (report)
  const std::string val_source = cfg.get_string("splitter.val_source");
  int64_t val_size = cfg.get_int("splitter.val_size");
  data::Dataset train_part, val_part;
  if (val_source == "test") {
    train_part = *in.train;
    val_part = *in.test;
  } else {
    if (val_size >= in.train->size())
      throw ConfigError("splitter.val_size = " + std::to_string(val_size) +
                        " must be smaller than the training set (" +
                        std::to_string(in.train->size()) + " images)");
    std::tie(train_part, val_part) = data::split_train_val(*in.train, val_size, in.seed);
  }
  PreparedSet val(val_part, in.norm, in.pad_to, dev);
  PreparedSet test(*in.test, in.norm, in.pad_to, dev);

  // ---- the pretrained model: layers, statistics, c, eps, clamp
  model.set_training(false);
  R.original_accuracy = test.accuracy(model);
  std::vector<Tensor> original_state;
  for (auto& e : model.state()) original_state.push_back(e.tensor->to(Device::CPU));
  auto layers = splitter::eligible(model, cfg.get_string("splitter.rule"));
  if (layers.empty()) throw std::runtime_error(model.spec().arch + " has no eligible layers");
  auto stats = splitter::eligible_stats(layers);
  R.eligible_weights = stats.count;
  R.total_weights = model.num_parameters();
  for (auto& l : layers) R.layers.push_back(l.key);
  const int k = int(cfg.get_int("splitter.k"));
  R.c = cfg.is_word("splitter.c", "mean") ? stats.mean : cfg.get_float("splitter.c");
  if (cfg.is_word("splitter.clamp", "auto")) {
    R.clamp_lo = stats.min;
    R.clamp_hi = stats.max;
  } else {
    std::tie(R.clamp_lo, R.clamp_hi) = cfg.get_pair("splitter.clamp");
  }
  R.eps = cfg.is_word("splitter.eps", "auto")
              ? splitter::auto_eps(layers, float(R.c), k, cfg.get_float("splitter.target_per_layer"))
              : cfg.get_float("splitter.eps");
  std::vector<int> filters_per_layer;
  for (auto& l : layers) {
    if (k > l.filters && !cfg.get_bool("controller.with_replacement"))
      throw ConfigError("splitter.k = " + std::to_string(k) + " exceeds the " +
                        std::to_string(l.filters) + " filters of layer " + l.key);
    filters_per_layer.push_back(l.filters);
  }

  // ---- the policy
  const bool use_rl = cfg.get_string("controller.kind") == "rl";
  rl::ControllerOptions co;
  co.cell = cfg.get_string("controller.cell");
  co.hidden = int(cfg.get_int("controller.hidden"));
  co.token_size = int(cfg.get_int("controller.token_size"));
  co.k = k;
  co.with_replacement = cfg.get_bool("controller.with_replacement");
  co.init_range = float(cfg.get_float("controller.init_range"));
  co.lr = float(cfg.get_float("controller.lr"));
  co.seed = Rng::derive(in.seed, 0xC0);
  co.device = dev;
  rl::Controller controller(filters_per_layer, co);

  splitter::ObfuscatorOptions oo;
  oo.lr = float(cfg.get_float("splitter.lr"));
  oo.l1 = float(cfg.get_float("splitter.l1"));
  oo.clamp_lo = float(R.clamp_lo);
  oo.clamp_hi = float(R.clamp_hi);
  oo.max_epochs = int(cfg.get_int("splitter.max_epochs"));
  oo.patience = int(cfg.get_int("splitter.patience"));
  oo.eval_every = cfg.get_int("splitter.eval_every");
  oo.max_steps = cfg.get_int("splitter.max_steps");
  oo.stop = in.stop_flag;
  const int updates = int(cfg.get_int("controller.updates"));
  const int per_update = int(cfg.get_int("controller.episodes_per_update"));
  const int early_stop = int(cfg.get_int("controller.early_stop"));
  const int batch = int(cfg.get_int("splitter.batch"));

  // ---- resumable state
  const std::string state_path = (fs::path(in.out_dir) / "search_state.safetensors").string();
  Best best;
  int start_update = 0, since_improved = 0;
  if (in.resume && fs::exists(state_path)) {
    auto f = io::read_safetensors(state_path);
    json meta = json::parse(f.metadata.at("search"));
    if (meta["config"] != cfg.effective_yaml() || meta["seed"] != in.seed)
      throw UsageError(state_path + ": saved search used another configuration or seed; "
                       "delete it or rerun with the same settings");
    start_update = meta["next_update"];
    since_improved = meta["since_improved"];
    for (auto& e : meta["trajectory"]) R.trajectory.push_back(episode_from_json(e));
    for (auto& u : meta["updates"]) R.update_records.push_back({u["update"], u["loss"], u["mean_reward"]});
    if (use_rl) controller.load_state(f.tensors);
    if (meta["best"].is_object()) {
      best.valid = true;
      best.reward = meta["best"]["reward"];
      best.record = episode_from_json(meta["best"]["record"]);
      for (size_t l = 0; l < layers.size(); ++l) {
        splitter::LayerMask m;
        m.layer = int(l);
        m.filters = best.record.filters[l];
        const Tensor* idx = f.find("best." + layers[l].key + ".index");
        const Tensor* val = f.find("best." + layers[l].key + ".value");
        if (!idx || !val) throw std::runtime_error(state_path + ": best episode incomplete");
        m.index.assign(idx->i64(), idx->i64() + idx->numel());
        best.values.emplace_back(val->f32(), val->f32() + val->numel());
        best.masks.push_back(std::move(m));
      }
    }
    std::fprintf(stderr, "resuming the search from %s at update %d (%zu episodes done)\n",
                 state_path.c_str(), start_update + 1, R.trajectory.size());
  }
  auto save_state = [&](int next_update) {
    json meta;
    meta["config"] = cfg.effective_yaml();
    meta["seed"] = in.seed;
    meta["next_update"] = next_update;
    meta["since_improved"] = since_improved;
    json tr = json::array();
    for (auto& e : R.trajectory) tr.push_back(episode_json(e));
    meta["trajectory"] = tr;
    json ur = json::array();
    for (auto& u : R.update_records)
      ur.push_back({{"update", u.update}, {"loss", u.loss}, {"mean_reward", u.mean_reward}});
    meta["updates"] = ur;
    std::vector<std::pair<std::string, Tensor>> owned;
    if (use_rl) owned = controller.state();
    if (best.valid) {
      meta["best"] = {{"reward", best.reward}, {"record", episode_json(best.record)}};
      for (size_t l = 0; l < best.masks.size(); ++l) {
        const auto& m = best.masks[l];
        Tensor idx({int64_t(m.index.size())}, DType::I64), val({int64_t(m.index.size())});
        std::copy(m.index.begin(), m.index.end(), idx.i64());
        std::copy(best.values[l].begin(), best.values[l].end(), val.f32());
        owned.emplace_back("best." + layers[m.layer].key + ".index", idx);
        owned.emplace_back("best." + layers[m.layer].key + ".value", val);
      }
    } else {
      meta["best"] = nullptr;
    }
    std::vector<std::pair<std::string, const Tensor*>> ptrs;
    for (auto& [name, t] : owned) ptrs.emplace_back(name, &t);
    io::write_safetensors(state_path, ptrs, {{"search", meta.dump()}});
  };

  // ---- the search
  data::BatchOptions bo;
  bo.pad_to = in.pad_to;
  const int total_episodes = updates * per_update;
  std::fprintf(stderr,
               "protect %s: %zu eligible layers (%lld weights), c=%.6g eps=%.6g clamp=[%.6g, %.6g], "
               "k=%d, %s policy, up to %d episodes; original test accuracy %.2f%%\n",
               model.spec().arch.c_str(), layers.size(), (long long)stats.count, R.c, R.eps,
               R.clamp_lo, R.clamp_hi, k, use_rl ? "RL" : "random", total_episodes,
               100 * R.original_accuracy);
  auto search_t0 = std::chrono::steady_clock::now();
  int done_this_run = 0;
  bool stopped_early = false;
  for (int u = start_update; u < updates && !stopped_early; ++u) {
    std::vector<rl::Controller::Episode> eps;
    std::vector<double> rewards;
    for (int e = 0; e < per_update; ++e) {
      if (in.stop_flag && in.stop_flag->load()) {
        R.interrupted = true;
        break;
      }
      const int episode = u * per_update + e;
      auto ep_t0 = std::chrono::steady_clock::now();
      Rng rng(Rng::derive(in.seed, 1000 + uint64_t(episode)));
      rl::Controller::Episode ep;
      if (use_rl) {
        ep = controller.sample(rng);
      } else {
        ep.filters.resize(layers.size());
        for (size_t l = 0; l < layers.size(); ++l) {
          std::set<int32_t> chosen;
          while (int(chosen.size()) < k) chosen.insert(int32_t(rng.below(layers[l].filters)));
          ep.filters[l].assign(chosen.begin(), chosen.end());
        }
      }
      auto masks = splitter::select_mask(layers, ep.filters, float(R.c), float(R.eps));
      // Save the pretrained values of the masked entries; restored in place after the episode.
      std::vector<Tensor> originals, idx_dev;
      for (auto& m : masks) {
        int64_t n = int64_t(m.index.size());
        Tensor ih({n}, DType::I64);
        std::copy(m.index.begin(), m.index.end(), ih.i64());
        idx_dev.push_back(ih.to(dev));
        originals.emplace_back(Shape{n}, DType::F32, dev);
        if (n) ops::gather(ctx, n, idx_dev.back().i64(), layers[m.layer].param->value.f32(),
                           originals.back().f32());
      }
      data::Loader loader(train_part, in.norm, batch, true, Rng::derive(in.seed, 5000 + episode), bo,
                          true);
      int64_t loader_epoch = 0;
      splitter::ObfuscationData od;
      od.next_batch = [&](Tensor& x, Tensor& y) {
        if (loader.next(x, y)) return true;
        loader.start_epoch(++loader_epoch);
        return false;
      };
      od.accuracy = [&] { return val.accuracy(model); };
      auto res = splitter::obfuscate(model, layers, masks, od, oo);
      if (in.stop_flag && in.stop_flag->load()) {
        // Interrupted inside the episode: put the pretrained values back and drop it; the
        // state saved after the last finished update stays valid for --resume.
        for (size_t l = 0; l < masks.size(); ++l)
          if (originals[l].numel())
            ops::scatter(ctx, originals[l].numel(), idx_dev[l].i64(), originals[l].f32(),
                         layers[masks[l].layer].param->value.f32());
        R.interrupted = true;
        break;
      }

      EpisodeRecord rec;
      rec.episode = episode + 1;
      rec.update = u + 1;
      rec.filters = ep.filters;
      for (auto& m : masks) {
        rec.counts.push_back(int64_t(m.index.size()));
        rec.total += int64_t(m.index.size());
      }
      rec.accuracy = res.best_accuracy;
      rec.reward = -res.best_accuracy;
      rec.steps = res.steps;
      rec.evaluations = res.evaluations;
      // Ties go to the newer episode; only a strict improvement resets the early-stop count.
      if (rec.reward > best.reward) since_improved = 0;
      else ++since_improved;
      if (rec.reward >= best.reward) {
        best.valid = true;
        best.reward = rec.reward;
        best.masks = masks;
        best.values.clear();
        for (size_t l = 0; l < masks.size(); ++l) {
          Tensor v(Shape{int64_t(masks[l].index.size())}, DType::F32, dev);
          if (v.numel()) ops::gather(ctx, v.numel(), idx_dev[l].i64(),
                                     layers[masks[l].layer].param->value.f32(), v.f32());
          best.values.push_back(v.to_vector());
        }
      }
      // Back to the pretrained weights, in place.
      for (size_t l = 0; l < masks.size(); ++l)
        if (originals[l].numel())
          ops::scatter(ctx, originals[l].numel(), idx_dev[l].i64(), originals[l].f32(),
                       layers[masks[l].layer].param->value.f32());
      rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - ep_t0).count();
      if (best.reward == rec.reward) best.record = rec;
      R.trajectory.push_back(rec);
      eps.push_back(ep);
      rewards.push_back(rec.reward);
      ++done_this_run;
      if (in.progress) {
        double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - search_t0).count();
        double eta = run_s / done_this_run * double(total_episodes - episode - 1);
        std::fprintf(stderr,
                     "episode %d/%d | update %d | weights %lld | val acc %.2f%% | reward %.4f | "
                     "best %.4f | %lld steps | %.1f s | eta %s\n",
                     episode + 1, total_episodes, u + 1, (long long)rec.total, 100 * rec.accuracy,
                     rec.reward, best.reward, (long long)rec.steps, rec.seconds,
                     Progress::format_duration(eta).c_str());
      }
      if (since_improved >= early_stop) {
        stopped_early = true;
        break;
      }
    }
    if (R.interrupted) break;
    if (use_rl && eps.size() > 1) {
      double mean = 0;
      for (double r : rewards) mean += r;
      mean /= double(rewards.size());
      double loss = controller.update(eps, rewards);
      R.update_records.push_back({u + 1, loss, mean});
    }
    save_state(u + 1);
    if (in.on_update_end) in.on_update_end(u + 1);
  }
  R.search_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - search_t0).count();
  R.episodes = int(R.trajectory.size());
  R.updates = int(R.update_records.size());
  if (R.interrupted) {
    R.seconds = elapsed();
    return R;  // the state of the last finished update stays valid for --resume
  }
  if (!best.valid) throw std::runtime_error("protect: no episode ran");

  // ---- apply the best episode: the obfuscated model and its secrets
  splitter::Secrets secrets;
  for (size_t l = 0; l < best.masks.size(); ++l) {
    const auto& m = best.masks[l];
    R.per_layer_counts.push_back(int64_t(m.index.size()));
    R.best_filters.push_back(m.filters);
    if (m.index.empty()) continue;
    int64_t n = int64_t(m.index.size());
    nn::Parameter* p = layers[m.layer].param;
    Tensor ih({n}, DType::I64), vh({n});
    std::copy(m.index.begin(), m.index.end(), ih.i64());
    std::copy(best.values[l].begin(), best.values[l].end(), vh.f32());
    Tensor id = ih.to(dev), vd = vh.to(dev);
    splitter::SecretTensor st;
    st.key = layers[m.layer].key;
    st.index = m.index;
    Tensor orig({n}, DType::F32, dev);
    ops::gather(ctx, n, id.i64(), p->value.f32(), orig.f32());
    st.original = orig.to_vector();
    ops::scatter(ctx, n, id.i64(), vd.f32(), p->value.f32());
    secrets.tensors.push_back(std::move(st));
  }
  R.obfuscated_weights = secrets.total();
  R.best_val_accuracy = best.record.accuracy;
  model.set_training(false);
  R.obfuscated_accuracy = test.accuracy(model);

  R.fingerprint = splitter::fingerprint(model);
  auto meta = in.weights_metadata;
  meta["obfuscated"] = "true";
  meta["test_accuracy"] = std::to_string(R.obfuscated_accuracy);
  meta.erase("test_correct");
  R.obfuscated_path = (fs::path(in.out_dir) / "obfuscated.safetensors").string();
  R.secrets_path = (fs::path(in.out_dir) / "secrets.safetensors").string();
  R.trajectory_path = (fs::path(in.out_dir) / "trajectory.json").string();
  char buf[64];
  auto num = [&](double v) {
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return std::string(buf);
  };
  secrets.metadata = {{"fingerprint", R.fingerprint},
                      {"arch", model.spec().arch},
                      {"dataset", in.dataset_name},
                      {"c", num(R.c)},
                      {"eps", num(R.eps)},
                      {"clamp_lo", num(R.clamp_lo)},
                      {"clamp_hi", num(R.clamp_hi)},
                      {"rule", cfg.get_string("splitter.rule")},
                      {"k", std::to_string(k)},
                      {"total", std::to_string(R.obfuscated_weights)},
                      {"layers", json(R.layers).dump()},
                      {"layer_counts", json(R.per_layer_counts).dump()}};
  io::save_model(model, R.obfuscated_path, meta);
  splitter::write_secrets(R.secrets_path, secrets, in.seal_key.empty() ? nullptr : &in.seal_key);
  R.secrets_bytes = int64_t(fs::file_size(R.secrets_path));

  // ---- restore through the files just written, and check bit-exactness
  {
    auto obf = io::load_model(R.obfuscated_path);
    obf->to(dev);
    auto sec = splitter::read_secrets(R.secrets_path, in.seal_key.empty() ? nullptr : &in.seal_key);
    splitter::apply_secrets(*obf, sec);
    bool exact = true;
    auto& st = obf->state();
    for (size_t i = 0; i < st.size(); ++i) {
      Tensor a = st[i].tensor->to(Device::CPU);
      if (a.nbytes() != original_state[i].nbytes() ||
          std::memcmp(a.raw(), original_state[i].raw(), a.nbytes()) != 0)
        exact = false;
    }
    R.restored_bit_exact = exact;
    obf->set_training(false);
    R.restored_accuracy = test.accuracy(*obf);
  }
  json traj;
  traj["episodes"] = json::array();
  for (auto& e : R.trajectory) traj["episodes"].push_back(episode_json(e));
  traj["updates"] = json::array();
  for (auto& u : R.update_records)
    traj["updates"].push_back({{"update", u.update}, {"loss", u.loss}, {"mean_reward", u.mean_reward}});
  traj["best_episode"] = best.record.episode;
  traj["summary"] = R.to_json();
  write_json_atomic(R.trajectory_path, traj);
  fs::remove(state_path);
  R.seconds = elapsed();
  return R;
}

}  // namespace nns::exp
