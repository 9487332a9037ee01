#include "experiments/experiment.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/io/json_bounded.h"
#include "core/io/model_io.h"
#include "core/splitter/mask.h"
#include "core/splitter/secrets.h"
#include "experiments/attack_suite.h"
#include "experiments/h5file.h"
#include "experiments/metrics.h"
#include "experiments/protect.h"
#include "experiments/trainer.h"
#include "kernels/ops.h"

namespace nns::exp {

namespace fs = std::filesystem;

const Schema& experiment_schema() {
  static const Schema schema = [] {
    Schema s;
    using V = ValueType;
    auto add = [&](std::string path, ValueType t, std::string def, std::string doc,
                   std::optional<double> lo = {}, std::optional<double> hi = {},
                   std::vector<std::string> choices = {}) {
      s.add({std::move(path), t, std::move(def), std::move(doc), lo, hi, std::move(choices)});
    };
    add("name", V::String, "run", "run name: results go to <output.dir>/<name>/");
    add("seed", V::Int, "0", "seed of every random choice (init, shuffling, search)", 0, {});
    add("device", V::String, "cpu", "cpu, cuda or auto", {}, {}, {"cpu", "cuda", "auto"});
    add("threads", V::Int, "0",
        "CPU threads (0 = OMP_NUM_THREADS when set, else the CPUs this process may use: "
        "affinity mask and cgroup CPU quota)",
        0, 4096);
    add("dataset.name", V::String, "fashion-mnist",
        "fashion-mnist, mnist, cifar10, cifar100 or synthetic");
    add("dataset.data_dir", V::String, "\"\"", "folder holding the dataset files (\"\" = search)");
    add("model.arch", V::String, "resnet20", "architecture of the zoo", {}, {},
        models::model_names());
    add("model.width_mult", V::Float, "1", "channel multiplier (1 = the published widths)", 0.01,
        double(models::kMaxWidthMult));  // bounds of core/models/zoo.h (0.01 = kMinWidthMult)
    add("victim.weights", V::String, "\"\"",
        "pretrained weights (.safetensors, or .onnx: its graph is the model and model.arch is "
        "not used) to protect; \"\" = train the victim (cached)");
    add("victim.epochs", V::Int, "4", "training epochs of the victim", 1, {});
    add("victim.batch", V::Int, "128", "training batch size", 1, 65536);
    add("victim.lr", V::Float, "0.05", "base learning rate", 1e-9, {});
    add("victim.optimizer", V::String, "sgd", "sgd or adam", {}, {}, {"sgd", "adam"});
    add("victim.schedule", V::String, "cosine", "cosine, step or constant", {}, {},
        {"cosine", "step", "constant"});
    add("victim.momentum", V::Float, "0.9", "SGD momentum (Nesterov)", 0, 1);
    add("victim.weight_decay", V::Float, "5e-4", "L2 weight decay", 0, {});
    add("victim.augment", V::String, "auto", "random crop + flip: auto (CIFAR), on, off", {}, {},
        {"auto", "on", "off"});
    add_method_keys(s);
    add_attack_keys(s);
    add("output.dir", V::String, "results", "root folder of results");
    add("output.plots", V::Bool, "true", "write PNG plots beside the HDF5 file");
    add("output.seal", V::Bool, "false",
        "seal the secrets with a fresh key written beside them (secret.key)");
    add("slurm.partition", V::String, "\"\"", "Slurm partition (\"\" = the default)");
    add("slurm.time", V::String, "\"01:00:00\"", "time limit per run (HH:MM:SS)");
    add("slurm.cpus", V::Int, "2", "CPUs per run", 1, {});
    add("slurm.gpus", V::Int, "0", "GPUs per run", 0, {});
    add("slurm.mem", V::String, "4G", "memory per run");
    add("slurm.max_parallel", V::Int, "4", "array tasks running at once", 1, {});
    return s;
  }();
  return schema;
}

namespace {

std::string iso_now() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::string hostname() {
  char buf[256] = {0};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}

// FNV-1a of a text: the victim cache key.
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// An exclusive flock held while a cached victim is looked up or trained.
class VictimLock {
 public:
  explicit VictimLock(const std::string& path) {
    fd_ = ::open(path.c_str(), O_CREAT | O_RDWR, 0644);
    if (fd_ < 0) throw std::runtime_error(path + ": cannot create the victim cache lock");
    if (::flock(fd_, LOCK_EX) != 0) {
      ::close(fd_);
      throw std::runtime_error(path + ": cannot lock the victim cache");
    }
  }
  ~VictimLock() {
    ::flock(fd_, LOCK_UN);
    ::close(fd_);
  }
  VictimLock(const VictimLock&) = delete;
  VictimLock& operator=(const VictimLock&) = delete;

