// `nnsplitter attack --kind K[,K...] --weights OBF --dataset D ...`: the attack units of
// experiments/attack_suite.h on an obfuscated weights file. Every key of a unit
// (attacks.<kind>.<key>) and of the shared settings (attacks.queries.*, attacks.train.*) is an
// option of its own: --<key> VALUE (dashes for underscores; lists comma-separated; --<key> /
// --no-<key> for booleans), looked up in the chosen units first, then the shared sections; or
// --config FILE (an experiment config, of which the attacks: block is read) and --set a.b=v. The
// attacker's view needs no secrets; --secrets (with --key when sealed) scores the detectors,
// reports stealthiness, and, without --victim, gives the deployed model that labels the queries.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "core/io/model_io.h"
#include "core/io/strict_number.h"
#include "core/splitter/secrets.h"
#include "experiments/attack_suite.h"
#include "experiments/commands/attack_command.h"
#include "experiments/experiment.h"
#include "experiments/metrics.h"
#include "experiments/trainer.h"

namespace nns::exp {

namespace {

struct AttackArgs {
  std::string kind, weights, dataset, data_dir, secrets, key, rule, arch, victim, donor, config;
  std::string cache_dir, device = "cpu";
  std::vector<std::string> sets;
  uint64_t seed = 0;
  int threads = 0;
  bool json = false;
};

std::string pct(double v) {
  if (std::isnan(v)) return "   n/a";
  char b[32];
  std::snprintf(b, sizeof b, "%6.2f%%", 100 * v);
  return b;
}

nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

// The options CLI11 did not know (--<key> VALUE ...), as --set overrides of the schema's keys.
std::vector<std::string> key_options(const std::vector<std::string>& extra,
                                     const std::vector<std::string>& kinds) {
  const Schema& schema = experiment_schema();
  std::vector<std::string> sets;
  for (size_t i = 0; i < extra.size(); ++i) {
    std::string arg = extra[i], value;
    if (arg.rfind("--", 0) != 0) throw UsageError("unexpected argument '" + arg + "'");
    arg = arg.substr(2);
    if (auto eq = arg.find('='); eq != std::string::npos) value = arg.substr(eq + 1), arg.resize(eq);
    bool negated = arg.rfind("no-", 0) == 0;
    auto find = [&](std::string name) -> const KeySpec* {
      for (char& c : name) c = c == '-' ? '_' : c;
      std::vector<std::string> where;
      for (const auto& k : kinds) where.push_back("attacks." + k + "." + name);
      for (auto s : {"attacks.queries.", "attacks.train.", "attacks."}) where.push_back(s + name);
      for (const auto& path : where)
        if (const KeySpec* k = schema.find(path)) return k;
      return nullptr;
    };
    const KeySpec* key = find(arg);
    if (!key && negated) key = find(arg.substr(3));
    else negated = false;
    if (!key) throw UsageError("unknown option --" + arg + " for --kind " + [&] {
      std::string k;
      for (const auto& n : kinds) k += (k.empty() ? "" : ",") + n;
      return k;
    }() + " (see nnsplitter attack --help and docs/config-reference.md)");
    if (key->type == ValueType::Bool && value.empty()) {
      value = negated ? "false" : "true";
    } else if (value.empty()) {
      if (i + 1 >= extra.size()) throw UsageError("--" + arg + " needs a value");
      value = extra[++i];
    }
    const bool list = key->type == ValueType::StringList || key->type == ValueType::FloatList ||
                      key->type == ValueType::IntList ||
                      (key->type == ValueType::FloatPairOrAuto && value.find(',') != std::string::npos);
    sets.push_back(key->path + "=" + (list && value.front() != '[' ? "[" + value + "]" : value));
  }
  return sets;
}

// A group of the result file as JSON: datasets as numbers or strings, attributes as "@name".
nlohmann::json group_json(const h5::File& f, const std::string& path) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& a : f.attr_names(path)) {
    try {
      j["@" + a] = f.attr_double(path, a);
    } catch (const std::exception&) {
      j["@" + a] = f.attr_string(path, a);
    }
  }
  for (const auto& name : f.list(path)) {
    const std::string p = path + "/" + name;
    if (f.is_group(p)) {
      j[name] = group_json(f, p);
      continue;
    }
    nlohmann::json v = nlohmann::json::array();
    try {
      for (double x : f.read_doubles(p)) v.push_back(number(x));
    } catch (const std::exception&) {
      v = f.read_strings(p);
    }
    j[name] = f.shape(p).empty() && v.size() == 1 ? v[0] : v;
  }
  return j;
}

