#include "datasets/loader.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>

#include "core/random.h"

namespace nns::data {

namespace {

constexpr uint64_t kTagOrder = 0x4F52444552ull;  // "ORDER"
constexpr uint64_t kTagAug = 0x415547ull;        // "AUG"

// Below this many output floats a batch is assembled on one thread: a 128-image batch of
// 28x28 or 32x32 single-channel images takes ~80 us serially and gains nothing from a parallel
// region; 128 CIFAR images with crop+flip (~220 us) do gain on an idle machine.
constexpr int64_t kParallelMin = int64_t(1) << 18;

// Makes t a tensor of the given dtype and shape, reusing its storage when the dtype matches.
void ensure(Tensor& t, const Shape& shape, DType dtype) {
  if (!t.defined() || t.dtype() != dtype)
    t = Tensor(shape, dtype, t.defined() ? t.device() : Device::CPU);
  else
    t.resize(shape);
}

}  // namespace

Loader::Loader(const Dataset& d, Normalization norm, int batch_size, bool shuffle, uint64_t seed,
               BatchOptions opt, bool drop_last)
    : data_(&d),
      batch_size_(batch_size),
      shuffle_(shuffle),
      seed_(seed),
      opt_(opt),
      drop_last_(drop_last) {
  d.validate();
  if (batch_size <= 0)
    throw std::invalid_argument("Loader: batch_size must be positive, got " +
                                std::to_string(batch_size));
  const size_t c = static_cast<size_t>(d.channels);
  if (norm.mean.size() != norm.std.size() || (norm.mean.size() != 1 && norm.mean.size() != c))
    throw std::invalid_argument("Loader: normalization has " + std::to_string(norm.mean.size()) +
                                " means and " + std::to_string(norm.std.size()) +
                                " stds for a dataset of " + std::to_string(c) +
                                " channels (give 1 or " + std::to_string(c) + " of each)");
  lut_.resize(c);
  for (size_t ch = 0; ch < c; ++ch) {
    const float mean = norm.mean.size() == 1 ? norm.mean[0] : norm.mean[ch];
    const float sd = norm.std.size() == 1 ? norm.std[0] : norm.std[ch];
    if (!(sd > 0.0f))
      throw std::invalid_argument("Loader: normalization std must be positive, got " +
                                  std::to_string(sd));
    // torchvision: ToTensor divides by 255 in float32, Normalize subtracts then divides.
    for (int v = 0; v < 256; ++v) lut_[ch][v] = (static_cast<float>(v) / 255.0f - mean) / sd;
  }
  out_h_ = d.height;
  out_w_ = d.width;
  if (opt.pad_to != 0) {
    if (opt.pad_to < d.height || opt.pad_to < d.width)
      throw std::invalid_argument("Loader: pad_to " + std::to_string(opt.pad_to) +
                                  " is smaller than the " + std::to_string(d.height) + "x" +
                                  std::to_string(d.width) + " images");
    out_h_ = out_w_ = opt.pad_to;
    pad_top_ = (opt.pad_to - d.height) / 2;
    pad_left_ = (opt.pad_to - d.width) / 2;
  }
  if (opt.random_crop && opt.crop_padding < 0)
    throw std::invalid_argument("Loader: crop_padding must be >= 0, got " +
                                std::to_string(opt.crop_padding));
  start_epoch(0);
}

int64_t Loader::num_samples() const {
  const int64_t n = data_->size();
  return drop_last_ ? (n / batch_size_) * batch_size_ : n;
}

int64_t Loader::num_batches() const {
  const int64_t n = data_->size();
  return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

void Loader::start_epoch(int64_t epoch) {
  epoch_ = epoch;
  const int64_t n = data_->size();
  if (shuffle_) {
    order_ = seeded_permutation(
        n, Rng::derive(Rng::derive(seed_, kTagOrder), static_cast<uint64_t>(epoch)));
  } else {
    order_.resize(static_cast<size_t>(n));
    std::iota(order_.begin(), order_.end(), int64_t(0));
  }
  pos_ = 0;
  last_begin_ = 0;
  last_size_ = 0;
}

SampleAugmentation Loader::augmentation(int64_t index) const {
  SampleAugmentation a;
  const int p = opt_.random_crop ? opt_.crop_padding : 0;
  a.dy = a.dx = p;
  if (!opt_.random_crop && !opt_.hflip) return a;
  Rng r(Rng::derive(Rng::derive(Rng::derive(seed_, kTagAug), static_cast<uint64_t>(epoch_)),
                    static_cast<uint64_t>(index)));
  if (opt_.random_crop) {
    a.dy = static_cast<int>(r.below(static_cast<uint64_t>(2 * p + 1)));
    a.dx = static_cast<int>(r.below(static_cast<uint64_t>(2 * p + 1)));
  }
  if (opt_.hflip) a.flip = (r.next_u64() >> 63) != 0;
  return a;
}

void Loader::render(int64_t index, float* out) const {
  const Dataset& d = *data_;
  const int C = d.channels, H = d.height, W = d.width;
  const uint8_t* img = d.image(index);
  const bool augment = opt_.random_crop || opt_.hflip;
  if (!augment && out_h_ == H && out_w_ == W) {  // plain: one lookup per pixel
    const int64_t hw = int64_t(H) * W;
    for (int c = 0; c < C; ++c) {
      const float* lut = lut_[c].data();
      const uint8_t* src = img + c * hw;
      float* dst = out + c * hw;
      for (int64_t k = 0; k < hw; ++k) dst[k] = lut[src[k]];
    }
    return;
  }
  const SampleAugmentation a = augmentation(index);
  const int p = opt_.random_crop ? opt_.crop_padding : 0;
  // Output (y, x) reads the raw image at (y + oy, x' + ox), x' = flipped x; outside it is 0.
  const int oy = a.dy - p - pad_top_, ox = a.dx - p - pad_left_;
  for (int c = 0; c < C; ++c) {
    const float* lut = lut_[c].data();
    const float zero = lut[0];
    const uint8_t* plane = img + int64_t(c) * H * W;
    for (int y = 0; y < out_h_; ++y) {
      float* dst = out + (int64_t(c) * out_h_ + y) * out_w_;
      const int sy = y + oy;
      if (sy < 0 || sy >= H) {
        std::fill(dst, dst + out_w_, zero);
        continue;
      }
      const uint8_t* row = plane + int64_t(sy) * W;
      // Output columns [x0, x1) read inside the image; the rest is padding.
      int x0, x1;
      if (!a.flip) {
        x0 = std::max(0, -ox);
        x1 = std::min(out_w_, W - ox);
      } else {  // sx = out_w - 1 - x + ox
        x0 = std::max(0, out_w_ - W + ox);
        x1 = std::min(out_w_, out_w_ + ox);
      }
      if (x1 <= x0) {
        std::fill(dst, dst + out_w_, zero);
        continue;
      }
      std::fill(dst, dst + x0, zero);
      std::fill(dst + x1, dst + out_w_, zero);
      if (!a.flip) {
        const uint8_t* src = row + x0 + ox;
        for (int x = x0; x < x1; ++x) dst[x] = lut[*src++];
      } else {
        const uint8_t* src = row + (out_w_ - 1 - x0 + ox);
        for (int x = x0; x < x1; ++x) dst[x] = lut[*src--];
      }
    }
  }
}

bool Loader::next(Tensor& images, Tensor& labels) {
  const int64_t remaining = data_->size() - pos_;
  if (remaining <= 0) return false;
  const int64_t b = std::min<int64_t>(batch_size_, remaining);
  if (drop_last_ && b < batch_size_) return false;

  const Shape ishape = {b, data_->channels, out_h_, out_w_};
  const Shape lshape = {b};
  const bool img_host = !images.defined() || images.device() == Device::CPU;
  const bool lab_host = !labels.defined() || labels.device() == Device::CPU;
  Tensor& ti = img_host ? images : staging_;
  Tensor& tl = lab_host ? labels : staging_labels_;
  ensure(ti, ishape, DType::F32);
  ensure(tl, lshape, DType::I32);

  float* out = ti.f32();
  int32_t* lab = tl.i32();
  const int64_t per = int64_t(data_->channels) * out_h_ * out_w_;
  const int64_t* idx = order_.data() + pos_;
  const int32_t* src_labels = data_->labels.data();
#pragma omp parallel for schedule(static) if (b * per >= kParallelMin)
  for (int64_t k = 0; k < b; ++k) {
    render(idx[k], out + k * per);
    lab[k] = src_labels[idx[k]];
  }

  if (!img_host) {
    ensure(images, ishape, DType::F32);
    images.copy_from(staging_);
  }
  if (!lab_host) {
    ensure(labels, lshape, DType::I32);
    labels.copy_from(staging_labels_);
  }
  last_begin_ = pos_;
  last_size_ = b;
  pos_ += b;
  return true;
}

}  // namespace nns::data
