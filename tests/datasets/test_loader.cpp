// The batch Loader: normalisation, padding, augmentation, shuffling and batching.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "data_fixtures.h"
#include "datasets/loader.h"

namespace nns::data {
namespace {

using namespace nns::data::testing;

// The value torchvision computes: ToTensor (float32 / 255) then Normalize (float32 sub, div).
float torch_norm(uint8_t v, float mean, float sd) {
  volatile float x = static_cast<float>(v) / 255.0f;
  volatile float y = x - mean;
  return y / sd;
}

Dataset constant_dataset(int64_t n, int c, int h, int w, uint8_t value) {
  Dataset d;
  d.name = "synthetic";
  d.channels = c;
  d.height = h;
  d.width = w;
  d.num_classes = 10;
  d.images.assign(static_cast<size_t>(n * c * h * w), value);
  d.labels.assign(static_cast<size_t>(n), 0);
  return d;
}

// Every sample of an epoch, in order, as dataset indices read back from the pixels.
std::vector<int64_t> epoch_ids(Loader& l, int64_t epoch) {
  l.start_epoch(epoch);
  std::vector<int64_t> ids;
  Tensor x, y;
  while (l.next(x, y)) {
    // indexed_dataset: image k holds k & 255 and k >> 8 in its first two pixels.
    const float* p = x.f32();
    const int64_t per = x.numel() / x.dim(0);
    for (int64_t b = 0; b < x.dim(0); ++b) {
      // Normalisation 0/1: pixel value = x * 255.
      const int lo = static_cast<int>(std::lround(p[b * per] * 255.0f));
      const int hi = static_cast<int>(std::lround(p[b * per + 1] * 255.0f));
      ids.push_back(lo | (hi << 8));
      EXPECT_EQ(y.i32()[b], ids.back() % 10);
    }
  }
  return ids;
}

const Normalization kIdentity{{0.0f}, {1.0f}};

TEST(Loader, NormalisesExactlyLikeTorchvision) {
  Dataset d;
  d.name = "fashion-mnist";
  d.channels = 1;
  d.height = 16;
  d.width = 16;
  d.num_classes = 10;
  for (int v = 0; v < 256; ++v) d.images.push_back(static_cast<uint8_t>(v));
  d.labels = {7};
  const Normalization n = normalization_for("fashion-mnist");
  Loader l(d, n, 4, false, 0);
  Tensor x, y;
  ASSERT_TRUE(l.next(x, y));
  ASSERT_EQ(x.dtype(), DType::F32);
  ASSERT_EQ(x.shape(), (Shape{1, 1, 16, 16}));
  ASSERT_EQ(y.dtype(), DType::I32);
  ASSERT_EQ(y.shape(), (Shape{1}));
  EXPECT_EQ(y.i32()[0], 7);
  for (int v = 0; v < 256; ++v) EXPECT_EQ(x.f32()[v], torch_norm(v, 0.2860f, 0.3530f)) << v;
  // Spot values: 0 -> -0.2860/0.3530, 255 -> (1-0.2860)/0.3530.
  EXPECT_NEAR(x.f32()[0], -0.81019830f, 1e-6);
  EXPECT_NEAR(x.f32()[255], 2.02266289f, 1e-6);
  EXPECT_FALSE(l.next(x, y));
}

TEST(Loader, PerChannelNormalisation) {
  Dataset d = constant_dataset(2, 3, 4, 4, 200);
  const Normalization n = normalization_for("cifar10");
  Loader l(d, n, 2, false, 0);
  Tensor x, y;
  ASSERT_TRUE(l.next(x, y));
  ASSERT_EQ(x.shape(), (Shape{2, 3, 4, 4}));
  for (int b = 0; b < 2; ++b)
    for (int c = 0; c < 3; ++c)
      for (int k = 0; k < 16; ++k)
        EXPECT_EQ(x.f32()[(b * 3 + c) * 16 + k], torch_norm(200, n.mean[c], n.std[c]));
  // One value for all channels is broadcast; a wrong count is refused.
  EXPECT_NO_THROW(Loader(d, normalization_for("synthetic"), 2, false, 0));
  EXPECT_THROW(Loader(d, Normalization{{0.1f, 0.2f}, {1.0f, 1.0f}}, 2, false, 0),
               std::invalid_argument);
  EXPECT_THROW(Loader(d, Normalization{{0.1f}, {0.0f}}, 2, false, 0), std::invalid_argument);
  EXPECT_THROW(Loader(d, kIdentity, 0, false, 0), std::invalid_argument);
}

TEST(Loader, PadTo32PutsRawZerosAtTheBorders) {
  Splits s = make_synthetic(3, 0, 1, 28, 3, 5);
  for (auto& v : s.train.images) v = std::max<uint8_t>(v, 1);  // no zero pixel inside
  const Normalization n = normalization_for("fashion-mnist");
  BatchOptions opt;
  opt.pad_to = 32;
  Loader l(s.train, n, 3, false, 0, opt);
  EXPECT_EQ(l.output_height(), 32);
  EXPECT_EQ(l.output_width(), 32);
  Tensor x, y;
  ASSERT_TRUE(l.next(x, y));
  ASSERT_EQ(x.shape(), (Shape{3, 1, 32, 32}));
  const float border = (0.0f - 0.2860f) / 0.3530f;
  for (int b = 0; b < 3; ++b)
    for (int yy = 0; yy < 32; ++yy)
      for (int xx = 0; xx < 32; ++xx) {
        const float got = x.f32()[(b * 32 + yy) * 32 + xx];
        const bool inside = yy >= 2 && yy < 30 && xx >= 2 && xx < 30;
        if (inside)
          EXPECT_EQ(got, torch_norm(s.train.image(b)[(yy - 2) * 28 + (xx - 2)], 0.2860f, 0.3530f));
        else
          EXPECT_EQ(got, border) << b << " " << yy << " " << xx;
      }
  opt.pad_to = 27;
  EXPECT_THROW(Loader(s.train, n, 3, false, 0, opt), std::invalid_argument);
}

// Reference for one augmented sample (raw values; -1 = padding).
std::vector<int> reference(const Dataset& d, int64_t i, const SampleAugmentation& a, int p) {
  const int H = d.height, W = d.width;
  std::vector<int> out(static_cast<size_t>(d.channels) * H * W);
  for (int c = 0; c < d.channels; ++c)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        const int cx = a.flip ? W - 1 - x : x;  // flip after crop
        const int sy = y + a.dy - p, sx = cx + a.dx - p;
        out[(c * H + y) * W + x] =
            (sy >= 0 && sy < H && sx >= 0 && sx < W) ? d.image(i)[(c * H + sy) * W + sx] : -1;
      }
  return out;
}

TEST(Loader, RandomCropAndFlipMatchTheReferenceAndAreDeterministic) {
  Splits s = make_synthetic(64, 0, 3, 8, 4, 9);
  for (auto& v : s.train.images) v = std::max<uint8_t>(v, 1);
  BatchOptions opt;
  opt.random_crop = true;
  opt.crop_padding = 4;
  opt.hflip = true;
  Loader a(s.train, kIdentity, 16, true, 123, opt), b(s.train, kIdentity, 16, true, 123, opt);
  Loader c(s.train, kIdentity, 16, true, 124, opt);
  std::set<std::pair<int, int>> offsets;
  int flips = 0;
  for (int64_t epoch : {0, 1}) {
    a.start_epoch(epoch);
    b.start_epoch(epoch);
    Tensor xa, ya, xb, yb;
    while (a.next(xa, ya)) {
      ASSERT_TRUE(b.next(xb, yb));
      ASSERT_EQ(xa.to_vector(), xb.to_vector());
      const int64_t per = 3 * 8 * 8;
      for (int64_t k = 0; k < a.last_batch_size(); ++k) {
        const int64_t i = a.last_batch_indices()[k];
        const SampleAugmentation aug = a.augmentation(i);
        EXPECT_GE(aug.dy, 0);
        EXPECT_LE(aug.dy, 8);
        EXPECT_GE(aug.dx, 0);
        EXPECT_LE(aug.dx, 8);
        offsets.insert({aug.dy, aug.dx});
        flips += aug.flip;
        const std::vector<int> ref = reference(s.train, i, aug, 4);
        for (int64_t e = 0; e < per; ++e) {
          const float want = ref[e] < 0 ? 0.0f : static_cast<float>(ref[e]) / 255.0f;
          ASSERT_EQ(xa.f32()[k * per + e], want) << "sample " << i << " element " << e;
        }
      }
    }
    EXPECT_FALSE(b.next(xb, yb));
  }
  EXPECT_GT(offsets.size(), 20u);  // 81 possible
  EXPECT_GT(flips, 30);            // of 128 draws
  EXPECT_LT(flips, 98);

  // Another seed draws other augmentations.
  int same = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const auto x = a.augmentation(i), y = c.augmentation(i);
    same += x.dy == y.dy && x.dx == y.dx && x.flip == y.flip;
  }
  EXPECT_LT(same, 10);
  // And another epoch too.
  a.start_epoch(0);
  std::vector<SampleAugmentation> e0;
  for (int64_t i = 0; i < 64; ++i) e0.push_back(a.augmentation(i));
  a.start_epoch(1);
  same = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const auto y = a.augmentation(i);
    same += e0[i].dy == y.dy && e0[i].dx == y.dx && e0[i].flip == y.flip;
  }
  EXPECT_LT(same, 10);
}

