#include "experiments/trainer.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/io/safetensors.h"
#include "core/io/json_bounded.h"
#include "core/io/strict_number.h"
#include "core/optim/optimizer.h"
#include "experiments/progress.h"
#include "kernels/ops.h"

namespace nns::exp {

namespace {

// A training checkpoint: model state, optimizer buffers, and where we are.
// The records of the finished epochs travel in the checkpoint, so that a resumed training
// reports its whole history (a resumed `run` writes the same victim curves as an uninterrupted
// one).
nlohmann::json history_json(const std::vector<EpochRecord>& epochs) {
  nlohmann::json h = nlohmann::json::array();
  for (const auto& e : epochs)
    h.push_back({e.epoch, e.train_loss, e.train_accuracy, e.test_accuracy, e.seconds,
                 e.images_per_second, e.lr});
  return h;
}

std::vector<EpochRecord> history_from_json(const std::string& text, const std::string& path) {
  std::vector<EpochRecord> out;
  try {
    for (const auto& r : io::parse_json_bounded(text, path, "checkpoint metadata 'history'"))
      out.push_back({r.at(0).get<int>(), r.at(1).get<double>(), r.at(2).get<double>(),
                     r.at(3).get<double>(), r.at(4).get<double>(), r.at(5).get<double>(),
                     r.at(6).get<double>()});
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": checkpoint metadata 'history' is malformed: " + e.what());
  }
  return out;
}

void save_checkpoint(const std::string& path, models::Model& model, optim::Optimizer& opt,
                     const std::vector<EpochRecord>& history, const TrainOptions& o) {
  const int epochs_done = history.empty() ? 0 : history.back().epoch;
  std::vector<std::pair<std::string, const Tensor*>> tensors;
  std::vector<Tensor> host;
  host.reserve(model.state().size() + opt.state().size());
  auto add = [&](const std::string& key, const Tensor* t) {
    host.push_back(t->to(Device::CPU));
    tensors.emplace_back(key, &host.back());
  };
  for (auto& e : model.state()) add("model." + e.key, e.tensor);
  for (auto& [k, t] : opt.state()) add("optim." + k, t);
  std::map<std::string, std::string> meta = {
      {"format", "nnsplitter-train-checkpoint-1"},
      {"epochs_done", std::to_string(epochs_done)},
      {"optimizer_steps", std::to_string(opt.steps())},
      {"arch", model.spec().arch},
      {"seed", std::to_string(o.seed)},
      {"epochs", std::to_string(o.epochs)},
      {"batch", std::to_string(o.batch)},
      {"history", history_json(history).dump()}};
  io::write_safetensors(path, tensors, meta);
}

// Returns the number of finished epochs; their records go to `history` (none in checkpoints
// written before the history was kept).
int load_checkpoint(const std::string& path, models::Model& model, optim::Optimizer& opt,
                    const TrainOptions& o, std::vector<EpochRecord>& history) {
  auto f = io::read_safetensors(path);
  auto get = [&](const std::string& k) -> std::string {
    auto it = f.metadata.find(k);
    if (it == f.metadata.end())
      throw std::runtime_error(path + ": not a training checkpoint (metadata lacks '" + k + "')");
    return it->second;
  };
  if (get("format") != "nnsplitter-train-checkpoint-1")
    throw std::runtime_error(path + ": unknown checkpoint format '" + get("format") + "'");
  if (get("arch") != model.spec().arch || get("seed") != std::to_string(o.seed) ||
      get("batch") != std::to_string(o.batch) || get("epochs") != std::to_string(o.epochs))
    throw std::runtime_error(path + ": checkpoint was made with other settings (arch " +
                             get("arch") + ", seed " + get("seed") + ", batch " + get("batch") +
                             ", epochs " + get("epochs") +
                             "); delete it or rerun with the same settings");
  auto restore = [&](const std::string& key, Tensor* t) {
    const Tensor* src = f.find(key);
    if (!src || src->shape() != t->shape())
      throw std::runtime_error(path + ": checkpoint entry '" + key + "' missing or wrong shape");
    t->copy_from(*src);
  };
  for (auto& e : model.state()) restore("model." + e.key, e.tensor);
  for (auto& [k, t] : opt.state()) restore("optim." + k, t);
  // Strict numbers (core/io/strict_number.h): "3junk" is not 3, and a bare std::stoi error
  // would not name the file.
  auto count = [&](const std::string& k, int64_t hi) {
    auto v = io::parse_strict_int(get(k), 0, hi);
    if (!v)
      throw std::runtime_error(path + ": checkpoint metadata " + k + " = '" + get(k) +
                               "' is not an integer in [0, " + std::to_string(hi) + "]");
    return *v;
  };
  opt.set_steps(count("optimizer_steps", std::numeric_limits<int64_t>::max()));
  const int epochs_done = int(count("epochs_done", o.epochs));
  if (f.metadata.count("history")) history = history_from_json(f.metadata.at("history"), path);
  return epochs_done;
}

}  // namespace

