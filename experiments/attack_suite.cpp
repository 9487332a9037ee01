#include "experiments/attack_suite.h"

#include <algorithm>

#include "core/io/model_io.h"
#include "experiments/cli.h"
#include "experiments/trainer.h"

namespace nns::exp {

void add_groupcover_keys(Schema& s) {
  using V = ValueType;
  auto add = [&](std::string path, ValueType t, std::string def, std::string doc,
                 std::optional<double> lo = {}, std::optional<double> hi = {},
                 std::vector<std::string> choices = {}) {
    s.add({"attacks.groupcover." + path, t, std::move(def), std::move(doc), lo, hi,
           std::move(choices)});
  };
  add("detector", V::String, "extreme_percentile",
      "detector whose flags are reset (every detector is scored against the secrets)", {}, {},
      detector_names());
  add("percentile", V::Float, "0.001",
      "extreme_percentile*: percent of the sorted weights at each end (GroupCover: 0.001)", 1e-9,
      49);
  add("eps", V::Float, "2e-3",
      "extreme_percentile*: flag weights within 2*eps of either end value (GroupCover: 2e-3)", 0,
      {});
  add("bin_fraction", V::Float, "1e-3", "cv_bins: bin width as a fraction of the weight range",
      1e-9, 0.5);
  add("resets", V::StringList, "[donor]",
      "reset modes, each followed by knockoff fine-tuning", {}, {}, reset_modes());
  add("donor", V::String, "\"\"",
      "public model of the architecture (.safetensors); \"\" = the victim recipe trained with "
      "seed + 1 (cached like the victim)");
  add("budgets", V::IntList, "[300, 500]", "query budgets (knockoff transfer-set sizes)", 1, {});
  add("epochs", V::Int, "10", "knockoff epochs (GroupCover: 10)", 0, {});
  add("lr", V::Float, "0.1", "knockoff SGD learning rate, constant (GroupCover: 0.1)", 1e-9, {});
  add("momentum", V::Float, "0.5", "knockoff SGD momentum (GroupCover: 0.5)", 0, 1);
  add("batch", V::Int, "64", "knockoff batch size (GroupCover: 64)", 1, 65536);
  add("queries", V::String, "test",
      "query source: test = held out of the test split (accuracy on the rest), train = the "
      "victim's training split (GroupCover's choice)", {}, {}, query_sources());
  add("labels", V::String, "victim",
      "query labels: the deployed victim's argmax (API access) or the ground truth", {}, {},
      {"victim", "truth"});
  add("scope", V::String, "trainable",
      "what the detectors scan: trainable = every trainable parameter (GroupCover; BatchNorm "
      "scales included), weights = convolution and linear weights only",
      {}, {}, detector_scopes());
  add("bn_recalibrate", V::Bool, "true",
      "also the label-free attack on the same queries: the obfuscated model's BatchNorm "
      "statistics re-estimated on the first b queries, nothing else changed (models with "
      "BatchNorm)");
  add("floor", V::Bool, "true",
      "also the black-box floor: the donor and a fresh model trained on the same queries");
}

GroupCoverRun run_groupcover(const Config& cfg, models::Model& obfuscated, models::Model& victim,
                             const splitter::Secrets& secrets, const data::Splits& splits,
                             const data::Normalization& norm, int pad_to,
                             const std::function<std::unique_ptr<models::Model>()>& trained_donor) {
  const std::string p = "attacks.groupcover.";
  GroupCoverRun run;
  GroupCoverOptions& o = run.options;
  o.detector = cfg.get_string(p + "detector");
  o.params.percentile = cfg.get_float(p + "percentile");
  o.params.eps = cfg.get_float(p + "eps");
  o.params.bin_fraction = cfg.get_float(p + "bin_fraction");
  o.scope = cfg.get_string(p + "scope");
  o.resets = cfg.get_strings(p + "resets");
  o.knockoff.budgets = cfg.get_ints(p + "budgets");
  o.knockoff.epochs = int(cfg.get_int(p + "epochs"));
  o.knockoff.lr = float(cfg.get_float(p + "lr"));
  o.knockoff.momentum = float(cfg.get_float(p + "momentum"));
  o.knockoff.batch = int(cfg.get_int(p + "batch"));
  o.knockoff.seed = uint64_t(cfg.get_int("seed"));
  o.knockoff.pad_to = pad_to;
  o.floor = cfg.get_bool(p + "floor");
  o.bn_recalibrate = cfg.get_bool(p + "bn_recalibrate");
  if (o.knockoff.budgets.empty()) throw ConfigError(p + "budgets: needs at least one budget");
  run.query_source = cfg.get_string(p + "queries");
  run.labels = cfg.get_string(p + "labels");

  const bool need_donor =
      o.floor || std::find(o.resets.begin(), o.resets.end(), "donor") != o.resets.end();
  std::unique_ptr<models::Model> donor;
  if (need_donor) {
    const std::string path = cfg.get_string(p + "donor");
    if (path.empty()) {
      donor = trained_donor();
      if (!donor) {
        run.interrupted = true;
        return run;
      }
    } else {
      donor = io::load_model(path);
      const auto &d = donor->spec(), &s = obfuscated.spec();
      if (d.arch != s.arch || d.in_channels != s.in_channels || d.num_classes != s.num_classes)
        throw ConfigError(p + "donor: " + path + " holds a " + d.arch +
                          ", not the attacked architecture " + s.arch);
      donor->to(obfuscated.device());
    }
  }
  const int64_t n = *std::max_element(o.knockoff.budgets.begin(), o.knockoff.budgets.end());
  QuerySplit q;
  try {
    q = split_queries(splits, run.query_source, n, o.knockoff.seed);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(p + "budgets: " + e.what());
  }
  const data::Dataset transfer =
      label_queries(q.pool, run.labels == "victim" ? &victim : nullptr, norm, pad_to);
  AccuracyFn acc = [&](models::Model& m) {
    return evaluate(m, q.eval, norm, 256, pad_to).accuracy();
  };
  run.eval_samples = q.eval.size();
  victim.set_training(false);
  obfuscated.set_training(false);
  run.accuracy_victim_eval = acc(victim);
  run.accuracy_obfuscated_eval = acc(obfuscated);
  run.result = groupcover_attack(obfuscated, &secrets, donor.get(), transfer, norm, o, acc);
  return run;
}

void write_groupcover(h5::File& f, const GroupCoverRun& r) {
  const std::string g = "attacks/groupcover";
  const GroupCoverResult& res = r.result;
  f.write(g + "/budgets", res.budgets, "count");
  f.write(g + "/resets", res.resets);
  f.write(g + "/accuracy_reset", res.accuracy_reset, "fraction");
  std::vector<double> rec;
  for (const auto& row : res.recovered) rec.insert(rec.end(), row.begin(), row.end());
  f.write(g + "/recovered", rec, "fraction",
          {int64_t(res.recovered.size()), int64_t(res.budgets.size())});
  if (!res.floor_donor.empty()) f.write(g + "/floor_donor", res.floor_donor, "fraction");
  if (!res.floor_scratch.empty()) f.write(g + "/floor_scratch", res.floor_scratch, "fraction");
  if (!res.bn_recalibrated.empty())
    f.write(g + "/bn_recalibrated", res.bn_recalibrated, "fraction");
  f.write(g + "/flagged", weight_count(res.flagged), "count");
  f.write(g + "/accuracy_victim_eval", r.accuracy_victim_eval, "fraction");
  f.write(g + "/accuracy_obfuscated_eval", r.accuracy_obfuscated_eval, "fraction");
  f.write(g + "/eval_samples", r.eval_samples, "count");
  for (const auto& s : res.scores) {
    const std::string d = g + "/detectors/" + s.detector;
    f.write(d + "/flagged", s.flagged, "count");
    f.write(d + "/true_positives", s.true_positives, "count");
    f.write(d + "/secrets", s.secrets, "count");
    f.write(d + "/precision", s.precision, "fraction");
    f.write(d + "/recall", s.recall, "fraction");
  }
  f.attr(g, "detector", r.options.detector);
  f.attr(g, "percentile", r.options.params.percentile);
  f.attr(g, "eps", r.options.params.eps);
  f.attr(g, "scope", r.options.scope);
  f.attr(g, "queries", r.query_source);
  f.attr(g, "labels", r.labels);
  f.attr(g, "epochs", int64_t(r.options.knockoff.epochs));
  f.attr(g, "lr", double(r.options.knockoff.lr));
  f.attr(g, "momentum", double(r.options.knockoff.momentum));
  f.attr(g, "batch", int64_t(r.options.knockoff.batch));
}

std::vector<std::pair<std::string, double>> attack_columns(const h5::File& f) {
  std::vector<std::pair<std::string, double>> c;
  if (f.exists("secrets/bytes")) c.emplace_back("secrets_bytes", f.read_double("secrets/bytes"));
  const std::string g = "attacks/groupcover";
  if (f.exists(g + "/budgets")) {
    if (f.exists(g + "/detectors")) {
      for (const auto& d : f.list(g + "/detectors")) {
        c.emplace_back("precision." + d, f.read_double(g + "/detectors/" + d + "/precision"));
        c.emplace_back("recall." + d, f.read_double(g + "/detectors/" + d + "/recall"));
      }
    }
    const auto budgets = f.read_ints(g + "/budgets");
    const auto resets = f.read_strings(g + "/resets");
    const auto rec = f.read_doubles(g + "/recovered");
    for (size_t r = 0; r < resets.size(); ++r)
      for (size_t b = 0; b < budgets.size(); ++b)
        c.emplace_back("groupcover." + resets[r] + "@" + std::to_string(budgets[b]),
                       rec.at(r * budgets.size() + b));
    if (f.exists(g + "/bn_recalibrated")) {
      const auto v = f.read_doubles(g + "/bn_recalibrated");
      for (size_t b = 0; b < budgets.size() && b < v.size(); ++b)
        c.emplace_back("bn_recal@" + std::to_string(budgets[b]), v[b]);
    }
    for (const char* which : {"donor", "scratch"}) {
      const std::string path = g + "/floor_" + which;
      if (!f.exists(path)) continue;
      const auto v = f.read_doubles(path);
      for (size_t b = 0; b < budgets.size() && b < v.size(); ++b)
        c.emplace_back(std::string("floor.") + which + "@" + std::to_string(budgets[b]), v[b]);
    }
  }
  if (f.exists("attacks/boundary_reset/accuracy_reset")) {
    c.emplace_back("boundary_reset", f.read_double("attacks/boundary_reset/accuracy_reset"));
    const auto ft = f.read_doubles("attacks/boundary_reset/accuracy_finetuned");
    if (ft.size() > 1) c.emplace_back("boundary_reset+ft", ft.back());
  }
  return c;
}

}  // namespace nns::exp