 private:
  int fd_ = -1;
};

// The victim's training curves travel in the cached weights' metadata, so that a run that finds
// its victim in the cache (a resumed run, another run of a sweep) reports them too.
constexpr const char* kVictimCurves = "train_history";

std::string curves_json(const TrainResult& r) {
  nlohmann::json j = nlohmann::json::array();
  for (const auto& e : r.epochs) j.push_back({e.train_loss, e.train_accuracy, e.test_accuracy});
  return j.dump();
}

TrainResult curves_from_metadata(const std::map<std::string, std::string>& meta,
                                 const std::string& path) {
  TrainResult r;
  auto it = meta.find(kVictimCurves);
  if (it == meta.end()) return r;
  try {
    int epoch = 0;
    const std::string what = "metadata '" + std::string(kVictimCurves) + "'";
    for (const auto& e : io::parse_json_bounded(it->second, path, what))
      r.epochs.push_back({++epoch, e.at(0).get<double>(), e.at(1).get<double>(),
                          e.at(2).get<double>(), 0, 0, 0});
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": metadata '" + std::string(kVictimCurves) +
                             "' is malformed: " + e.what());
  }
  return r;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}


struct CachedVictim {
  std::unique_ptr<models::Model> model;
  std::map<std::string, std::string> meta;
  std::string source;
  TrainResult train;
  bool interrupted = false;
};

// The victim trained by the victim.* recipe with `seed` (the run's seed; the GroupCover donor
// uses another), from the cache keyed by a hash of the recipe, else trained and cached.
CachedVictim cached_victim(const Config& cfg, const models::ModelSpec& spec,
                           const data::Splits& splits, const data::Normalization& norm,
                           int pad_to, uint64_t seed, const RunOptions& opt, Device dev) {
  CachedVictim V;
  const std::string dataset = cfg.get_string("dataset.name");
  std::ostringstream recipe;
  for (auto key : {"model.arch", "model.width_mult", "dataset.name", "victim.epochs",
                   "victim.batch", "victim.lr", "victim.optimizer", "victim.schedule",
                   "victim.momentum", "victim.weight_decay", "victim.augment"})
    recipe << key << "=" << cfg.text(key) << "\n";
  recipe << "seed=" << seed << "\n";
  if (spec.graph) recipe << "graph=" << cfg.text("victim.weights") << "\n";  // an ONNX victim's
  fs::path cache = opt.cache_dir.empty() ? fs::path(cfg.get_string("output.dir")) / "victims"
                                         : fs::path(opt.cache_dir);
  fs::create_directories(cache);
  fs::path cached = cache / (spec.arch + "-" + dataset + "-" + hex64(fnv1a(recipe.str())) +
                             (spec.graph ? ".onnx" : ".safetensors"));
  // Sweep tasks sharing a victim recipe may start together: one trains, the others wait.
  VictimLock lock(cached.string() + ".lock");
  if (fs::exists(cached)) {
    V.model = io::load_model(cached.string(), &V.meta);
    V.train = curves_from_metadata(V.meta, cached.string());
    V.source = "cache:" + cached.string();
    std::fprintf(stderr, "victim: %s (cached)\n", cached.c_str());
  } else {
    V.model = models::build_model(spec, seed);
    V.model->to(dev);
    TrainOptions t;
    t.epochs = int(cfg.get_int("victim.epochs"));
    t.batch = int(cfg.get_int("victim.batch"));
    t.lr = float(cfg.get_float("victim.lr"));
    t.optimizer = cfg.get_string("victim.optimizer");
    t.schedule = cfg.get_string("victim.schedule");
    t.momentum = float(cfg.get_float("victim.momentum"));
    t.weight_decay = float(cfg.get_float("victim.weight_decay"));
    t.seed = seed;
    t.pad_to = pad_to;
    std::string aug = cfg.get_string("victim.augment");
    t.augment = aug == "on" || (aug == "auto" && dataset.rfind("cifar", 0) == 0);
    t.progress = opt.progress;
    t.checkpoint = cached.string() + ".ckpt";
    t.stop_flag = opt.stop_flag;
    V.train = train_model(*V.model, splits.train, &splits.test, norm, t);
    if (V.train.interrupted) {
      V.interrupted = true;
      return V;
    }
    V.meta = {{"dataset", dataset}, {"recipe", recipe.str()}, {kVictimCurves, curves_json(V.train)}};
    io::save_model(*V.model, cached.string(), V.meta);
    fs::remove(t.checkpoint);
    V.source = "trained";
  }
  V.model->to(dev);
  return V;
}

}  // namespace