EvalResult evaluate(models::Model& model, const data::Dataset& d, const data::Normalization& norm,
                    int batch, int pad_to, bool keep_predictions, bool progress) {
  if (d.size() == 0) throw std::runtime_error("evaluate: dataset '" + d.name + "' is empty");
  model.set_training(false);
  models::NoGrad no_grad(model);  // the engine's inference plan: BN folded, nothing kept
  model.weights_changed();        // which packs the weights once per evaluation
  data::BatchOptions bo;
  bo.pad_to = pad_to;
  data::Loader loader(d, norm, batch, false, 0, bo);
  ops::Context ctx{model.device(), nullptr};
  EvalResult r;
  int k = model.spec().num_classes;
  r.class_correct.assign(k, 0);
  r.class_total.assign(k, 0);
  Tensor x(Shape{1}, DType::F32, model.device()), y(Shape{1}, DType::I32, model.device());
  Tensor probs(Shape{1}, DType::F32, model.device()), pred(Shape{1}, DType::I32, model.device());
  Progress bar("eval", loader.num_batches(), progress);
  int64_t b = 0;
  double loss_sum = 0;
  while (loader.next(x, y)) {
    const Tensor& logits = model.forward(x);
    int n = int(x.dim(0));
    probs.resize({n, k});
    pred.resize({n});
    float loss = 0;
    ops::softmax_cross_entropy_forward(ctx, n, k, logits.f32(), y.i32(), probs.f32(), &loss);
    loss_sum += double(loss) * n;
    r.correct += ops::argmax_accuracy(ctx, n, k, logits.f32(), y.i32(), pred.i32());
    r.total += n;
    Tensor ph = pred.to(Device::CPU), yh = y.to(Device::CPU);
    for (int i = 0; i < n; ++i) {
      int lab = yh.i32()[i];
      r.class_total[lab]++;
      if (ph.i32()[i] == lab) r.class_correct[lab]++;
      if (keep_predictions) r.predictions.push_back(ph.i32()[i]);
    }
    bar.update(++b, double(r.total), "");
  }
  r.loss = loss_sum / double(r.total);
  return r;
}