TEST(Loader, FlipsHappenAndAreExactMirrors) {
  Splits s = make_synthetic(200, 0, 1, 6, 2, 1);
  BatchOptions opt;
  opt.hflip = true;
  Loader l(s.train, kIdentity, 50, false, 77, opt);
  Tensor x, y;
  int flipped = 0, kept = 0;
  while (l.next(x, y)) {
    for (int64_t k = 0; k < l.last_batch_size(); ++k) {
      const int64_t i = l.last_batch_indices()[k];
      bool is_same = true, is_mirror = true;
      for (int r = 0; r < 6; ++r)
        for (int c = 0; c < 6; ++c) {
          const float got = x.f32()[k * 36 + r * 6 + c];
          is_same &= got == s.train.image(i)[r * 6 + c] / 255.0f;
          is_mirror &= got == s.train.image(i)[r * 6 + (5 - c)] / 255.0f;
        }
      ASSERT_TRUE(is_same || is_mirror) << "sample " << i;
      ASSERT_EQ(is_mirror && !is_same, l.augmentation(i).flip);
      flipped += l.augmentation(i).flip;
      kept += !l.augmentation(i).flip;
    }
  }
  EXPECT_EQ(flipped + kept, 200);
  EXPECT_GT(flipped, 70);
  EXPECT_GT(kept, 70);
}

