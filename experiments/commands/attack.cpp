// `nnsplitter attack --kind norm_clip|finetune|boundary_reset|groupcover --weights OBF
// --dataset D ...`: runs one attack of SPEC §2 on an obfuscated weights file and reports test
// accuracies. The attacker's view needs no secrets; --secrets (with --key when sealed) only lets
// the command score the detectors and report stealthiness. groupcover (the published protocol,
// docs/attacks.md) labels its queries with the deployed victim: --victim, or the obfuscated
// weights restored with --secrets.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "core/io/model_io.h"
#include "core/io/strict_number.h"
#include "core/splitter/secrets.h"
#include "experiments/attacks.h"
#include "experiments/commands/attack_command.h"
#include "experiments/groupcover.h"
#include "experiments/metrics.h"
#include "experiments/trainer.h"

namespace nns::exp {

namespace {

std::string pct(double v) {
  if (std::isnan(v)) return "   n/a";
  char b[32];
  std::snprintf(b, sizeof b, "%6.2f%%", 100 * v);
  return b;
}

// "lo,hi" → pair; UsageError otherwise.
std::pair<double, double> parse_range(const std::string& s) {
  auto comma = s.find(',');
  if (comma == std::string::npos)
    throw UsageError("--global-range must be auto, none or lo,hi (got '" + s + "')");
  const auto a = io::parse_strict_double(std::string_view(s).substr(0, comma));
  const auto b = io::parse_strict_double(std::string_view(s).substr(comma + 1));
  if (!a || !b) throw UsageError("--global-range must be auto, none or lo,hi (got '" + s + "')");
  const double lo = *a, hi = *b;
  if (!(lo < hi))
    throw UsageError("--global-range: lo must be smaller than hi (got '" + s + "')");
  return {lo, hi};
}

// Strict (core/io/strict_number.h): secrets metadata such as clamp_lo = "0.1junk" is no number.
bool parse_double(const std::string& s, double& out) {
  const auto v = io::parse_strict_double(s);
  if (v) out = *v;
  return v.has_value();
}

nlohmann::json nan_to_null(const std::vector<double>& v) {
  nlohmann::json j = nlohmann::json::array();
  for (double x : v) j.push_back(std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr));
  return j;
}

struct AttackArgs {
  std::string kind, weights, dataset, data_dir, secrets, key, rule, device = "cpu";
  std::vector<double> ks = {1, 2, 3};
  std::string global_range = "none";
  std::vector<double> fractions = {0.01, 0.05, 0.1};
  int epochs = -1, batch = 0, threads = 0;
  float lr = 0, momentum = -1, weight_decay = -1;
  std::string optimizer = "sgd", mode = "zero", donor, arch;
  bool no_scratch = false, json = false;
  double delta = 1e-3;
  int64_t samples = 0;
  uint64_t seed = 0;
  // groupcover
  std::string victim, detector = "extreme_percentile", queries = "test", labels = "victim";
  std::vector<std::string> resets = {"donor"};
  std::vector<int64_t> budgets = {300, 500};
  double percentile = 0.001, eps = 2e-3;
  std::string scope = "trainable";
  bool no_floor = false, no_bn_recalibrate = false;
};

std::unique_ptr<models::Model> load_same_arch(const std::string& path, const models::Model& like,
                                              const std::string& what, Device dev,
                                              const AttackArgs& a) {
  auto m = load_weights(path, a.arch, a.dataset);
  const auto &d = m->spec(), &s = like.spec();
  if (d.arch != s.arch || d.in_channels != s.in_channels || d.num_classes != s.num_classes ||
      d.input_size != s.input_size || d.width_mult != s.width_mult)
    throw UsageError(what + " " + path + " is a " + d.arch + " (" +
                     std::to_string(d.in_channels) + " channel(s), " +
                     std::to_string(d.num_classes) + " classes), not the architecture of the "
                     "attacked weights");
  m->to(dev);
  return m;
}

// --kind groupcover: detect -> reset -> knockoff, beside the black-box floor; fills j and prints
// a table unless --json.
void run_groupcover(const AttackArgs& a, models::Model& obf, const splitter::Secrets* secrets,
                    models::Model* donor, const data::Splits& splits,
                    const data::Normalization& norm, int pad_to, Device dev, nlohmann::json& j) {
  GroupCoverOptions o;
  o.detector = a.detector;
  o.params.percentile = a.percentile;
  o.params.eps = a.eps;
  o.scope = a.scope;
  o.resets = a.resets;
  o.knockoff.budgets = a.budgets;
  o.knockoff.epochs = a.epochs;
  o.knockoff.lr = a.lr;
  o.knockoff.momentum = a.momentum;
  o.knockoff.weight_decay = a.weight_decay;
  o.knockoff.batch = a.batch ? a.batch : 64;
  o.knockoff.seed = a.seed;
  o.knockoff.pad_to = pad_to;
  o.floor = !a.no_floor;
  o.bn_recalibrate = !a.no_bn_recalibrate;
  const int64_t n = *std::max_element(a.budgets.begin(), a.budgets.end());
  QuerySplit q;
  try {
    q = split_queries(splits, a.queries, n, a.seed);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--budgets/--queries: ") + e.what());
  }
  std::unique_ptr<models::Model> victim;
  if (a.labels == "victim") {
    if (!a.victim.empty()) {
      victim = load_same_arch(a.victim, obf, "--victim", dev, a);
    } else {
      victim = models::clone_model(obf);
      splitter::apply_secrets(*victim, *secrets);
    }
  }
  const data::Dataset transfer = label_queries(q.pool, victim.get(), norm, pad_to);
  AccuracyFn acc = [&](models::Model& m) {
    return evaluate(m, q.eval, norm, 256, pad_to).accuracy();
  };
  obf.set_training(false);
  const double obf_eval = acc(obf);
  const double victim_eval = victim ? acc(*victim) : std::nan("");
  auto r = groupcover_attack(obf, secrets, donor, transfer, norm, o, acc);

  j["queries"] = a.queries;
  j["labels"] = a.labels;
  j["eval_samples"] = q.eval.size();
  j["budgets"] = r.budgets;
  j["detector"] = o.detector;
  j["percentile"] = o.params.percentile;
  j["eps"] = o.params.eps;
  j["scope"] = o.scope;
  j["flagged"] = weight_count(r.flagged);
  j["epochs"] = o.knockoff.epochs;
  j["lr"] = o.knockoff.lr;
  j["momentum"] = o.knockoff.momentum;
  j["batch"] = o.knockoff.batch;
  j["accuracy_obfuscated_eval"] = obf_eval;
  j["accuracy_victim_eval"] = std::isfinite(victim_eval) ? nlohmann::json(victim_eval) : nullptr;
  j["detectors"] = nlohmann::json::array();
  for (const auto& sc : r.scores)
    j["detectors"].push_back({{"name", sc.detector},
                              {"flagged", sc.flagged},
                              {"true_positives", sc.true_positives},
                              {"secrets", sc.secrets},
                              {"precision", nan_to_null({sc.precision})[0]},
                              {"recall", nan_to_null({sc.recall})[0]}});
  j["resets"] = r.resets;
  j["accuracy_reset"] = r.accuracy_reset;
  j["recovered"] = nlohmann::json::array();
  for (const auto& row : r.recovered) j["recovered"].push_back(nan_to_null(row));
  j["floor_donor"] = donor && o.floor ? nan_to_null(r.floor_donor) : nlohmann::json(nullptr);
  j["floor_scratch"] = o.floor ? nan_to_null(r.floor_scratch) : nlohmann::json(nullptr);
  j["bn_recalibrated"] =
      r.bn_recalibrated.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.bn_recalibrated);
  if (a.json) return;

