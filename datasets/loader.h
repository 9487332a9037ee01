// Batches of a Dataset: a seeded order per epoch, optional padding / random crop / horizontal
// flip, normalisation to float32 exactly as torchvision's ToTensor + Normalize computes it.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "datasets/dataset.h"

namespace nns::data {

struct BatchOptions {
  // Zero-pad HxW to pad_to x pad_to (28 -> 32 for VGG), centred (the extra pixel, if the
  // difference is odd, goes bottom/right). Applied to the raw image (value 0) before
  // normalisation. 0 = no padding; must not be smaller than the image.
  int pad_to = 0;
  // CIFAR training augmentation: pad crop_padding zeros (raw value 0) on every side, then crop
  // a random window of the (padded-to) size, like torchvision RandomCrop(size, padding).
  bool random_crop = false;
  int crop_padding = 4;
  // Random horizontal flip with p = 0.5 (after the crop, like RandomHorizontalFlip).
  bool hflip = false;
};

// The random choices for one sample: the crop window's offset into the padded image (0..2p;
// p = no shift) and whether it is flipped.
struct SampleAugmentation {
  int dy = 0, dx = 0;
  bool flip = false;
};

class Loader {
 public:
  // d must outlive the loader (it is not copied). norm has one entry per channel, or one entry
  // for all channels; std must be positive. batch_size > 0.
  Loader(const Dataset& d, Normalization norm, int batch_size, bool shuffle, uint64_t seed,
         BatchOptions opt = {}, bool drop_last = false);
  Loader(Dataset&& d, Normalization, int, bool, uint64_t, BatchOptions = {}, bool = false) = delete;

  int64_t num_batches() const;
  int64_t num_samples() const;  // per epoch (excludes the dropped tail when drop_last)
  int batch_size() const { return batch_size_; }
  // Starts an epoch (the constructor starts epoch 0): order = a permutation determined by
  // (seed, epoch) when shuffling, identity otherwise. Augmentation randomness is determined by
  // (seed, epoch, sample index).
  void start_epoch(int64_t epoch);
  int64_t epoch() const { return epoch_; }

  // Fills the next batch: images F32 [B, C, H', W'] normalised as (float(u8)/255.0f - mean)/std
  // in float32, labels I32 [B]. Reuses the tensors' storage (Tensor::resize) when they are
  // already F32/I32; a tensor of another dtype or an undefined one is replaced. A tensor on a
  // GPU is filled through a host buffer. Returns false at the end of the epoch (tensors
  // untouched). The last batch may be smaller unless drop_last.
  bool next(Tensor& images, Tensor& labels);

  int output_height() const { return out_h_; }
  int output_width() const { return out_w_; }
  int channels() const { return data_->channels; }

  // The dataset indices of the epoch, in order, and of the batch last returned by next().
  const std::vector<int64_t>& order() const { return order_; }
  const int64_t* last_batch_indices() const { return order_.data() + last_begin_; }
  int64_t last_batch_size() const { return last_size_; }
  // The augmentation drawn for dataset sample `index` in the current epoch.
  SampleAugmentation augmentation(int64_t index) const;
  // Writes sample `index` (with the current epoch's augmentation) as C x H' x W' floats.
  void render(int64_t index, float* out) const;

 private:
  const Dataset* data_;
  int batch_size_;
  bool shuffle_;
  uint64_t seed_;
  BatchOptions opt_;
  bool drop_last_;
  int out_h_ = 0, out_w_ = 0;
  int pad_top_ = 0, pad_left_ = 0;
  std::vector<std::array<float, 256>> lut_;  // per channel: normalised value of each byte
  int64_t epoch_ = 0;
  std::vector<int64_t> order_;
  int64_t pos_ = 0;
  int64_t last_begin_ = 0, last_size_ = 0;
  Tensor staging_;  // host buffer when the caller's tensor lives on a GPU
  Tensor staging_labels_;
};

}  // namespace nns::data