// Strict (core/io/strict_number.h): secrets metadata such as clamp_lo = "0.1junk" is no number.
bool parse_double(const std::string& s, double& out) {
  const auto v = io::parse_strict_double(s);
  if (v) out = *v;
  return v.has_value();
}

// Stealth metrics of the obfuscated model against its restored original; the clamp bounds from
// the secrets' metadata, else the original's eligible range.
nlohmann::json stealth_of(models::Model& obf, const std::vector<std::string>& layers,
                          const splitter::Secrets& secrets, const std::string& secrets_file) {
  auto original = models::clone_model(obf);
  splitter::apply_secrets(*original, secrets);
  double lo = 0, hi = 0;
  const auto& m = secrets.metadata;
  // Given in the metadata (a number, else an error naming the file), or the default.
  for (const char* key : {"clamp_lo", "clamp_hi"}) {
    auto it = m.find(key);
    double unused = 0;
    if (it != m.end() && !parse_double(it->second, unused))
      throw std::runtime_error(secrets_file + ": metadata " + key + " = '" + it->second +
                               "' is not a finite number");
  }
  if (!(m.count("clamp_lo") && m.count("clamp_hi") && parse_double(m.at("clamp_lo"), lo) &&
        parse_double(m.at("clamp_hi"), hi))) {
    lo = INFINITY;
    hi = -INFINITY;
    for (auto& e : original->state())
      if (std::find(layers.begin(), layers.end(), e.key) != layers.end())
        for (float x : e.tensor->to_vector()) lo = std::min(lo, double(x)), hi = std::max(hi, double(x));
  }
  auto st = stealth_metrics(*original, obf, layers, lo, hi);
  return {{"clamp_lo", lo},
          {"clamp_hi", hi},
          {"obfuscated_total", st.obfuscated_total},
          {"obfuscated_per_layer", st.obfuscated_per_layer},
          {"at_bounds_fraction", st.at_bounds_fraction},
          {"at_bounds_per_layer", st.at_bounds_per_layer},
          {"ks_distance", st.ks_distance},
          {"ks_per_layer", st.ks_per_layer}};
}

void print_lines(const AttackSuite& suite) {
  std::printf("%-34s %-58s %8s %9s\n", "column", "attack", "queries", "accuracy");
  for (const auto& l : suite.lines())
    std::printf("%-34s %-58s %8s %9s\n", l.column.c_str(), l.label.c_str(),
                l.queries < 0 ? "-" : std::to_string(l.queries).c_str(), pct(l.value).c_str());
  const Headline h = suite.headline();
  for (size_t i = 0; i < h.budgets.size(); ++i)
    if (!std::isnan(h.best_attack[i]) || !std::isnan(h.floor[i]))
      std::printf("headline at %lld queries: best attack %s (%s), floor %s (%s)\n",
                  (long long)h.budgets[i], pct(h.best_attack[i]).c_str(),
                  h.best_attack_column[i].c_str(), pct(h.floor[i]).c_str(),
                  h.floor_column[i].c_str());
}