std::string summary_table(const RunSummary& s) {
  std::ostringstream o;
  char buf[160];
  o << "result: " << s.output_path << "\n";
  std::snprintf(buf, sizeof buf, "  %-34s %8.2f%%\n", "original accuracy", 100 * s.original_accuracy);
  o << buf;
  std::snprintf(buf, sizeof buf, "  %-34s %8.2f%%\n", "obfuscated accuracy", 100 * s.obfuscated_accuracy);
  o << buf;
  std::snprintf(buf, sizeof buf, "  %-34s %8.2f%%\n", "restored accuracy", 100 * s.restored_accuracy);
  o << buf;
  std::snprintf(buf, sizeof buf, "  %-34s %lld of %lld (%.4f%%)\n", "weights changed",
                (long long)s.obfuscated_weights, (long long)s.total_weights,
                s.total_weights ? 100.0 * double(s.obfuscated_weights) / double(s.total_weights) : 0.0);
  o << buf;
  for (auto& [name, acc] : s.attacks) {
    std::snprintf(buf, sizeof buf, "  %-44s %8.2f%%\n", ("attack: " + name).c_str(), 100 * acc);
    o << buf;
  }
  std::snprintf(buf, sizeof buf, "  %-34s %8.1f s\n", "time", s.seconds);
  o << buf;
  return o.str();
}