TEST(Loader, CropWithPaddingOnPaddedImages) {
  // pad_to then crop: output stays pad_to x pad_to; the crop window moves over the padded image.
  Dataset d = constant_dataset(20, 1, 28, 28, 100);
  BatchOptions opt;
  opt.pad_to = 32;
  opt.random_crop = true;
  opt.crop_padding = 4;
  Loader l(d, kIdentity, 20, false, 3, opt);
  Tensor x, y;
  ASSERT_TRUE(l.next(x, y));
  ASSERT_EQ(x.shape(), (Shape{20, 1, 32, 32}));
  for (int64_t k = 0; k < 20; ++k) {
    const auto a = l.augmentation(k);
    int nonzero = 0;
    for (int e = 0; e < 32 * 32; ++e) nonzero += x.f32()[k * 1024 + e] != 0.0f;
    const int rows = 28 - std::max(0, std::abs(a.dy - 4) - 2);
    const int cols = 28 - std::max(0, std::abs(a.dx - 4) - 2);
    EXPECT_EQ(nonzero, rows * cols) << a.dy << " " << a.dx;
  }
}

TEST(Loader, ShufflingIsDeterministicPerEpochAndCoversEverySample) {
  Dataset d = indexed_dataset(1000);
  Loader a(d, kIdentity, 64, true, 5), b(d, kIdentity, 64, true, 5), c(d, kIdentity, 64, true, 6);
  EXPECT_EQ(a.num_batches(), 16);
  const auto a0 = epoch_ids(a, 0), b0 = epoch_ids(b, 0), a1 = epoch_ids(a, 1), c0 = epoch_ids(c, 0);
  EXPECT_EQ(a0, b0);
  EXPECT_NE(a0, a1);
  EXPECT_NE(a0, c0);
  for (const auto* ids : {&a0, &a1, &c0}) {
    ASSERT_EQ(ids->size(), 1000u);
    std::vector<int64_t> sorted = *ids;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  }
  std::vector<int64_t> identity(1000);
  for (int64_t i = 0; i < 1000; ++i) identity[i] = i;
  EXPECT_NE(a0, identity);
  EXPECT_EQ(a.order(), a1);  // order() is the current epoch's order
  EXPECT_EQ(epoch_ids(a, 0), a0);  // revisiting an epoch repeats it

  Loader plain(d, kIdentity, 64, false, 5);
  EXPECT_EQ(epoch_ids(plain, 0), identity);
  EXPECT_EQ(epoch_ids(plain, 3), identity);
}