// The command's own options; every unit key is an option too (key_options).
CLI::App* add_attack_options(CLI::App& root, AttackArgs& a) {
  std::string kinds;
  for (const auto& n : attack_names()) kinds += (kinds.empty() ? "" : ", ") + n;
  CLI::App* sub = root.add_subcommand(
      "attack", "Attack an obfuscated model with the attack units (" + kinds +
                    "); each unit's key is an option: --<key> VALUE (docs/attacks.md)");
  sub->allow_extras();
  sub->add_option("--kind", a.kind, "attacks to run, comma-separated: " + kinds)->required();
  sub->add_option("--weights", a.weights, "Obfuscated weights (.safetensors)")->required();
  sub->add_option("--dataset", a.dataset, "Dataset the model was trained on")->required();
  sub->add_option("--data-dir", a.data_dir, "Folder holding the dataset files");
  add_arch_option(sub, a.arch);
  sub->add_option("--secrets", a.secrets,
                  "Secrets of these weights: to score detectors, report stealthiness and (without "
                  "--victim) restore the deployed model that labels the queries");
  sub->add_option("--key", a.key, "Key file when the secrets are sealed");
  sub->add_option("--victim", a.victim, "The deployed (unobfuscated) model that labels the queries");
  sub->add_option("--donor", a.donor, "A public model of the architecture (attacks.donor)");
  sub->add_option("--rule", a.rule,
                  "Eligible layers: spatial or all (default: the secrets' rule, else spatial)");
  sub->add_option("--config", a.config, "An experiment config whose attacks: block is used");
  sub->add_option("--set", a.sets, "Override a key, e.g. --set attacks.queries.budgets=[300]");
  sub->add_option("--cache-dir", a.cache_dir, "Where floors are cached (default: no cache)");
  sub->add_option("--seed", a.seed, "Seed (query split, shuffling, scratch init)")->capture_default_str();
  sub->add_option("--device", a.device, "cpu, cuda or auto")->capture_default_str();
  sub->add_option("--threads", a.threads, "CPU threads (default: the CPUs this process may use)");
  sub->add_flag("--json", a.json, "Print a JSON result on stdout");
  std::string footer = "\nOptions of the units (attacks.<kind>.<key>; docs/config-reference.md):\n";
  for (const auto& make : attack_table()) {
    auto u = make();
    footer += "  " + u->name() + ":";
    for (const auto& k : u->keys()) footer += " --" + k.path;
    footer += "\n";
  }
  footer += "  shared: --budgets --source --labels --eval_size (attacks.queries), --lrs --holdout "
            "--min_epochs --min_steps --batch --momentum --weight_decay (attacks.train)\n"
            "  (dashes or underscores; lists comma-separated; --no-<key> for a false boolean)";
  sub->footer(footer);
  return sub;
}

}  // namespace

