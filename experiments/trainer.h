// Training and evaluation loops over the engine (used by `train`, `eval`, `bench` and later by
// the whole pipeline).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/models/zoo.h"
#include "datasets/datasets.h"

namespace nns::exp {

struct TrainOptions {
  int epochs = 4;
  int batch = 128;
  float lr = 0.05f;
  std::string optimizer = "sgd";  // sgd | adam
  std::string schedule = "cosine";  // cosine | step | constant
  float momentum = 0.9f;
  float weight_decay = 5e-4f;
  bool nesterov = true;
  int step_size_epochs = 0;  // for schedule=step (0 = epochs/3)
  float step_gamma = 0.1f;
  uint64_t seed = 0;
  bool augment = false;  // random crop (padding 4) + horizontal flip (CIFAR)
  int pad_to = 0;        // zero-pad images to this size (VGG on 28x28 data)
  bool progress = true;
  std::string checkpoint;  // file written after every epoch ("" = none); resumed when present
  // Set from a signal handler: training stops after the current batch with a checkpoint.
  const std::atomic<bool>* stop_flag = nullptr;
  // Called after every finished epoch (after its checkpoint is written), 1-based.
  std::function<void(int)> on_epoch_end;
  // The parameters the optimizer updates, by key (null = all); the others keep their values.
  std::function<bool(const std::string&)> trainable;
};

struct EpochRecord {
  int epoch;  // 1-based
  double train_loss, train_accuracy, test_accuracy;  // test_accuracy < 0 when not evaluated
  double seconds, images_per_second, lr;
};

struct TrainResult {
  // Every finished epoch, those before a resume included (their records come from the
  // checkpoint).
  std::vector<EpochRecord> epochs;
  double seconds = 0;
  bool interrupted = false;
  int resumed_from_epoch = 0;
};

struct EvalResult {
  int64_t correct = 0, total = 0;
  double loss = 0;  // mean cross-entropy
  std::vector<int64_t> class_correct, class_total;
  std::vector<int32_t> predictions;  // when requested
  double accuracy() const { return total ? double(correct) / double(total) : 0.0; }
};

TrainResult train_model(models::Model& model, const data::Dataset& train,
                        const data::Dataset* test, const data::Normalization& norm,
                        const TrainOptions& opt);

EvalResult evaluate(models::Model& model, const data::Dataset& d, const data::Normalization& norm,
                    int batch = 256, int pad_to = 0, bool keep_predictions = false,
                    bool progress = false);

}  // namespace nns::exp
