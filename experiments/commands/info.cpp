// `nnsplitter info`: a model's layers, parameter shapes and counts, and which layers the
// obfuscation may touch under the rules `spatial` and `all`.
#include <cstdio>
#include <set>

#include "core/io/model_io.h"
#include "experiments/cli.h"

namespace nns::exp {

Command add_info_command(CLI::App& root) {
  struct Args {
    std::string model, dataset, weights;
    float width_mult = 1.0f;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand("info", "Describe a model: layers, shapes, parameter "
                                              "counts, eligible layers");
  auto* m = sub->add_option("--model", a->model, "Architecture");
  auto* d = sub->add_option("--dataset", a->dataset, "Dataset (sets channels, size, classes)");
  sub->add_option("--weights", a->weights,
                  "A weights file (instead of --model; with --model and --dataset: a plain "
                  "state_dict of that architecture)");
  m->needs(d);
  sub->add_option("--width-mult", a->width_mult, "Channel multiplier")->capture_default_str();
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    std::unique_ptr<models::Model> model;
    if (!a->weights.empty()) {
      model = load_weights(a->weights, a->model, a->dataset);
    } else {
      if (a->model.empty()) throw UsageError("give --model and --dataset, or --weights");
      model = models::build_model(spec_for(a->model, require_dataset_info(a->dataset),
                                           a->width_mult));
    }
    auto spatial = models::eligible_layers(*model, "spatial");
    auto all = models::eligible_layers(*model, "all");
    std::set<std::string> sp(spatial.begin(), spatial.end()), al(all.begin(), all.end());
    int64_t n_params = model->num_parameters(), n_sp = 0, n_all = 0, n_buffers = 0;
    nlohmann::json tensors = nlohmann::json::array();
    for (auto& e : model->state()) {
      if (!e.param) {
        n_buffers += e.tensor->numel();
      } else {
        if (sp.count(e.key)) n_sp += e.tensor->numel();
        if (al.count(e.key)) n_all += e.tensor->numel();
      }
      tensors.push_back({{"key", e.key}, {"shape", e.tensor->shape()},
                         {"kind", e.param ? "parameter" : "buffer"},
                         {"dtype", dtype_name(e.tensor->dtype())},
                         {"numel", e.tensor->numel()},
                         {"eligible_spatial", sp.count(e.key) > 0},
                         {"eligible_all", al.count(e.key) > 0}});
    }
    const auto& s = model->spec();
    if (a->json) {
      nlohmann::json j;
      j["model"] = s.arch;
      j["input"] = {s.in_channels, s.input_size, s.input_size};
      j["num_classes"] = s.num_classes;
      j["parameters"] = n_params;
      j["buffers"] = n_buffers;
      j["eligible_layers"] = {{"spatial", spatial}, {"all", all}};
      j["eligible_weights"] = {{"spatial", n_sp}, {"all", n_all}};
      j["tensors"] = tensors;
      nlohmann::json layers = nlohmann::json::array();
      for (auto& [name, mod] : model->modules())
        if (mod->children().empty()) layers.push_back({{"name", name}, {"type", mod->describe()}});
      j["layers"] = layers;
      print_json(j);
      return kExitOk;
    }
    std::printf("%s: input [%d, %d, %d], %d classes\n\nlayers:\n", s.arch.c_str(), s.in_channels,
                s.input_size, s.input_size, s.num_classes);
    for (auto& [name, mod] : model->modules())
      if (mod->children().empty()) std::printf("  %-34s %s\n", name.c_str(), mod->describe().c_str());
    std::printf("\n%-44s %-20s %10s  %-7s %-3s\n", "state_dict key", "shape", "numel", "spatial",
                "all");
    for (auto& t : tensors)
      std::printf("%-44s %-20s %10lld  %-7s %-3s\n", t["key"].get<std::string>().c_str(),
                  shape_str(t["shape"].get<Shape>()).c_str(), (long long)t["numel"].get<int64_t>(),
                  t["eligible_spatial"].get<bool>() ? "yes" : "", t["eligible_all"].get<bool>() ? "yes" : "");
    std::printf("\nparameters: %lld (buffers: %lld)\n", (long long)n_params, (long long)n_buffers);
    std::printf("eligible (spatial): %zu layers, %lld weights\n", spatial.size(), (long long)n_sp);
    std::printf("eligible (all):     %zu layers, %lld weights\n", all.size(), (long long)n_all);
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