TEST(Loader, BatchSizesAndDropLast) {
  Dataset d = indexed_dataset(10);
  Loader l(d, kIdentity, 4, false, 0);
  EXPECT_EQ(l.num_batches(), 3);
  EXPECT_EQ(l.num_samples(), 10);
  Tensor x, y;
  std::vector<int64_t> sizes;
  while (l.next(x, y)) {
    sizes.push_back(x.dim(0));
    EXPECT_EQ(y.dim(0), x.dim(0));
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 2}));
  EXPECT_FALSE(l.next(x, y));

  Loader dl(d, kIdentity, 4, true, 0, {}, true);
  EXPECT_EQ(dl.num_batches(), 2);
  EXPECT_EQ(dl.num_samples(), 8);
  sizes.clear();
  while (dl.next(x, y)) sizes.push_back(x.dim(0));
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4}));

  Loader big(d, kIdentity, 16, false, 0, {}, true);
  EXPECT_EQ(big.num_batches(), 0);
  EXPECT_FALSE(big.next(x, y));

  Dataset empty = indexed_dataset(0);
  Loader none(empty, kIdentity, 4, true, 0);
  EXPECT_EQ(none.num_batches(), 0);
  EXPECT_FALSE(none.next(x, y));
}

TEST(Loader, ReusesTensorStorageAndReplacesWrongDtypes) {
  Dataset d = indexed_dataset(12);
  Loader l(d, kIdentity, 4, false, 0);
  Tensor x;
  Tensor y({3}, DType::F32);  // wrong dtype: replaced by I32
  ASSERT_TRUE(l.next(x, y));
  EXPECT_EQ(y.dtype(), DType::I32);
  const void* px = x.raw();
  const void* py = y.raw();
  ASSERT_TRUE(l.next(x, y));
  EXPECT_EQ(x.raw(), px);
  EXPECT_EQ(y.raw(), py);
  EXPECT_EQ(y.i32()[0], 4);
}

TEST(Loader, ParallelAssemblyMatchesPerSampleRendering) {
  // Large enough for the OpenMP path.
  Splits s = make_synthetic(300, 0, 3, 32, 10, 2);
  BatchOptions opt;
  opt.random_crop = true;
  opt.hflip = true;
  Loader l(s.train, normalization_for("cifar10"), 128, true, 8, opt);
  l.start_epoch(2);
  Tensor x, y;
  std::vector<float> one(3 * 32 * 32);
  while (l.next(x, y)) {
    for (int64_t k = 0; k < l.last_batch_size(); ++k) {
      l.render(l.last_batch_indices()[k], one.data());
      ASSERT_TRUE(std::equal(one.begin(), one.end(), x.f32() + k * 3072)) << k;
      ASSERT_EQ(y.i32()[k], s.train.labels[l.last_batch_indices()[k]]);
    }
  }
}

}  // namespace
}  // namespace nns::data