  std::printf("queries from the %s split, labelled by %s; accuracy on %lld held-out images "
              "(obfuscated %s", a.queries.c_str(),
              a.labels == "victim" ? "the victim's argmax" : "the ground truth",
              (long long)q.eval.size(), pct(obf_eval).c_str());
  if (victim) std::printf(", victim %s", pct(victim_eval).c_str());
  std::printf(")\n");
  for (const auto& sc : r.scores)
    std::printf("detector %-26s flagged %8lld, true positives %6lld of %6lld: precision %s, "
                "recall %s\n",
                sc.detector.c_str(), (long long)sc.flagged, (long long)sc.true_positives,
                (long long)sc.secrets, pct(sc.precision).c_str(), pct(sc.recall).c_str());
  if (!secrets)
    std::printf("detector %s flagged %lld weights\n", o.detector.c_str(),
                (long long)weight_count(r.flagged));
  std::printf("%-42s %9s", "attack", "reset");
  for (auto b : r.budgets) std::printf("  %6lld q", (long long)b);
  std::printf("\n");
  auto line = [&](const std::string& what, const std::string& reset,
                  const std::vector<double>& row) {
    std::printf("%-42s %9s", what.c_str(), reset.c_str());
    for (double v : row) std::printf("  %8s", pct(v).c_str());
    std::printf("\n");
  };
  if (!r.bn_recalibrated.empty())
    line("BatchNorm statistics re-estimated (no labels)", "", r.bn_recalibrated);
  for (size_t i = 0; i < r.resets.size(); ++i)
    line(o.detector + " -> " + r.resets[i] + " -> knockoff", pct(r.accuracy_reset[i]),
         r.recovered[i]);
  if (!r.floor_donor.empty()) line("floor: donor + queries", "", r.floor_donor);
  if (!r.floor_scratch.empty()) line("floor: scratch + queries", "", r.floor_scratch);
}
}  // namespace