namespace {

// The protect part of the result file (victim, accuracy, weights, secrets, search, stealth);
// docs/results-format.md.
void write_protection(h5::File& f, const ProtectResult& P, const CachedVictim& V,
                      const StealthMetrics& stealth, const std::vector<int64_t>& eligible_per_layer,
                      const std::string& arch, const std::string& dataset, bool sealed,
                      const std::string& policy) {
  std::vector<double> tl, ta, te;
  for (auto& e : V.train.epochs) {
    tl.push_back(e.train_loss);
    ta.push_back(e.train_accuracy);
    te.push_back(e.test_accuracy);
  }
  f.write("victim/train_loss", tl, "1");
  f.write("victim/train_accuracy", ta, "fraction");
  f.write("victim/test_accuracy", te, "fraction");
  f.attr("victim", "arch", arch);
  f.attr("victim", "dataset", dataset);
  f.attr("victim", "source", V.source);
  f.attr("victim", "parameters", int64_t(P.total_weights));
  f.write("accuracy/original", P.original_accuracy, "fraction");
  f.write("accuracy/obfuscated", P.obfuscated_accuracy, "fraction");
  f.write("accuracy/restored", P.restored_accuracy, "fraction");
  f.write("accuracy/restored_bit_exact", int64_t(P.restored_bit_exact ? 1 : 0), "1");
  f.write("weights/layer_names", P.layers);
  f.write("weights/eligible_per_layer", eligible_per_layer, "count");
  f.write("weights/obfuscated_per_layer", P.per_layer_counts, "count");
  f.write("weights/obfuscated_total", int64_t(P.obfuscated_weights), "count");
  f.write("weights/total", int64_t(P.total_weights), "count");
  f.write("weights/eligible_total", int64_t(P.eligible_weights), "count");
  f.write("weights/obfuscated_fraction",
          P.total_weights ? double(P.obfuscated_weights) / double(P.total_weights) : 0.0, "fraction");
  f.write("secrets/bytes", int64_t(P.secrets_bytes), "bytes");
  f.attr("secrets", "sealed", int64_t(sealed ? 1 : 0));
  std::vector<int64_t> ep, upd, wts;
  std::vector<double> acc, rew, secs;
  int kmax = 1, best = 0;
  double best_reward = -1e300;
  for (auto& e : P.trajectory) {
    ep.push_back(e.episode);
    upd.push_back(e.update);
    wts.push_back(e.total);
    acc.push_back(e.accuracy);
    rew.push_back(e.reward);
    secs.push_back(e.seconds);
    for (auto& fl : e.filters) kmax = std::max(kmax, int(fl.size()));
    if (e.reward >= best_reward) best_reward = e.reward, best = e.episode;
  }
  f.write("search/trajectory/episode", ep, "count");
  f.write("search/trajectory/update", upd, "count");
  f.write("search/trajectory/accuracy", acc, "fraction");
  f.write("search/trajectory/reward", rew, "1");
  f.write("search/trajectory/weights", wts, "count");
  f.write("search/trajectory/seconds", secs, "seconds");
  const int64_t L = int64_t(P.layers.size()), E = int64_t(P.trajectory.size());
  std::vector<int64_t> filt(size_t(E * L * kmax), -1);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t l = 0; l < L && l < int64_t(P.trajectory[e].filters.size()); ++l)
      for (size_t j = 0; j < P.trajectory[e].filters[l].size(); ++j)
        filt[size_t((e * L + l) * kmax + int64_t(j))] = P.trajectory[e].filters[l][j];
  f.write("search/trajectory/filters", filt, "count", {E, L, kmax});
  std::vector<int64_t> un;
  std::vector<double> ul, um;
  for (auto& u : P.update_records) {
    un.push_back(u.update);
    ul.push_back(u.loss);
    um.push_back(u.mean_reward);
  }
  f.write("search/updates/update", un, "count");
  f.write("search/updates/loss", ul, "1");
  f.write("search/updates/mean_reward", um, "1");
  f.attr("search", "c", P.c);
  f.attr("search", "eps", P.eps);
  f.attr("search", "clamp_lo", P.clamp_lo);
  f.attr("search", "clamp_hi", P.clamp_hi);
  f.attr("search", "k", int64_t(P.k));
  f.attr("search", "target_per_layer", P.target_per_layer);
  f.attr("search", "method", P.method);
  f.attr("search", "best_episode", int64_t(best));
  f.attr("search", "policy", policy);
  f.write("stealth/at_bounds_fraction", stealth.at_bounds_fraction, "fraction");
  f.write("stealth/at_bounds_per_layer", stealth.at_bounds_per_layer, "fraction");
  f.write("stealth/ks_distance", stealth.ks_distance, "1");
  f.write("stealth/ks_per_layer", stealth.ks_per_layer, "1");
  f.write("stealth/histogram/edges", stealth.original.edges, "weight");
  f.write("stealth/histogram/original", stealth.original.counts, "count");
  f.write("stealth/histogram/obfuscated", stealth.obfuscated.counts, "count");
  f.write("stealth/histogram/masked_original", stealth.masked_original.counts, "count");
  f.write("stealth/histogram/masked_obfuscated", stealth.masked_obfuscated.counts, "count");
}

void write_provenance(h5::File& f, const Config& cfg, const RunOptions& opt, Device dev,
                      uint64_t seed, const std::string& start_time) {
  f.attr("/", "format", std::string("nnsplitter-run-1"));
  f.attr("/", "version", std::string(version()));
  f.attr("/", "git_commit", std::string(git_commit()));
  f.attr("/", "host", hostname());
  f.attr("/", "device", std::string(device_name(dev)));
  f.attr("/", "threads", int64_t(current_threads()));
  f.attr("/", "seed", int64_t(seed));
  f.attr("/", "start_time", start_time);
  f.attr("/", "end_time", iso_now());
  f.attr("/", "config", cfg.effective_yaml());
  std::string run_name = cfg.get_string("name");
  if (opt.sweep_index >= 0) {
    char idx[32];
    std::snprintf(idx, sizeof idx, "/run_%04d", opt.sweep_index);
    run_name += idx;
  }
  f.attr("/", "run_name", run_name);
  f.attr("/", "sweep_index", int64_t(opt.sweep_index));
}