TrainResult train_model(models::Model& model, const data::Dataset& train,
                        const data::Dataset* test, const data::Normalization& norm,
                        const TrainOptions& o) {
  if (o.epochs < 1) throw std::invalid_argument("--epochs must be at least 1");
  if (o.batch < 1) throw std::invalid_argument("--batch must be at least 1");
  if (!(o.lr > 0)) throw std::invalid_argument("--lr must be positive");
  if (train.size() == 0) throw std::runtime_error("training set '" + train.name + "' is empty");
  data::BatchOptions bo;
  bo.pad_to = o.pad_to;
  bo.random_crop = o.augment;
  bo.hflip = o.augment;
  data::Loader loader(train, norm, o.batch, true, o.seed, bo, /*drop_last=*/false);
  auto params = model.parameters();
  if (o.trainable)
    std::erase_if(params, [&](const auto& p) { return !o.trainable(p.first); });
  auto opt = optim::make_optimizer(o.optimizer, params, o.lr, o.weight_decay, o.momentum,
                                   o.nesterov);
  optim::Schedule sched;
  sched.kind = o.schedule;
  sched.total_steps = int64_t(o.epochs) * loader.num_batches();
  sched.step_size = int64_t(o.step_size_epochs > 0 ? o.step_size_epochs : std::max(1, o.epochs / 3)) *
                    loader.num_batches();
  sched.gamma = o.step_gamma;
  sched.lr_at(o.lr, 0);  // validates the schedule name before any work

  TrainResult result;
  int start_epoch = 0;
  if (!o.checkpoint.empty() && std::filesystem::exists(o.checkpoint)) {
    start_epoch = load_checkpoint(o.checkpoint, model, *opt, o, result.epochs);
    result.resumed_from_epoch = start_epoch;
    std::fprintf(stderr, "resuming from %s after epoch %d\n", o.checkpoint.c_str(), start_epoch);
  }

  ops::Context ctx{model.device(), nullptr};
  const int k = model.spec().num_classes;
  Tensor x(Shape{1}, DType::F32, model.device()), y(Shape{1}, DType::I32, model.device());
  Tensor probs(Shape{1}, DType::F32, model.device()), dlogits(Shape{1}, DType::F32, model.device());
  Tensor pred(Shape{1}, DType::I32, model.device());
  Progress total_clock("train", 1, false);

  for (int epoch = start_epoch; epoch < o.epochs; ++epoch) {
    model.set_training(true);
    loader.start_epoch(epoch);
    char label[64];
    std::snprintf(label, sizeof label, "epoch %d/%d", epoch + 1, o.epochs);
    Progress bar(label, loader.num_batches(), o.progress);
    double loss_sum = 0;
    int64_t correct = 0, seen = 0, b = 0;
    while (loader.next(x, y)) {
      if (o.stop_flag && o.stop_flag->load()) {
        result.interrupted = true;
        bar.finish("interrupted");
        result.seconds += total_clock.elapsed_seconds();
        return result;  // the checkpoint of the last finished epoch stays valid
      }
      int64_t step = int64_t(epoch) * loader.num_batches() + b;
      opt->set_lr(sched.lr_at(o.lr, step));
      int n = int(x.dim(0));
      const Tensor& logits = model.forward(x);
      probs.resize({n, k});
      dlogits.resize({n, k});
      pred.resize({n});
      float loss = 0;
      ops::softmax_cross_entropy_forward(ctx, n, k, logits.f32(), y.i32(), probs.f32(), &loss);
      if (!std::isfinite(loss))
        throw std::runtime_error("training diverged: loss is " + std::to_string(loss) +
                                 " at epoch " + std::to_string(epoch + 1) + ", batch " +
                                 std::to_string(b + 1) + " (try a lower --lr)");
      correct += ops::argmax_accuracy(ctx, n, k, logits.f32(), y.i32(), pred.i32());
      ops::softmax_cross_entropy_backward(ctx, n, k, probs.f32(), y.i32(), 1.0f, dlogits.f32());
      model.backward(dlogits);
      opt->step();
      loss_sum += double(loss) * n;
      seen += n;
      ++b;
      char stats[96];
      std::snprintf(stats, sizeof stats, "loss %.4f acc %.2f%%", loss_sum / seen,
                    100.0 * correct / seen);
      bar.update(b, double(seen), stats);
    }
    EpochRecord rec{};
    rec.epoch = epoch + 1;
    rec.train_loss = loss_sum / double(seen);
    rec.train_accuracy = double(correct) / double(seen);
    rec.seconds = bar.elapsed_seconds();
    rec.images_per_second = seen / std::max(1e-9, rec.seconds);
    rec.lr = opt->lr();
    rec.test_accuracy = -1;
    if (test) rec.test_accuracy = evaluate(model, *test, norm, 256, o.pad_to).accuracy();
    char summary[160];
    if (test)
      std::snprintf(summary, sizeof summary, "loss %.4f train %.2f%% test %.2f%% %.0f img/s",
                    rec.train_loss, 100 * rec.train_accuracy, 100 * rec.test_accuracy,
                    rec.images_per_second);
    else
      std::snprintf(summary, sizeof summary, "loss %.4f train %.2f%% %.0f img/s", rec.train_loss,
                    100 * rec.train_accuracy, rec.images_per_second);
    bar.finish(summary);
    result.epochs.push_back(rec);
    if (!o.checkpoint.empty()) save_checkpoint(o.checkpoint, model, *opt, result.epochs, o);
    if (o.on_epoch_end) o.on_epoch_end(epoch + 1);
  }
  result.seconds = total_clock.elapsed_seconds();
  return result;
}

}  // namespace nns::exp
