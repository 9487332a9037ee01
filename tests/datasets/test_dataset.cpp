// Finding and loading datasets, constants, synthetic data and deterministic splits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "data_fixtures.h"
#include "datasets/dataset.h"

namespace nns::data {
namespace {

using namespace nns::data::testing;

// Sets an environment variable for the scope, restoring the old value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

TEST(DatasetInfo, KnownNamesAndAliases) {
  auto f = dataset_info("fashion-mnist");
  EXPECT_EQ(f.channels, 1);
  EXPECT_EQ(f.height, 28);
  EXPECT_EQ(f.width, 28);
  EXPECT_EQ(f.num_classes, 10);
  auto m = dataset_info("mnist");
  EXPECT_EQ(m.channels, 1);
  EXPECT_EQ(m.height, 28);
  auto c10 = dataset_info("cifar10");
  EXPECT_EQ(c10.channels, 3);
  EXPECT_EQ(c10.height, 32);
  EXPECT_EQ(c10.width, 32);
  EXPECT_EQ(c10.num_classes, 10);
  EXPECT_EQ(dataset_info("cifar100").num_classes, 100);
  EXPECT_EQ(dataset_info("synthetic").num_classes, 10);
  EXPECT_EQ(canonical_dataset_name("Fashion_MNIST"), "fashion-mnist");
  EXPECT_EQ(canonical_dataset_name("CIFAR-10"), "cifar10");
  EXPECT_EQ(canonical_dataset_name("cifar-100"), "cifar100");
}

TEST(DatasetInfo, UnknownNameListsKnownNames) {
  try {
    dataset_info("imagenet");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_CONTAINS(msg, "imagenet");
    for (const char* n : {"fashion-mnist", "mnist", "cifar10", "cifar100", "synthetic"})
      EXPECT_CONTAINS(msg, n);
  }
  EXPECT_THROW(normalization_for("svhn"), std::invalid_argument);
  EXPECT_THROW(load_dataset("svhn"), std::invalid_argument);
}

TEST(Normalization, SpecConstants) {
  auto f = normalization_for("fashion-mnist");
  ASSERT_EQ(f.mean.size(), 1u);
  EXPECT_FLOAT_EQ(f.mean[0], 0.2860f);
  EXPECT_FLOAT_EQ(f.std[0], 0.3530f);
  auto m = normalization_for("mnist");
  EXPECT_FLOAT_EQ(m.mean[0], 0.1307f);
  EXPECT_FLOAT_EQ(m.std[0], 0.3081f);
  auto c = normalization_for("cifar10");
  ASSERT_EQ(c.mean.size(), 3u);
  ASSERT_EQ(c.std.size(), 3u);
  EXPECT_FLOAT_EQ(c.mean[0], 0.4914f);
  EXPECT_FLOAT_EQ(c.mean[1], 0.4822f);
  EXPECT_FLOAT_EQ(c.mean[2], 0.4465f);
  EXPECT_FLOAT_EQ(c.std[0], 0.2471f);
  EXPECT_FLOAT_EQ(c.std[1], 0.2435f);
  EXPECT_FLOAT_EQ(c.std[2], 0.2616f);
  auto c100 = normalization_for("cifar100");
  EXPECT_FLOAT_EQ(c100.mean[0], 0.5071f);
  EXPECT_FLOAT_EQ(c100.mean[1], 0.4865f);
  EXPECT_FLOAT_EQ(c100.mean[2], 0.4409f);
  EXPECT_FLOAT_EQ(c100.std[0], 0.2673f);
  EXPECT_FLOAT_EQ(c100.std[1], 0.2564f);
  EXPECT_FLOAT_EQ(c100.std[2], 0.2762f);
  auto s = normalization_for("synthetic");
  EXPECT_FLOAT_EQ(s.mean[0], 0.5f);
  EXPECT_FLOAT_EQ(s.std[0], 0.25f);
  // Per dataset: one entry per channel.
  Splits syn = make_synthetic(4, 2, 3, 8, 2, 1);
  auto s3 = normalization_for(syn.train);
  ASSERT_EQ(s3.mean.size(), 3u);
  ASSERT_EQ(s3.std.size(), 3u);
  EXPECT_FLOAT_EQ(s3.mean[2], 0.5f);
  EXPECT_FLOAT_EQ(s3.std[2], 0.25f);
}

class LoadIdx : public ::testing::TestWithParam<bool> {};

TEST_P(LoadIdx, FromDataDirAndFromNameSubfolder) {
  const bool gz = GetParam();
  ScratchDir dir;
  write_idx_dataset(dir.path().string(), 30, 12, gz);
  Splits s = load_dataset("fashion-mnist", dir.path().string());
  EXPECT_EQ(s.train.name, "fashion-mnist");
  EXPECT_EQ(s.train.size(), 30);
  EXPECT_EQ(s.test.size(), 12);
  EXPECT_EQ(s.train.channels, 1);
  EXPECT_EQ(s.train.height, 28);
  EXPECT_EQ(s.train.images, pattern_pixels(30, 784, 1));
  EXPECT_EQ(s.test.images, pattern_pixels(12, 784, 2));
  EXPECT_EQ(s.test.labels[0], 3);
  EXPECT_EQ(s.train.source, dir.path().string());

  // DIR/<name> is searched too.
  ScratchDir parent;
  write_idx_dataset(parent.sub("mnist"), 10, 5, gz);
  Splits m = load_dataset("mnist", parent.path().string());
  EXPECT_EQ(m.train.name, "mnist");
  EXPECT_EQ(m.train.size(), 10);
  EXPECT_EQ(m.test.size(), 5);
  EXPECT_EQ(m.train.source, (parent.path() / "mnist").string());
}

INSTANTIATE_TEST_SUITE_P(GzAndRaw, LoadIdx, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "gz" : "raw"; });

TEST(LoadDataset, TorchvisionLayout) {
  ScratchDir dir;
  write_idx_dataset(dir.sub("FashionMNIST/raw"), 6, 4, false);
  Splits s = load_dataset("fashion-mnist", dir.path().string());
  EXPECT_EQ(s.train.size(), 6);
}

TEST(LoadDataset, EnvironmentVariableDirectory) {
  ScratchDir dir;
  write_idx_dataset(dir.sub("mnist"), 8, 4, true);
  ScopedEnv env("NNS_DATA_DIR", dir.path().string());
  Splits s = load_dataset("mnist");
  EXPECT_EQ(s.train.size(), 8);
  EXPECT_EQ(s.train.source, (dir.path() / "mnist").string());
  const auto dirs = dataset_search_dirs("mnist", "");
  ASSERT_GE(dirs.size(), 3u);
  EXPECT_EQ(dirs[0], (dir.path() / "mnist").string());
  EXPECT_EQ(dirs[1], "/usr/share/datasets/mnist");
  EXPECT_EQ(dirs[2], "./data/mnist");
}

TEST(LoadDataset, WrongImageSizeIsAnError) {
  ScratchDir dir;
  write_idx_dataset(dir.path().string(), 4, 4, false, 20, 20);
  EXPECT_CONTAINS(runtime_error_of([&] { load_dataset("mnist", dir.path().string()); }),
                  "images are 20x20, mnist has 28x28");
}

TEST(LoadDataset, Cifar10InBatchesSubfolder) {
  ScratchDir dir;
  const std::string sub = dir.sub("cifar-10-batches-bin");
  for (int b = 1; b <= 5; ++b)
    write_bytes(sub + "/data_batch_" + std::to_string(b) + ".bin",
                cifar_bytes(cyclic_labels(3, 10, b), 1, b), false);
  write_bytes(sub + "/test_batch.bin", cifar_bytes(cyclic_labels(4, 10), 1, 9), false);
  Splits s = load_dataset("cifar10", dir.path().string());
  EXPECT_EQ(s.train.name, "cifar10");
  EXPECT_EQ(s.train.size(), 15);
  EXPECT_EQ(s.test.size(), 4);
  EXPECT_EQ(s.train.channels, 3);
  EXPECT_EQ(s.train.height, 32);
  EXPECT_EQ(s.train.labels[3], 2);  // batch 2 starts at offset 2
  const auto p5 = pattern_pixels(3, 3072, 5);
  EXPECT_TRUE(std::equal(p5.begin(), p5.end(), s.train.images.begin() + 12 * 3072));
  EXPECT_EQ(s.test.images, pattern_pixels(4, 3072, 9));
  EXPECT_EQ(s.train.source, sub);
  EXPECT_NO_THROW(s.train.validate());
}

TEST(LoadDataset, Cifar100FineLabels) {
  ScratchDir dir;
  const std::string sub = dir.sub("cifar100/cifar-100-binary");
  write_bytes(sub + "/train.bin", cifar_bytes({5, 77, 99}, 2, 1), false);
  write_bytes(sub + "/test.bin", cifar_bytes({42}, 2, 2), false);
  Splits s = load_dataset("cifar100", dir.path().string());
  EXPECT_EQ(s.train.num_classes, 100);
  ASSERT_EQ(s.train.size(), 3);
  EXPECT_EQ(s.train.labels[1], 77);
  EXPECT_EQ(s.train.labels[2], 99);
  EXPECT_EQ(s.test.labels[0], 42);
}

TEST(LoadDataset, MalformedFileIsReportedNotSkipped) {
  ScratchDir dir;
  write_idx_dataset(dir.path().string(), 5, 5, false);
  fs::resize_file(dir.path() / "t10k-images-idx3-ubyte", 100);
  EXPECT_CONTAINS(runtime_error_of([&] { load_dataset("mnist", dir.path().string()); }),
                  (dir.path() / "t10k-images-idx3-ubyte").string() + ": truncated");
}

TEST(MissingDataset, FashionMnistListsPlacesAndAptHint) {
  ScratchDir dir;
  const std::string msg =
      runtime_error_of([&] { load_dataset("fashion-mnist", dir.path().string()); });
  EXPECT_CONTAINS(msg, "fashion-mnist dataset not found");
  EXPECT_CONTAINS(msg, dir.path().string() + " (no fashion-mnist files)");
  EXPECT_CONTAINS(msg, (dir.path() / "fashion-mnist").string() + " (does not exist)");
  EXPECT_CONTAINS(msg, "apt-get install dataset-fashion-mnist");
  EXPECT_CONTAINS(msg, "--data-dir DIR holding train-images-idx3-ubyte.gz");
}

TEST(MissingDataset, IncompleteFolderSaysWhatIsMissing) {
  ScratchDir dir;
  write_idx_dataset(dir.path().string(), 3, 3, true);
  fs::remove(dir.path() / "t10k-labels-idx1-ubyte.gz");
  const std::string msg = runtime_error_of([&] { load_dataset("mnist", dir.path().string()); });
  EXPECT_CONTAINS(msg, dir.path().string() + " (incomplete: missing t10k-labels-idx1-ubyte");
  EXPECT_CONTAINS(msg, "--data-dir");
}

TEST(MissingDataset, DefaultSearchListsEveryPlace) {
  ScratchDir dir;
  ScopedEnv env("NNS_DATA_DIR", dir.path().string());
  for (const std::string name : {"cifar10", "cifar100", "mnist"}) {
    bool present = false;
    for (const auto& d : {std::string("/usr/share/datasets/") + name, "./data/" + name})
      present = present || fs::exists(d);
    if (present) continue;  // this machine has it: nothing to test for this name
    const std::string msg = runtime_error_of([&] { load_dataset(name); });
    EXPECT_CONTAINS(msg, name + " dataset not found. Looked in:");
    EXPECT_CONTAINS(msg, (dir.path() / name).string() + " (does not exist)");
    EXPECT_CONTAINS(msg, "/usr/share/datasets/" + name + " (does not exist)");
    EXPECT_CONTAINS(msg, "./data/" + name + " (does not exist)");
    if (name == "cifar10") {
      EXPECT_CONTAINS(msg, "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz");
      EXPECT_CONTAINS(msg, "cifar-10-batches-bin");
      EXPECT_CONTAINS(msg, "--data-dir DIR");
    } else if (name == "cifar100") {
      EXPECT_CONTAINS(msg, "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz");
    } else {
      EXPECT_CONTAINS(msg, "train-images-idx3-ubyte.gz");
      EXPECT_CONTAINS(msg, "--data-dir DIR");
    }
  }
}

TEST(Synthetic, DeterministicBySeed) {
  Splits a = make_synthetic(50, 20, 2, 6, 5, 7), b = make_synthetic(50, 20, 2, 6, 5, 7);
  Splits c = make_synthetic(50, 20, 2, 6, 5, 8);
  EXPECT_EQ(a.train.images, b.train.images);
  EXPECT_EQ(a.test.images, b.test.images);
  EXPECT_EQ(a.train.labels, b.train.labels);
  EXPECT_NE(a.train.images, c.train.images);
  // Train and test share the prototypes but not the noise.
  EXPECT_FALSE(std::equal(a.test.images.begin(), a.test.images.end(), a.train.images.begin()));
  EXPECT_EQ(a.train.name, "synthetic");
  EXPECT_EQ(a.train.channels, 2);
  EXPECT_EQ(a.train.height, 6);
  EXPECT_EQ(a.train.width, 6);
  EXPECT_EQ(a.train.num_classes, 5);
  EXPECT_EQ(a.train.size(), 50);
  EXPECT_EQ(a.test.size(), 20);
  EXPECT_NO_THROW(a.train.validate());
  std::vector<int> hist(5);
  for (int32_t l : a.train.labels) hist[l]++;
  for (int h : hist) EXPECT_EQ(h, 10);
  // Pinned hashes guard against an accidental change of the generator (same on every platform).
  auto fnv = [](const std::vector<uint8_t>& v) {
    uint64_t h = 1469598103934665603ull;
    for (uint8_t x : v) h = (h ^ x) * 1099511628211ull;
    return h;
  };
  EXPECT_EQ(fnv(a.train.images), 1130963125791327756ull);
  EXPECT_EQ(fnv(a.test.images), 9178812739446045551ull);
}

TEST(Synthetic, LearnableByNearestClassMean) {
  Splits s = make_synthetic(200, 100, 1, 8, 10, 3);
  const int64_t per = s.train.image_bytes();
  std::vector<double> mean(10 * per, 0.0);
  std::vector<int> cnt(10, 0);
  for (int64_t i = 0; i < s.train.size(); ++i) {
    cnt[s.train.labels[i]]++;
    for (int64_t k = 0; k < per; ++k) mean[s.train.labels[i] * per + k] += s.train.image(i)[k];
  }
  for (int c = 0; c < 10; ++c)
    for (int64_t k = 0; k < per; ++k) mean[c * per + k] /= cnt[c];
  int correct = 0;
  for (int64_t i = 0; i < s.test.size(); ++i) {
    int best = -1;
    double best_d = 1e300;
    for (int c = 0; c < 10; ++c) {
      double d = 0;
      for (int64_t k = 0; k < per; ++k) {
        const double e = s.test.image(i)[k] - mean[c * per + k];
        d += e * e;
      }
      if (d < best_d) best_d = d, best = c;
    }
    correct += best == s.test.labels[i];
  }
  EXPECT_GE(correct, 95);
}

TEST(Synthetic, LoadDatasetSynthetic) {
  Splits s = load_dataset("synthetic");
  EXPECT_EQ(s.train.size(), 2000);
  EXPECT_EQ(s.test.size(), 500);
  auto info = dataset_info("synthetic");
  EXPECT_EQ(s.train.channels, info.channels);
  EXPECT_EQ(s.train.height, info.height);
  EXPECT_EQ(s.train.num_classes, info.num_classes);
}

TEST(Split, TrainValDisjointCompleteDeterministic) {
  Dataset d = indexed_dataset(1000);
  auto [train, val] = split_train_val(d, 150, 11);
  EXPECT_EQ(val.size(), 150);
  EXPECT_EQ(train.size(), 850);
  std::set<int64_t> seen;
  std::vector<int64_t> val_ids, train_ids;
  for (int64_t i = 0; i < val.size(); ++i) val_ids.push_back(sample_id(val, i));
  for (int64_t i = 0; i < train.size(); ++i) train_ids.push_back(sample_id(train, i));
  for (auto id : val_ids) EXPECT_TRUE(seen.insert(id).second);
  for (auto id : train_ids) EXPECT_TRUE(seen.insert(id).second) << "sample in both: " << id;
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(*seen.begin(), 0);
  EXPECT_EQ(*seen.rbegin(), 999);
  // Labels and images travel together; both parts keep the original order.
  for (int64_t i = 0; i < val.size(); ++i) EXPECT_EQ(val.labels[i], val_ids[i] % 10);
  EXPECT_TRUE(std::is_sorted(val_ids.begin(), val_ids.end()));
  EXPECT_TRUE(std::is_sorted(train_ids.begin(), train_ids.end()));

  auto [train2, val2] = split_train_val(d, 150, 11);
  EXPECT_EQ(val2.images, val.images);
  EXPECT_EQ(train2.images, train.images);
  auto [train3, val3] = split_train_val(d, 150, 12);
  EXPECT_NE(val3.images, val.images);

  auto [all, none] = split_train_val(d, 0, 1);
  EXPECT_EQ(all.size(), 1000);
  EXPECT_EQ(none.size(), 0);
  EXPECT_THROW(split_train_val(d, 1001, 1), std::invalid_argument);
  EXPECT_THROW(split_train_val(d, -1, 1), std::invalid_argument);
}

TEST(Split, Subset) {
  Dataset d = indexed_dataset(20);
  Dataset s = subset(d, {5, 0, 19, 5});
  ASSERT_EQ(s.size(), 4);
  EXPECT_EQ(sample_id(s, 0), 5);
  EXPECT_EQ(sample_id(s, 1), 0);
  EXPECT_EQ(sample_id(s, 2), 19);
  EXPECT_EQ(sample_id(s, 3), 5);
  EXPECT_EQ(s.labels[2], 9);
  EXPECT_EQ(s.name, d.name);
  EXPECT_THROW(subset(d, {20}), std::out_of_range);
  EXPECT_THROW(subset(d, {-1}), std::out_of_range);
}

TEST(Split, FractionIsStratifiedAndDeterministic) {
  Dataset d = indexed_dataset(1000);
  Dataset f = fraction(d, 0.1, 4);
  ASSERT_EQ(f.size(), 100);
  std::vector<int> hist(10);
  std::set<int64_t> ids;
  for (int64_t i = 0; i < f.size(); ++i) {
    hist[f.labels[i]]++;
    ids.insert(sample_id(f, i));
    EXPECT_EQ(f.labels[i], sample_id(f, i) % 10);
  }
  for (int h : hist) EXPECT_EQ(h, 10);
  EXPECT_EQ(ids.size(), 100u);
  EXPECT_EQ(fraction(d, 0.1, 4).images, f.images);
  EXPECT_NE(fraction(d, 0.1, 5).images, f.images);
  EXPECT_EQ(fraction(d, 1.0, 4).size(), 1000);
  EXPECT_EQ(fraction(d, 0.001, 4).size(), 10);  // at least one per class
  EXPECT_THROW(fraction(d, 0.0, 1), std::invalid_argument);
  EXPECT_THROW(fraction(d, 1.5, 1), std::invalid_argument);
}

TEST(Permutation, IsAPermutationAndPinned) {
  auto p = seeded_permutation(100, 42);
  auto q = p;
  std::sort(q.begin(), q.end());
  for (int i = 0; i < 100; ++i) EXPECT_EQ(q[i], i);
  EXPECT_EQ(p, seeded_permutation(100, 42));
  EXPECT_NE(p, seeded_permutation(100, 43));
  EXPECT_TRUE(seeded_permutation(0, 1).empty());
}

TEST(RealData, FashionMnistFromDebianPackage) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(dir + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << dir << " not present (apt-get install dataset-fashion-mnist)";
  Splits s = load_dataset("fashion-mnist", dir);
  ASSERT_EQ(s.train.size(), 60000);
  ASSERT_EQ(s.test.size(), 10000);
  EXPECT_EQ(s.train.images.size(), 60000u * 784);
  EXPECT_EQ(s.test.images.size(), 10000u * 784);
  std::vector<int> htrain(10), htest(10);
  for (int32_t l : s.train.labels) htrain[l]++;
  for (int32_t l : s.test.labels) htest[l]++;
  for (int c = 0; c < 10; ++c) {
    EXPECT_EQ(htrain[c], 6000) << "class " << c;
    EXPECT_EQ(htest[c], 1000) << "class " << c;
  }
}

}  // namespace
}  // namespace nns::data