// What the attacks of a run see (experiments/attack_unit.h). The donor is attacks.donor, else
// the victim recipe trained with seed + 1 (cached), loaded on first use into `donor`.
AttackContext attack_context(const Config& cfg, const RunOptions& opt, models::Model& obf,
                             const splitter::Secrets& secrets, const data::Splits& splits,
                             const data::Normalization& norm, int pad_to,
                             const std::vector<std::string>& layers, const models::ModelSpec& spec,
                             Device dev, const std::string& donor_path,
                             std::unique_ptr<models::Model>& donor) {
  AttackContext ctx;
  ctx.obfuscated = &obf;
  ctx.secrets = &secrets;
  ctx.splits = &splits;
  ctx.norm = norm;
  ctx.pad_to = pad_to;
  ctx.rule = cfg.get_string("splitter.rule");
  ctx.layers = layers;
  ctx.seed = uint64_t(cfg.get_int("seed"));
  ctx.progress = opt.progress;
  ctx.cache_dir = opt.cache_dir.empty() ? (fs::path(cfg.get_string("output.dir")) / "victims").string()
                                        : opt.cache_dir;
  ctx.donor = [&cfg, &opt, &splits, norm, pad_to, spec, dev, donor_path, &donor]() -> models::Model* {
    if (donor) return donor.get();
    if (!donor_path.empty()) {
      donor = io::load_model(donor_path);
      const auto& d = donor->spec();
      if (d.arch != spec.arch || d.in_channels != spec.in_channels || d.num_classes != spec.num_classes)
        throw ConfigError("attacks.donor: " + donor_path + " holds a " + d.arch +
                          ", not the attacked architecture " + spec.arch);
    } else {
      CachedVictim d = cached_victim(cfg, spec, splits, norm, pad_to,
                                     uint64_t(cfg.get_int("seed")) + 1, opt, dev);
      if (d.interrupted) throw std::runtime_error("interrupted while training the donor");
      donor = std::move(d.model);
    }
    donor->to(dev);
    return donor.get();
  };
  return ctx;
}

void plot(const Config& cfg, const fs::path& out, const fs::path& work) {
  if (!cfg.get_bool("output.plots")) return;
  fs::path script = fs::path(source_dir()) / "tools" / "plot_results.py";
  if (!fs::exists(script) || !fs::exists("/usr/bin/python3")) {
    std::fprintf(stderr, "warning: %s not found: no plots\n", script.c_str());
    return;
  }
  std::string cmd = "/usr/bin/python3 '" + script.string() + "' '" + out.string() + "' --out '" +
                    work.string() + "' >&2";
  if (std::system(cmd.c_str()) != 0)
    std::fprintf(stderr, "warning: plotting failed (%s); the HDF5 file is complete\n", cmd.c_str());
}

}  // namespace