Command add_attack_command(CLI::App& root) {
  auto a = std::make_shared<AttackArgs>();
  CLI::App* sub = add_attack_options(root, *a);
  Command c;
  c.app = sub;
  c.run = [a, sub]() -> int {
    // ---- the configuration: --kind, the key options, --config, --set
    std::vector<std::string> chosen;
    for (size_t s = 0, e; s <= a->kind.size(); s = e + 1)
      if (e = std::min(a->kind.find(',', s), a->kind.size()); e > s) chosen.push_back(a->kind.substr(s, e - s));
    for (const auto& k : chosen)
      if (!make_attack(k)) throw UsageError("unknown --kind '" + k + "' (" + [] {
        std::string n;
        for (const auto& x : attack_names()) n += (n.empty() ? "" : ", ") + x;
        return n;
      }() + ")");
    std::vector<std::string> sets = a->sets;
    for (auto& s : key_options(sub->remaining(), chosen)) sets.push_back(std::move(s));
    std::string kind_list = "attacks.kinds=[";
    for (size_t i = 0; i < chosen.size(); ++i) kind_list += (i ? "," : "") + chosen[i];
    sets.push_back(kind_list + "]");
    sets.push_back("seed=" + std::to_string(a->seed));
    if (!a->donor.empty()) sets.push_back("attacks.donor=" + a->donor);
    if (!a->key.empty() && a->secrets.empty()) throw UsageError("--key needs --secrets");
    Config cfg = Config::load(experiment_schema(), a->config, sets);
    AttackSuite suite = AttackSuite::parse(cfg);
    set_threads(a->threads);
    Device dev = require_device(a->device);
    auto info = require_dataset_info(a->dataset);
    if (!a->rule.empty() && a->rule != "spatial" && a->rule != "all")
      throw UsageError("--rule must be spatial or all (got '" + a->rule + "')");
    if (suite.needs_victim() && a->victim.empty() && a->secrets.empty())
      throw UsageError("queries labelled by the victim need the deployed model: --victim or --secrets");

    // ---- the models and the data
    std::map<std::string, std::string> meta;
    auto model = load_weights(a->weights, a->arch, a->dataset, &meta);
    const int pad_to = require_model_fits(model->spec(), a->weights, info, a->dataset);
    model->to(dev);
    auto same_arch = [&](const std::string& path, const char* what) {
      auto m = load_weights(path, a->arch, a->dataset);
      const auto &d = m->spec(), &s = model->spec();
      if (d.arch != s.arch || d.in_channels != s.in_channels || d.num_classes != s.num_classes ||
          d.input_size != s.input_size || d.width_mult != s.width_mult)
        throw UsageError(std::string(what) + " " + path + " is a " + d.arch +
                         ", not the architecture of the attacked weights");
      m->to(dev);
      return m;
    };
    std::unique_ptr<splitter::Secrets> secrets;
    if (!a->secrets.empty())
      secrets = std::make_unique<splitter::Secrets>(
          splitter::read_secrets_for_model(a->secrets, a->key, *model, a->weights, meta));
    std::string rule = a->rule;
    if (rule.empty() && secrets && secrets->metadata.count("rule")) rule = secrets->metadata.at("rule");
    if (rule.empty()) rule = "spatial";
    if (rule != "spatial" && rule != "all")
      throw std::runtime_error(a->secrets + ": unknown rule '" + rule + "' in the metadata");
    std::unique_ptr<models::Model> victim, donor;
    if (!a->victim.empty()) {
      victim = same_arch(a->victim, "--victim");
    } else if (secrets) {
      victim = models::clone_model(*model);
      splitter::apply_secrets(*victim, *secrets);
    }
    auto splits = data::load_dataset(a->dataset, a->data_dir);

    AttackContext ctx;
    ctx.obfuscated = model.get();
    ctx.secrets = secrets.get();
    ctx.splits = &splits;
    ctx.norm = data::normalization_for(a->dataset);
    ctx.pad_to = pad_to;
    ctx.rule = rule;
    ctx.layers = models::eligible_layers(*model, rule);
    if (ctx.layers.empty()) throw std::runtime_error(model->spec().arch + " has no eligible layers");
    ctx.seed = a->seed;
    ctx.progress = !a->json;
    ctx.cache_dir = a->cache_dir;
    ctx.donor = [&]() -> models::Model* {
      if (!donor && !suite.donor_path().empty()) donor = same_arch(suite.donor_path(), "--donor");
      return donor.get();
    };

    // ---- stealthiness, when the secrets are known; then the attacks
    nlohmann::json j = {{"kind", a->kind}, {"weights", a->weights}, {"dataset", a->dataset},
                        {"arch", model->spec().arch}, {"rule", rule}, {"layers", ctx.layers}};
    if (secrets) {
      auto st = stealth_of(*model, ctx.layers, *secrets, a->secrets);
      j["stealth"] = st;
      if (!a->json)
        std::printf("stealth: %lld obfuscated weights, %.1f%% at the clamp bounds, KS distance %.3g\n",
                    st["obfuscated_total"].get<long long>(), 100 * st["at_bounds_fraction"].get<double>(),
                    st["ks_distance"].get<double>());
    }
    suite.run(ctx, victim.get());

    auto f = h5::File::create_in_memory("attack");
    suite.write(f);
    j["obfuscated_accuracy"] = f.read_double("attacks/eval/obfuscated");
    j["attacks"] = group_json(f, "attacks");
    if (a->json) {
      print_json(j);
    } else {
      std::printf("attack %s on %s (%s, rule %s): obfuscated %s, victim %s on %lld evaluation "
                  "images\n",
                  a->kind.c_str(), model->spec().arch.c_str(), a->dataset.c_str(), rule.c_str(),
                  pct(f.read_double("attacks/eval/obfuscated")).c_str(),
                  pct(f.read_double("attacks/eval/victim")).c_str(),
                  (long long)f.read_double("attacks/eval/samples"));
      print_lines(suite);
    }
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
