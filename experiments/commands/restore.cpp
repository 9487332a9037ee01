// `nnsplitter restore --weights OBF --secrets SEC [--key KEY] --out FILE [--json]`: writes the
// original weights back into an obfuscated weights file, bit for bit.
//
// Everything is checked before anything is written: the secrets must belong to this model
// (fingerprint; for a sealed file this is checked before decrypting), the key must open them
// (wrong key or tampered file: "authentication failed"), the indexes must be valid, and the
// restored model must have the original fingerprint the secrets record, an unsealed file is
// refused with --key or when the weights' metadata says the secrets were sealed. Any failure:
// exit 1 and no output file (the write itself is atomic). --out naming one of the inputs is a
// usage error (exit 2). --arch/--dataset read obfuscated weights without nnsplitter metadata.
// An ONNX model comes back as ONNX (the same graph, the original initializers bit for bit).
#include <cstdio>
#include <filesystem>
#include <memory>

#include "core/io/model_io.h"
#include "core/splitter/secrets.h"
#include "experiments/commands/secrets_commands.h"

namespace nns::exp {

namespace {

// Metadata of the obfuscated file that must not survive into the restored one: what save_model
// writes itself, anything describing the obfuscation, and the obfuscated model's accuracy.
bool drop_on_restore(const std::string& k) {
  static const char* own[] = {"format", "arch", "in_channels", "input_size", "num_classes",
                              "width_mult", "obfuscated", "restored_from", "test_accuracy",
                              "test_correct", "test_total"};
  for (const char* o : own)
    if (k == o) return true;
  return k.rfind("obfuscat", 0) == 0 || k.rfind("nnsplitter.", 0) == 0 ||
         k.rfind("protect", 0) == 0;
}

}  // namespace

Command add_restore_command(CLI::App& root) {
  struct Args {
    std::string weights, secrets, key, out, arch, dataset;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand(
      "restore", "Restore the original weights of an obfuscated model from its secrets (exact)");
  sub->add_option("--weights", a->weights, "Obfuscated weights (.safetensors or .onnx)")->required();
  sub->add_option("--secrets", a->secrets, "Secrets file of these weights")->required();
  sub->add_option("--key", a->key, "Key file (32 bytes) when the secrets are sealed");
  sub->add_option("--out", a->out, "Restored weights to write (.safetensors; an ONNX model is "
                                   "written as ONNX unless FILE ends in .safetensors)")->required();
  add_arch_option(sub, a->arch);
  sub->add_option("--dataset", a->dataset, "With --arch: the dataset the model takes");
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    if (a->out.empty()) throw UsageError("--out must not be empty");
    refuse_overwriting_inputs(
        {{"--out", a->out}},
        {{"--weights", a->weights}, {"--secrets", a->secrets}, {"--key", a->key}});
    std::map<std::string, std::string> meta;
    auto model = load_weights(a->weights, a->arch, a->dataset, &meta);
    std::string fp = splitter::fingerprint(*model);
    splitter::Secrets s =
        splitter::read_secrets_for_model(a->secrets, a->key, *model, a->weights, meta);
    int64_t n = splitter::apply_secrets(*model, s);
    std::string restored_fp = splitter::fingerprint(*model);
    std::map<std::string, std::string> extra;
    for (const auto& [k, v] : meta)
      if (!drop_on_restore(k)) extra[k] = v;
    extra["restored_from"] = fp;
    io::save_model(*model, a->out, extra);
    if (a->json) {
      nlohmann::json j;
      j["restored_weights"] = n;
      j["fingerprint"] = restored_fp;
      j["obfuscated_fingerprint"] = fp;
      j["tensors"] = s.tensors.size();
      j["out"] = a->out;
      print_json(j);
    } else {
      std::printf("restored %lld weight(s) in %zu tensor(s) of %s -> %s\n", (long long)n,
                  s.tensors.size(), a->weights.c_str(), a->out.c_str());
      std::printf("fingerprint %s (obfuscated model %s)\n", restored_fp.c_str(), fp.c_str());
    }
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