RunSummary run_experiment(const Config& cfg, const RunOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string start_time = iso_now();
  RunSummary S;
  S.output_path = opt.output_path;
  if (opt.output_path.empty()) throw UsageError("run: no output path");
  AttackSuite attacks = AttackSuite::parse(cfg);  // configuration errors before any work
  set_threads(int(cfg.get_int("threads")));
  Device dev = require_device(cfg.get_string("device"));
  const uint64_t seed = uint64_t(cfg.get_int("seed"));
  const std::string dataset = cfg.get_string("dataset.name");
  const auto info = require_dataset_info(dataset);
  auto spec = spec_for(cfg.get_string("model.arch"), info, float(cfg.get_float("model.width_mult")));
  int pad_to = spec.input_size > info.height ? spec.input_size : 0;
  const fs::path out = fs::absolute(opt.output_path);
  const fs::path work = opt.state_dir.empty() ? fs::path(out).replace_extension("") : fs::path(opt.state_dir);
  fs::create_directories(out.parent_path());
  fs::create_directories(work);
  auto splits = data::load_dataset(dataset, cfg.get_string("dataset.data_dir"));
  const auto norm = data::normalization_for(dataset);

  // ---- victim: load, or train (cached by a hash of its training recipe)
  auto t_victim = std::chrono::steady_clock::now();
  CachedVictim V;
  if (const std::string weights = cfg.get_string("victim.weights"); !weights.empty()) {
    V.model = io::load_model(weights, &V.meta);
    if (V.model->spec().graph) {  // ONNX: the file's graph is the model (model.arch unused)
      spec = V.model->spec();
      pad_to = spec.input_size > info.height ? spec.input_size : 0;
    }
    const auto& vs = V.model->spec();
    if (vs.arch != spec.arch || vs.in_channels != info.channels ||
        vs.num_classes != info.num_classes || spec.input_size < info.height)
      throw ConfigError("victim.weights: " + weights + " holds a " + vs.arch +
                        " that does not match model.arch " + spec.arch + " on " + dataset);
    V.source = weights;
  } else {
    V = cached_victim(cfg, spec, splits, norm, pad_to, seed, opt, dev);
    if (V.interrupted) return S.interrupted = true, S;
  }
  V.model->to(dev);
  const double victim_seconds = seconds_since(t_victim);
  auto original = models::clone_model(*V.model);

  // ---- protect (the victim's model is left holding the obfuscated weights)
  auto t_search = std::chrono::steady_clock::now();
  ProtectInputs in;
  in.model = V.model.get();
  in.train = &splits.train;
  in.test = &splits.test;
  in.norm = norm;
  in.pad_to = pad_to;
  in.dataset_name = dataset;
  in.out_dir = work.string();
  in.seed = seed;
  in.progress = opt.progress;
  in.resume = opt.resume;
  in.stop_flag = opt.stop_flag;
  in.weights_metadata = V.meta;
  in.weights_metadata.erase(kVictimCurves);
  if (cfg.get_bool("output.seal")) {
    fs::path key = work / "secret.key";
    if (!fs::exists(key)) splitter::write_new_key(key.string());
    in.seal_key = splitter::read_key(key.string());
  }
  for (auto name : {"obfuscated.safetensors", "secrets.safetensors"}) fs::remove(work / name);
  ProtectResult P = protect(in, cfg);
  if (P.interrupted) return S.interrupted = true, S;  // resumable
  const double search_seconds = seconds_since(t_search);
  models::Model& obf = *V.model;

  // ---- stealthiness and the attacks (attacks.kinds, experiments/attack_suite.h)
  auto t_attacks = std::chrono::steady_clock::now();
  StealthMetrics stealth = stealth_metrics(*original, obf, P.layers, P.clamp_lo, P.clamp_hi);
  const std::string rule = cfg.get_string("splitter.rule");
  std::unique_ptr<splitter::Secrets> secrets;
  std::unique_ptr<models::Model> donor;
  if (!attacks.empty()) {
    secrets = std::make_unique<splitter::Secrets>(splitter::read_secrets(
        P.secrets_path, in.seal_key.empty() ? nullptr : &in.seal_key));
    AttackContext ctx = attack_context(cfg, opt, obf, *secrets, splits, norm, pad_to, P.layers, spec,
                                       dev, attacks.donor_path(), donor);
    attacks.run(ctx, original.get());  // the deployed model is the original (bit-exact restore)
    for (const auto& l : attacks.lines())
      if (l.role != AttackLine::Role::Score) S.attacks.emplace_back(l.column, l.value);
    const Headline h = attacks.headline();
    for (size_t i = 0; i < h.budgets.size(); ++i) {
      S.attacks.emplace_back("best" + at_budget(h.budgets[i]) + " (" + h.best_attack_column[i] + ")",
                             h.best_attack[i]);
      S.attacks.emplace_back("floor" + at_budget(h.budgets[i]), h.floor[i]);
    }
  }
  const double attacks_seconds = seconds_since(t_attacks);

  // ---- the result file
  S.original_accuracy = P.original_accuracy;
  S.obfuscated_accuracy = P.obfuscated_accuracy;
  S.restored_accuracy = P.restored_accuracy;
  S.obfuscated_weights = P.obfuscated_weights;
  S.total_weights = P.total_weights;
  std::vector<int64_t> eligible_per_layer;
  for (auto& l : splitter::eligible(*original, rule)) eligible_per_layer.push_back(l.param->value.numel());
  h5::write_atomically(out.string(), [&](h5::File& f) {
    write_provenance(f, cfg, opt, dev, seed, start_time);
    write_protection(f, P, V, stealth, eligible_per_layer, spec.arch, dataset, !in.seal_key.empty(),
                     cfg.get_string("controller.kind"));
    attacks.write(f);
    f.write("times/total", seconds_since(t0), "seconds");
    f.write("times/victim", victim_seconds, "seconds");
    f.write("times/search", search_seconds, "seconds");
    f.write("times/attacks", attacks_seconds, "seconds");
  });
  plot(cfg, out, work);
  S.seconds = seconds_since(t0);
  return S;
}

}  // namespace nns::exp
