// Datasets held once, as uint8 [N, C, H, W], with their labels; where to find them on disk;
// their normalisation constants; deterministic splits. Batches are made by datasets/loader.h.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nns::data {

struct Dataset {
  std::string name;  // "fashion-mnist", "mnist", "cifar10", "cifar100", "synthetic"
  int channels = 1, height = 28, width = 28, num_classes = 10;
  std::vector<uint8_t> images;  // [N, C, H, W]
  std::vector<int32_t> labels;  // [N]
  std::string source;           // where it was read from (for error messages and metadata)

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t image_bytes() const { return int64_t(channels) * height * width; }
  const uint8_t* image(int64_t i) const { return images.data() + i * image_bytes(); }
  // Checks that images holds size() images of C*H*W bytes and every label is in
  // [0, num_classes); throws std::runtime_error naming the dataset and source otherwise.
  void validate() const;
};

// Per-channel mean and std applied after scaling to [0, 1]. One value applies to every channel.
struct Normalization {
  std::vector<float> mean, std;
};

// SPEC §4 constants. fashion-mnist 0.2860/0.3530, mnist 0.1307/0.3081, cifar10
// (0.4914, 0.4822, 0.4465)/(0.2471, 0.2435, 0.2616), cifar100 (0.5071, 0.4865, 0.4409)/
// (0.2673, 0.2564, 0.2762), synthetic 0.5/0.25 (one value, for every channel).
// Unknown name: std::invalid_argument listing the known names.
Normalization normalization_for(const std::string& dataset_name);
// Same, with one entry per channel of d (the synthetic constants repeated).
Normalization normalization_for(const Dataset& d);

struct DatasetInfo {
  int channels, height, width, num_classes;
};
// Shape and class count without reading any file. "synthetic" gives the defaults of
// load_dataset("synthetic") (1x28x28, 10 classes). Names are case-insensitive and accept a few
// spellings ("fashion_mnist", "fmnist", "cifar-10", "cifar-100"); unknown name:
// std::invalid_argument listing the known names.
DatasetInfo dataset_info(const std::string& name);
// The canonical spelling of a dataset name ("Fashion_MNIST" -> "fashion-mnist"); throws like
// dataset_info for an unknown name.
std::string canonical_dataset_name(const std::string& name);
// "fashion-mnist, mnist, cifar10, cifar100, synthetic"
std::string known_dataset_names();

struct Splits {
  Dataset train, test;
};

// Reads a dataset. data_dir "" = default search: $NNS_DATA_DIR/<name>, /usr/share/datasets/<name>,
// ./data/<name>. A given data_dir is searched as DIR and DIR/<name> (and, for IDX datasets, the
// torchvision layout DIR/{MNIST,FashionMNIST}/raw). CIFAR files may also sit in a
// cifar-10-batches-bin/ or cifar-100-binary/ subfolder of any of these.
// Files: MNIST/Fashion-MNIST {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; CIFAR-10
// data_batch_1..5.bin + test_batch.bin; CIFAR-100 train.bin + test.bin (fine labels).
// "synthetic" needs no files: make_synthetic(2000, 500, 1, 28, 10, 0).
// Errors: std::runtime_error listing every place looked at and how to get the data; std::
// runtime_error naming the file for malformed files; std::invalid_argument for unknown names.
Splits load_dataset(const std::string& name, const std::string& data_dir = "");

// The directories load_dataset searches, in order (existing or not).
std::vector<std::string> dataset_search_dirs(const std::string& name, const std::string& data_dir);

// A small learnable dataset for tests: each class has a fixed random prototype image (uniform
// bytes), a sample is its prototype plus uniform integer noise in [-64, 64] (clamped to
// [0, 255]). Labels cycle 0, 1, ..., num_classes-1. Deterministic by seed on every platform;
// train and test share the prototypes and draw independent noise.
Splits make_synthetic(int64_t n_train, int64_t n_test, int channels, int hw, int num_classes,
                      uint64_t seed);

// Deterministic train/validation split: a seeded permutation, the first val_size samples go to
// validation, the rest to training. Both keep the original order of their samples.
std::pair<Dataset, Dataset> split_train_val(const Dataset& d, int64_t val_size, uint64_t seed);

// A permutation of 0..n-1 by Fisher-Yates driven by nns::Rng(seed) (same on every platform).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed);

// The samples at `indices` (in that order; repeats allowed). Out-of-range index:
// std::out_of_range.
Dataset subset(const Dataset& d, const std::vector<int64_t>& indices);

// A fraction p in (0, 1] of the data, stratified by class: from each class, llround(p * count)
// samples chosen by a seeded shuffle (at least one when the class is not empty), kept in their
// original order. p = 1 returns a copy.
Dataset fraction(const Dataset& d, double p, uint64_t seed);

}  // namespace nns::data