Command add_attack_command(CLI::App& root) {
  auto a = std::make_shared<AttackArgs>();
  CLI::App* sub = root.add_subcommand(
      "attack", "Attack an obfuscated model: norm clipping, fine-tuning, boundary reset or the GroupCover "
      "protocol");
  sub->add_option("--kind", a->kind, "norm_clip, finetune, boundary_reset or groupcover")
      ->required();
  sub->add_option("--weights", a->weights, "Obfuscated weights (.safetensors)")->required();
  sub->add_option("--dataset", a->dataset, "Dataset the model was trained on")->required();
  sub->add_option("--data-dir", a->data_dir, "Folder holding the dataset files");
  add_arch_option(sub, a->arch);
  sub->add_option("--secrets", a->secrets,
                  "Secrets of these weights: only to count the detector's true positives and "
                  "report stealthiness (the attack itself never reads them)");
  sub->add_option("--key", a->key, "Key file when the secrets are sealed");
  sub->add_option("--rule", a->rule,
                  "Eligible layers: spatial or all (default: the secrets' rule, else spatial)");
  sub->add_option("--k", a->ks, "norm_clip: clipping factors k of mean ± k·std, e.g. 1,2,3")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--global-range", a->global_range,
                  "norm_clip: also clip every eligible layer to lo,hi; auto = mean ± 3·std of "
                  "all eligible weights; none = skip")
      ->capture_default_str();
  sub->add_option("--fractions", a->fractions,
                  "finetune: shares of the training data the attacker holds, e.g. 0.01,0.05")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--epochs", a->epochs,
                  "training epochs (default 5; groupcover: 10, GroupCover's setting)");
  sub->add_option("--lr", a->lr, "constant learning rate (default 0.01; groupcover: 0.1)");
  sub->add_option("--optimizer", a->optimizer, "finetune: sgd or adam")
      ->check(CLI::IsMember({"sgd", "adam"}))
      ->capture_default_str();
  sub->add_option("--momentum", a->momentum,
                  "finetune / groupcover: SGD momentum (default 0.9; groupcover: 0.5)");
  sub->add_option("--weight-decay", a->weight_decay,
                  "finetune / groupcover: L2 weight decay (default 5e-4; groupcover: 0)");
  sub->add_option("--batch", a->batch,
                  "batch size (default: finetune 128, boundary_reset and groupcover 64)");
  sub->add_flag("--no-scratch", a->no_scratch,
                "finetune: skip training the architecture from scratch");
  sub->add_option("--delta", a->delta,
                  "boundary_reset: flag weights within delta of the minimum or maximum")
      ->capture_default_str();
  sub->add_option("--mode", a->mode, "boundary_reset: reset to zero, mean (layer) or donor")
      ->capture_default_str();
  sub->add_option("--donor", a->donor,
                  "boundary_reset --mode donor / groupcover: weights of a public model of the "
                  "same architecture (e.g. a victim trained with another seed)");
  sub->add_option("--victim", a->victim,
                  "groupcover: the deployed (unobfuscated) victim that labels the queries "
                  "(default: the weights restored with --secrets)");
  sub->add_option("--detector", a->detector,
                  "groupcover: the detector that drives the reset (extreme_percentile, "
                  "extreme_percentile_layer, cv_bins); all are scored when --secrets is given")
      ->capture_default_str();
  sub->add_option("--percentile", a->percentile,
                  "groupcover: extreme_percentile's percentile at each end (percent)")
      ->capture_default_str();
  sub->add_option("--eps", a->eps, "groupcover: flag weights within 2*eps of either end value")
      ->capture_default_str();
  sub->add_option("--scope", a->scope,
                  "groupcover: what the detectors scan: trainable (every trainable parameter, "
                  "GroupCover's code) or weights (convolution and linear weights only)")
      ->check(CLI::IsMember(detector_scopes()))
      ->capture_default_str();
  sub->add_option("--resets", a->resets, "groupcover: reset modes to try, e.g. donor,zero,mean")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--budgets", a->budgets, "groupcover: query budgets, e.g. 300,500")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--queries", a->queries,
                  "groupcover: where the queries come from: test (held out of the test split, "
                  "accuracy on the rest) or train (the victim's training split, GroupCover's "
                  "choice)")
      ->capture_default_str();
  sub->add_option("--labels", a->labels,
                  "groupcover: label the queries by the victim's argmax (victim) or the ground "
                  "truth (truth)")
      ->capture_default_str();
  sub->add_flag("--no-bn-recalibrate", a->no_bn_recalibrate,
                "groupcover: skip the label-free attack on the same queries (the obfuscated "
                "model's BatchNorm statistics re-estimated on them; nothing else changed)");
  sub->add_flag("--no-floor", a->no_floor,
                "groupcover: skip the black-box floor (training the donor and a fresh model on "
                "the same queries)");
  sub->add_option("--samples", a->samples,
                  "boundary_reset: labelled training samples to fine-tune with after the "
                  "reset (0 = none)")
      ->capture_default_str();
  sub->add_option("--seed", a->seed, "Seed (data subsets, shuffling, scratch init)")
      ->capture_default_str();
  sub->add_option("--device", a->device, "cpu, cuda or auto")->capture_default_str();
  sub->add_option("--threads", a->threads, "CPU threads (default: the CPUs this process may use)");
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");

  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    // ---- everything that can be checked before loading anything
    const std::string kind = a->kind;
    if (kind != "norm_clip" && kind != "finetune" && kind != "boundary_reset" &&
        kind != "groupcover")
      throw UsageError("unknown --kind '" + kind +
                       "' (norm_clip, finetune, boundary_reset or groupcover)");
    const bool gc = kind == "groupcover";
    if (a->epochs == -1) a->epochs = gc ? 10 : 5;
    if (a->lr == 0) a->lr = gc ? 0.1f : 0.01f;
    if (a->momentum == -1) a->momentum = gc ? 0.5f : 0.9f;
    if (a->weight_decay == -1) a->weight_decay = gc ? 0.0f : 5e-4f;
    if (!(a->momentum >= 0) || !(a->weight_decay >= 0))
      throw UsageError("--momentum and --weight-decay must be >= 0");
    set_threads(a->threads);
    Device dev = Device::CPU;
    try {
      dev = require_device(a->device);
    } catch (const std::invalid_argument& e) {
      throw UsageError(e.what());
    }
    auto info = require_dataset_info(a->dataset);
    if (!a->rule.empty() && a->rule != "spatial" && a->rule != "all")
      throw UsageError("--rule must be spatial or all (got '" + a->rule + "')");
    if (!a->key.empty() && a->secrets.empty()) throw UsageError("--key needs --secrets");
    if (a->epochs < 0) throw UsageError("--epochs must be >= 0");
    if (a->batch < 0) throw UsageError("--batch must be at least 1");
    if (!(a->lr > 0)) throw UsageError("--lr must be positive");
    if (kind == "norm_clip") {
      if (a->ks.empty()) throw UsageError("--k needs at least one value");
      for (double k : a->ks)
        if (!(k >= 0) || !std::isfinite(k)) throw UsageError("--k values must be >= 0");
    }
    if (kind == "finetune") {
      if (a->fractions.empty()) throw UsageError("--fractions needs at least one value");
      for (double p : a->fractions)
        if (!(p > 0 && p <= 1)) throw UsageError("--fractions values must be in (0, 1]");
    }
    if (kind == "boundary_reset") {
      if (a->mode != "zero" && a->mode != "mean" && a->mode != "donor")
        throw UsageError("--mode must be zero, mean or donor (got '" + a->mode + "')");
      if (a->mode == "donor" && a->donor.empty()) throw UsageError("--mode donor needs --donor");
      if (!(a->delta >= 0) || !std::isfinite(a->delta)) throw UsageError("--delta must be >= 0");
      if (a->samples < 0) throw UsageError("--samples must be >= 0");
    }
    if (gc) {
      try {
        make_detector(a->detector, {a->percentile, a->eps});
      } catch (const std::invalid_argument& e) {
        throw UsageError(std::string("--detector/--percentile/--eps: ") + e.what());
      }
      if (a->budgets.empty()) throw UsageError("--budgets needs at least one value");
      for (int64_t b : a->budgets)
        if (b < 1) throw UsageError("--budgets values must be >= 1");
      if (a->resets.empty()) throw UsageError("--resets needs at least one value");
      for (const auto& r : a->resets) {
        if (r != "zero" && r != "mean" && r != "donor")
          throw UsageError("--resets: unknown mode '" + r + "' (zero, mean or donor)");
        if (r == "donor" && a->donor.empty())
          throw UsageError("--resets donor needs --donor (a public model of the architecture)");
      }
      if (a->queries != "test" && a->queries != "train")
        throw UsageError("--queries must be test or train (got '" + a->queries + "')");
      if (a->labels != "victim" && a->labels != "truth")
        throw UsageError("--labels must be victim or truth (got '" + a->labels + "')");
      if (a->labels == "victim" && a->victim.empty() && a->secrets.empty())
        throw UsageError("--labels victim needs the deployed victim: --victim or --secrets");
    }
    bool global = false;
    bool global_auto = a->global_range == "auto";
    std::pair<double, double> grange{0, 0};
    if (kind == "norm_clip" && !global_auto && a->global_range != "none" &&
        !a->global_range.empty()) {
      grange = parse_range(a->global_range);
      global = true;
    }

    // ---- the model, the secrets, the layers
    std::map<std::string, std::string> meta;
    auto model = load_weights(a->weights, a->arch, a->dataset, &meta);
    const auto& s = model->spec();
    const int pad_to = require_model_fits(s, a->weights, info, a->dataset);
    model->to(dev);

    std::unique_ptr<splitter::Secrets> secrets;
    if (!a->secrets.empty())
      secrets = std::make_unique<splitter::Secrets>(
          splitter::read_secrets_for_model(a->secrets, a->key, *model, a->weights, meta));
    std::string rule = a->rule;
    if (rule.empty() && secrets && secrets->metadata.count("rule")) {
      rule = secrets->metadata.at("rule");
      if (rule != "spatial" && rule != "all")
        throw std::runtime_error(a->secrets + ": unknown rule '" + rule + "' in the metadata");
    }
    if (rule.empty()) rule = "spatial";
    const auto layers = models::eligible_layers(*model, rule);
    if (layers.empty()) throw std::runtime_error(s.arch + " has no eligible layers (rule " + rule + ")");

    std::unique_ptr<models::Model> donor;
    if ((kind == "boundary_reset" && a->mode == "donor") || (gc && !a->donor.empty())) {
      donor = load_same_arch(a->donor, *model, "--donor", dev, *a);
    }

    // ---- data and the accuracy oracle
    auto splits = data::load_dataset(a->dataset, a->data_dir);
    const auto norm = data::normalization_for(a->dataset);
    const data::Dataset& test = splits.test;
    AccuracyFn acc = [&](models::Model& m) {
      return evaluate(m, test, norm, 256, pad_to).accuracy();
    };
    const double obf_acc = acc(*model);

    nlohmann::json j;
    j["kind"] = kind;
    j["weights"] = a->weights;
    j["dataset"] = a->dataset;
    j["arch"] = s.arch;
    j["rule"] = rule;
    j["layers"] = layers;
    j["obfuscated_accuracy"] = obf_acc;
    if (!a->json)
      std::printf("attack %s on %s (%s, %zu eligible layers, rule %s): obfuscated accuracy %s\n",
                  kind.c_str(), s.arch.c_str(), a->dataset.c_str(), layers.size(), rule.c_str(),
                  pct(obf_acc).c_str());

    // ---- stealthiness, when the secrets are known
    if (secrets) {
      auto original = models::clone_model(*model);
      splitter::apply_secrets(*original, *secrets);
      double lo = 0, hi = 0;
      // Given in the metadata (a number, else an error naming the file), or the default.
      for (const char* key : {"clamp_lo", "clamp_hi"}) {
        auto it = secrets->metadata.find(key);
        double unused = 0;
        if (it != secrets->metadata.end() && !parse_double(it->second, unused))
          throw std::runtime_error(a->secrets + ": metadata " + key + " = '" + it->second +
                                   "' is not a finite number");
      }
      bool have = secrets->metadata.count("clamp_lo") && secrets->metadata.count("clamp_hi") &&
                  parse_double(secrets->metadata.at("clamp_lo"), lo) &&
                  parse_double(secrets->metadata.at("clamp_hi"), hi);
      if (!have) {  // the default clamp: min and max of the original eligible weights
        lo = INFINITY;
        hi = -INFINITY;
        for (auto& e : original->state())
          if (std::find(layers.begin(), layers.end(), e.key) != layers.end())
            for (float x : e.tensor->to_vector()) {
              lo = std::min(lo, double(x));
              hi = std::max(hi, double(x));
            }
      }
      auto st = stealth_metrics(*original, *model, layers, lo, hi);
      j["stealth"] = {{"clamp_lo", lo},
                      {"clamp_hi", hi},
                      {"obfuscated_total", st.obfuscated_total},
                      {"obfuscated_per_layer", st.obfuscated_per_layer},
                      {"at_bounds_fraction", st.at_bounds_fraction},
                      {"at_bounds_per_layer", st.at_bounds_per_layer},
                      {"ks_distance", st.ks_distance},
                      {"ks_per_layer", st.ks_per_layer}};
      if (!a->json)
        std::printf("stealth: %lld obfuscated weights, %.1f%% at the clamp bounds [%.6g, %.6g], "
                    "KS distance %.3g\n",
                    (long long)st.obfuscated_total, 100 * st.at_bounds_fraction, lo, hi,
                    st.ks_distance);
    }

    // ---- the attack
    if (kind == "norm_clip") {
      if (global_auto) {
        grange = auto_global_range(*model, layers, 3.0);
        global = true;
      }
      auto r = norm_clip_attack(*model, layers, a->ks, global ? grange.first : 0,
                                global ? grange.second : 0, acc);
      j["k"] = r.k;
      j["accuracy"] = r.accuracy;
      if (global) {
        j["global_lo"] = r.global_lo;
        j["global_hi"] = r.global_hi;
        j["global_accuracy"] = r.global_accuracy;
      } else {
        j["global_lo"] = j["global_hi"] = j["global_accuracy"] = nullptr;
      }
      if (!a->json) {
        std::printf("%-24s %s\n", "clipping", "accuracy");
        for (size_t i = 0; i < r.k.size(); ++i) {
          char lab[64];
          std::snprintf(lab, sizeof lab, "mean +- %g*std", r.k[i]);
          std::printf("%-24s %s\n", lab, pct(r.accuracy[i]).c_str());
        }
        if (global) {
          char lab[80];
          std::snprintf(lab, sizeof lab, "global [%.4g, %.4g]", r.global_lo, r.global_hi);
          std::printf("%-24s %s\n", lab, pct(r.global_accuracy).c_str());
        }
      }
    } else if (kind == "finetune") {
      FinetuneOptions o;
      o.fractions = a->fractions;
      o.epochs = a->epochs;
      o.optimizer = a->optimizer;
      o.lr = a->lr;
      o.momentum = a->momentum;
      o.weight_decay = a->weight_decay;
      o.batch = a->batch ? a->batch : 128;
      o.scratch = !a->no_scratch;
      o.seed = a->seed;
      o.pad_to = pad_to;
      o.progress = true;
      auto r = finetune_attack(*model, splits.train, norm, o, acc);
      j["fractions"] = r.fractions;
      j["epochs"] = o.epochs;
      j["optimizer"] = o.optimizer;
      j["lr"] = o.lr;
      j["accuracy"] = nlohmann::json::array();
      j["scratch_accuracy"] = nlohmann::json::array();
      for (auto& row : r.accuracy) j["accuracy"].push_back(nan_to_null(row));
      for (auto& row : r.scratch_accuracy) j["scratch_accuracy"].push_back(nan_to_null(row));
      if (!a->json) {
        std::printf("%-10s %-10s", "fraction", "model");
        for (int e = 0; e <= o.epochs; ++e) std::printf("  epoch %-3d", e);
        std::printf("\n");
        for (size_t p = 0; p < r.fractions.size(); ++p) {
          auto line = [&](const char* what, const std::vector<double>& row, bool first) {
            char frac[32];
            std::snprintf(frac, sizeof frac, "%.4g%%", 100 * r.fractions[p]);
            std::printf("%-10s %-10s", first ? frac : "", what);
            for (double v : row) std::printf("  %9s", pct(v).c_str());
            std::printf("\n");
          };
          line("finetuned", r.accuracy[p], true);
          if (!r.scratch_accuracy.empty()) line("scratch", r.scratch_accuracy[p], false);
        }
      }
    } else if (gc) {
      run_groupcover(*a, *model, secrets.get(), donor.get(), splits, norm, pad_to, dev, j);
    } else {
      BoundaryResetOptions o;
      o.delta = a->delta;
      o.mode = a->mode;
      o.donor = donor.get();
      o.finetune_samples = a->samples;
      o.finetune_epochs = a->epochs;
      o.lr = a->lr;
      o.batch = a->batch ? a->batch : 64;
      o.seed = a->seed;
      o.pad_to = pad_to;
      auto r = boundary_reset_attack(*model, layers, secrets.get(), splits.train, norm, o, acc);
      j["delta"] = o.delta;
      j["mode"] = o.mode;
      j["lo"] = r.lo;
      j["hi"] = r.hi;
      j["detected"] = r.detected;
      j["detected_per_layer"] = r.detected_per_layer;
      if (secrets) {
        j["true_positives"] = r.true_positives;
        j["obfuscated"] = r.obfuscated;
      } else {
        j["true_positives"] = j["obfuscated"] = nullptr;
      }
      j["accuracy_reset"] = r.accuracy_reset;
      j["samples"] = o.finetune_samples;
      j["accuracy_finetuned"] = nan_to_null(r.accuracy_finetuned);
      if (!a->json) {
        std::printf("range of the eligible weights [%.6g, %.6g], delta %g: %lld weights flagged",
                    r.lo, r.hi, o.delta, (long long)r.detected);
        if (secrets)
          std::printf(", %lld of them obfuscated (of %lld obfuscated weights)",
                      (long long)r.true_positives, (long long)r.obfuscated);
        std::printf("\nafter reset to %s: accuracy %s\n", o.mode.c_str(),
                    pct(r.accuracy_reset).c_str());
        for (size_t e = 1; e < r.accuracy_finetuned.size(); ++e)
          std::printf("fine-tuned on %lld samples, epoch %zu: accuracy %s\n",
                      (long long)o.finetune_samples, e, pct(r.accuracy_finetuned[e]).c_str());
      }
    }
    if (a->json) print_json(j);
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
