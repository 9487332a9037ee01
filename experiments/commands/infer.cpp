// `nnsplitter infer --weights OBF --secrets SEC [--key KEY] --dataset D ...`: split inference
// (SPEC.md §1). Evaluates the test set three ways: the obfuscated model alone, split inference
// (the obfuscated model with the secure side's correction O_n − O_s, core/splitter/
// split_inference.h) and the exactly restored model; reports the accuracies, the agreement of
// the split-inference predictions with the restored model's, and the largest |logit difference|.
// Agreement below --min-agreement (0.999) is a failure (exit 1, after the report). Secrets that
// fail any check of restore (fingerprints, sealing, structure: core/splitter/secrets.h) are
// refused before anything is evaluated (exit 1, no report).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>

#include "core/io/model_io.h"
#include "core/splitter/secrets.h"
#include "core/splitter/split_inference.h"
#include "experiments/commands/secrets_commands.h"
#include "experiments/trainer.h"

namespace nns::exp {

namespace {

int argmax_row(const float* p, int k) {
  int best = 0;
  for (int j = 1; j < k; ++j)
    if (p[j] > p[best]) best = j;
  return best;
}

}  // namespace

Command add_infer_command(CLI::App& root) {
  struct Args {
    std::string weights, secrets, key, dataset, data_dir, arch, device = "cpu";
    int batch = 256, threads = 0;
    double min_agreement = 0.999;
    bool json = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* sub = root.add_subcommand(
      "infer", "Split inference: obfuscated model + secure-side correction (O_n - O_s), checked "
               "against the exactly restored model");
  sub->add_option("--weights", a->weights, "Obfuscated weights (.safetensors)")->required();
  sub->add_option("--secrets", a->secrets, "Secrets file of these weights")->required();
  sub->add_option("--key", a->key, "Key file (32 bytes) when the secrets are sealed");
  sub->add_option("--dataset", a->dataset, "Dataset name")->required();
  sub->add_option("--data-dir", a->data_dir, "Folder holding the dataset files");
  add_arch_option(sub, a->arch);
  sub->add_option("--batch", a->batch, "Batch size")->capture_default_str();
  sub->add_option("--device", a->device, "cpu, cuda or auto")->capture_default_str();
  sub->add_option("--threads", a->threads, "CPU threads (default: the CPUs this process may use)");
  sub->add_option("--min-agreement", a->min_agreement,
                  "Fail (exit 1) when split and restored predictions agree on fewer test images")
      ->capture_default_str();
  sub->add_flag("--json", a->json, "Print a JSON result on stdout");
  Command c;
  c.app = sub;
  c.run = [a]() -> int {
    set_threads(a->threads);
    if (a->batch < 1) throw UsageError("--batch must be at least 1");
    if (!(a->min_agreement >= 0 && a->min_agreement <= 1))
      throw UsageError("--min-agreement must be in [0, 1]");
    Device dev = require_device(a->device);
    auto info = require_dataset_info(a->dataset);
    std::map<std::string, std::string> meta;
    auto obf = load_weights(a->weights, a->arch, a->dataset, &meta);
    const auto& s = obf->spec();
    const int pad_to = require_model_fits(s, a->weights, info, a->dataset);

    // Tampered secrets are refused here (exit 1, nothing reported): a split inference with
    // them would agree perfectly with an equally wrong "restored" model.
    std::string fp = splitter::fingerprint(*obf);
    splitter::Secrets secrets =
        splitter::read_secrets_for_model(a->secrets, a->key, *obf, a->weights, meta);
    auto restored = models::clone_model(*obf);
    int64_t n_restored = splitter::apply_secrets(*restored, secrets);

    obf->to(dev);
    restored->to(dev);
    obf->set_training(false);
    restored->set_training(false);
    auto splits = data::load_dataset(a->dataset, a->data_dir);
    const data::Dataset& d = splits.test;
    auto norm = data::normalization_for(a->dataset);

    // 1. The obfuscated model alone.
    EvalResult ro = evaluate(*obf, d, norm, a->batch, pad_to, true, false);

    // 2 and 3. Split inference and the restored model, batch by batch on the same inputs.
    splitter::SplitInference split(*obf, secrets);
    split.install();
    data::BatchOptions bo;
    bo.pad_to = pad_to;
    data::Loader loader(d, norm, a->batch, false, 0, bo);
    Tensor x(Shape{1}, DType::F32, dev), y(Shape{1}, DType::I32, dev);
    int k = s.num_classes;
    int64_t total = 0, split_correct = 0, restored_correct = 0, agree = 0, obf_agree = 0;
    double max_diff = 0, max_rel = 0;
    while (loader.next(x, y)) {
      Tensor ls = obf->forward(x).to(Device::CPU);
      Tensor lr = restored->forward(x).to(Device::CPU);
      Tensor yh = y.to(Device::CPU);
      int n = int(x.dim(0));
      for (int i = 0; i < n; ++i) {
        const float* ps = ls.f32() + int64_t(i) * k;
        const float* pr = lr.f32() + int64_t(i) * k;
        float scale = 0;
        for (int j = 0; j < k; ++j) scale = std::max(scale, std::fabs(pr[j]));
        for (int j = 0; j < k; ++j) {
          double diff = std::fabs(double(ps[j]) - double(pr[j]));
          if (!(diff <= max_diff)) max_diff = diff;  // NaN propagates
          double rel = diff / std::max(1.0, double(scale));
          if (!(rel <= max_rel)) max_rel = rel;
        }
        int as = argmax_row(ps, k), ar = argmax_row(pr, k);
        int lab = yh.i32()[i];
        split_correct += as == lab;
        restored_correct += ar == lab;
        agree += as == ar;
        size_t at = size_t(total + i);
        obf_agree += at < ro.predictions.size() && ro.predictions[at] == ar;
      }
      total += n;
    }
    split.remove();
    auto ratio = [&](int64_t v) { return total ? double(v) / double(total) : 0.0; };
    double agreement = ratio(agree);
    if (a->json) {
      nlohmann::json j;
      j["weights"] = a->weights;
      j["dataset"] = a->dataset;
      j["obfuscated_accuracy"] = ro.accuracy();
      j["split_accuracy"] = ratio(split_correct);
      j["restored_accuracy"] = ratio(restored_correct);
      j["agreement"] = agreement;
      j["obfuscated_agreement"] = ratio(obf_agree);
      j["max_logit_diff"] = max_diff;
      j["max_relative_logit_diff"] = max_rel;
      j["secure_macs_per_image"] = split.secure_macs_per_image();
      j["affected_filters"] = split.affected_filters();
      j["hooked_layers"] = split.layers().size();
      j["restored_weights"] = n_restored;
      j["total"] = total;
      j["fingerprint"] = fp;
      print_json(j);
    } else {
      std::printf("%s on %s/test (%lld images), %lld secret weight(s)\n", s.arch.c_str(),
                  a->dataset.c_str(), (long long)total, (long long)n_restored);
      std::printf("  obfuscated alone   %6.2f%%\n", 100 * ro.accuracy());
      std::printf("  split inference    %6.2f%%  (O_n - O_s: %lld filter(s) in %zu layer(s), "
                  "%lld secure MACs/image)\n",
                  100 * ratio(split_correct), (long long)split.affected_filters(),
                  split.layers().size(), (long long)split.secure_macs_per_image());
      std::printf("  restored (exact)   %6.2f%%\n", 100 * ratio(restored_correct));
      std::printf("  agreement split vs restored %.3f%% (%lld/%lld), max |logit diff| %.3g\n",
                  100 * agreement, (long long)agree, (long long)total, max_diff);
    }
    if (agreement < a->min_agreement || std::isnan(max_diff))
      throw std::runtime_error("split inference agrees with the restored model on " +
                               std::to_string(100 * agreement) + "% of the test images, below " +
                               std::to_string(100 * a->min_agreement) + "%");
    return kExitOk;
  };
  return c;
}

}  // namespace nns::exp
