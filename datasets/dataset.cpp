#include "datasets/dataset.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <stdexcept>

#include "core/random.h"
#include "datasets/readers.h"

namespace nns::data {

namespace fs = std::filesystem;

namespace {

// Tags that separate the random streams derived from one user seed.
constexpr uint64_t kTagSplit = 0x53504C4954ull;       // "SPLIT"
constexpr uint64_t kTagFraction = 0x4652414354ull;    // "FRACT"
constexpr uint64_t kTagPrototype = 0x50524F544Full;   // "PROTO"
constexpr uint64_t kTagTrainNoise = 0x54524E4Eull;    // "TRNN"
constexpr uint64_t kTagTestNoise = 0x54535441ull;     // "TSTA"

constexpr const char* kKnown = "fashion-mnist, mnist, cifar10, cifar100, synthetic";

// Defaults of load_dataset("synthetic").
constexpr int64_t kSynthTrain = 2000, kSynthTest = 500;
constexpr int kSynthChannels = 1, kSynthHw = 28, kSynthClasses = 10;
constexpr uint64_t kSynthSeed = 0;

bool exists_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}
bool exists_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}

struct IdxFiles {
  const char* label;  // for messages
  std::vector<const char*> variants;
};
const std::vector<IdxFiles>& idx_files() {
  // train images, train labels, test images, test labels
  static const std::vector<IdxFiles> f = {
      {"train-images-idx3-ubyte[.gz]",
       {"train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "train-images.idx3-ubyte"}},
      {"train-labels-idx1-ubyte[.gz]",
       {"train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte", "train-labels.idx1-ubyte"}},
      {"t10k-images-idx3-ubyte[.gz]",
       {"t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"}},
      {"t10k-labels-idx1-ubyte[.gz]",
       {"t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"}},
  };
  return f;
}

std::vector<std::string> cifar_files(const std::string& name) {
  if (name == "cifar10")
    return {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
            "data_batch_5.bin", "test_batch.bin"};
  return {"train.bin", "test.bin"};
}

std::string how_to_get(const std::string& name) {
  if (name == "fashion-mnist")
    return "To get it: apt-get install dataset-fashion-mnist (or pass --data-dir DIR holding "
           "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
           "and t10k-labels-idx1-ubyte.gz, gzipped or not; or set NNS_DATA_DIR so that "
           "$NNS_DATA_DIR/fashion-mnist holds them).";
  if (name == "mnist")
    return "To get it: put the four MNIST files train-images-idx3-ubyte.gz, "
           "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz "
           "(gzipped or not; from any MNIST mirror, e.g. "
           "https://ossci-datasets.s3.amazonaws.com/mnist/) in a folder and pass --data-dir DIR, "
           "or put them in $NNS_DATA_DIR/mnist or /usr/share/datasets/mnist.";
  if (name == "cifar10")
    return "To get it: download https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz on a "
           "machine with internet, extract it (tar xzf cifar-10-binary.tar.gz gives "
           "cifar-10-batches-bin/ with data_batch_1.bin ... data_batch_5.bin and test_batch.bin), "
           "and pass --data-dir DIR (DIR or DIR/cifar-10-batches-bin holding the files), or "
           "put it in $NNS_DATA_DIR/cifar10.";
  if (name == "cifar100")
    return "To get it: download https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz on a "
           "machine with internet, extract it (tar xzf cifar-100-binary.tar.gz gives "
           "cifar-100-binary/ with train.bin and test.bin), and pass --data-dir DIR (DIR or "
           "DIR/cifar-100-binary holding the files), or put it in $NNS_DATA_DIR/cifar100.";
  return "";
}

void push_unique(std::vector<std::string>& v, const std::string& s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

}  // namespace

void Dataset::validate() const {
  const std::string who = "dataset " + name + (source.empty() ? "" : " (" + source + ")");
  if (channels <= 0 || height <= 0 || width <= 0 || num_classes <= 0)
    throw std::runtime_error(who + ": bad shape " + std::to_string(channels) + "x" +
                             std::to_string(height) + "x" + std::to_string(width) + ", " +
                             std::to_string(num_classes) + " classes");
  if (static_cast<int64_t>(images.size()) != size() * image_bytes())
    throw std::runtime_error(who + ": " + std::to_string(images.size()) + " image bytes for " +
                             std::to_string(size()) + " labels of " +
                             std::to_string(image_bytes()) + "-byte images");
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] < 0 || labels[i] >= num_classes)
      throw std::runtime_error(who + ": label " + std::to_string(labels[i]) + " at index " +
                               std::to_string(i) + " is out of range (" +
                               std::to_string(num_classes) + " classes)");
}

std::string known_dataset_names() { return kKnown; }

std::string canonical_dataset_name(const std::string& name) {
  std::string s;
  for (char c : name) s += c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "fashion-mnist" || s == "fashionmnist" || s == "fmnist") return "fashion-mnist";
  if (s == "mnist") return "mnist";
  if (s == "cifar10" || s == "cifar-10") return "cifar10";
  if (s == "cifar100" || s == "cifar-100") return "cifar100";
  if (s == "synthetic") return "synthetic";
  throw std::invalid_argument("unknown dataset '" + name + "' (known: " + kKnown + ")");
}

DatasetInfo dataset_info(const std::string& name) {
  const std::string n = canonical_dataset_name(name);
  if (n == "fashion-mnist" || n == "mnist") return {1, 28, 28, 10};
  if (n == "cifar10") return {3, 32, 32, 10};
  if (n == "cifar100") return {3, 32, 32, 100};
  return {kSynthChannels, kSynthHw, kSynthHw, kSynthClasses};  // synthetic
}

Normalization normalization_for(const std::string& dataset_name) {
  const std::string n = canonical_dataset_name(dataset_name);
  if (n == "fashion-mnist") return {{0.2860f}, {0.3530f}};
  if (n == "mnist") return {{0.1307f}, {0.3081f}};
  if (n == "cifar10") return {{0.4914f, 0.4822f, 0.4465f}, {0.2471f, 0.2435f, 0.2616f}};
  if (n == "cifar100") return {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  return {{0.5f}, {0.25f}};  // synthetic
}

Normalization normalization_for(const Dataset& d) {
  Normalization n = normalization_for(d.name);
  if (n.mean.size() == 1 && d.channels > 1) {
    n.mean.assign(d.channels, n.mean[0]);
    n.std.assign(d.channels, n.std[0]);
  }
  return n;
}

std::vector<std::string> dataset_search_dirs(const std::string& name_in,
                                             const std::string& data_dir) {
  const std::string name = canonical_dataset_name(name_in);
  std::vector<std::string> bases;
  if (!data_dir.empty()) {
    bases.push_back(data_dir);
    bases.push_back((fs::path(data_dir) / name).string());
    if (name == "mnist") bases.push_back((fs::path(data_dir) / "MNIST" / "raw").string());
    if (name == "fashion-mnist")
      bases.push_back((fs::path(data_dir) / "FashionMNIST" / "raw").string());
  } else {
    const char* env = std::getenv("NNS_DATA_DIR");
    if (env && *env) bases.push_back((fs::path(env) / name).string());
    bases.push_back("/usr/share/datasets/" + name);
    bases.push_back("./data/" + name);
  }
  std::vector<std::string> dirs;
  for (const auto& b : bases) {
    push_unique(dirs, b);
    if (name == "cifar10") push_unique(dirs, (fs::path(b) / "cifar-10-batches-bin").string());
    if (name == "cifar100") push_unique(dirs, (fs::path(b) / "cifar-100-binary").string());
  }
  return dirs;
}

Splits load_dataset(const std::string& name_in, const std::string& data_dir) {
  const std::string name = canonical_dataset_name(name_in);
  if (name == "synthetic")
    return make_synthetic(kSynthTrain, kSynthTest, kSynthChannels, kSynthHw, kSynthClasses,
                          kSynthSeed);
  const DatasetInfo info = dataset_info(name);
  const bool idx = name == "fashion-mnist" || name == "mnist";

  std::vector<std::string> notes;
  for (const std::string& dir : dataset_search_dirs(name, data_dir)) {
    if (!exists_dir(dir)) {
      notes.push_back("  " + dir + " (does not exist)");
      continue;
    }
    std::vector<std::string> found, missing;
    if (idx) {
      for (const auto& f : idx_files()) {
        std::string hit;
        for (const char* v : f.variants)
          if (exists_file(fs::path(dir) / v)) {
            hit = (fs::path(dir) / v).string();
            break;
          }
        if (hit.empty())
          missing.push_back(f.label);
        else
          found.push_back(hit);
      }
    } else {
      for (const auto& f : cifar_files(name)) {
        if (exists_file(fs::path(dir) / f))
          found.push_back((fs::path(dir) / f).string());
        else
          missing.push_back(f);
      }
    }
    if (!missing.empty()) {
      std::string note = "  " + dir + " (";
      if (found.empty()) {
        note += "no " + name + " files)";
      } else {
        note += "incomplete: missing";
        for (const auto& m : missing) note += " " + m;
        note += ")";
      }
      notes.push_back(note);
      continue;
    }

    Splits s;
    if (idx) {
      s.train = read_idx_dataset(found[0], found[1], name, info.num_classes);
      s.test = read_idx_dataset(found[2], found[3], name, info.num_classes);
      for (Dataset* d : {&s.train, &s.test})
        if (d->height != info.height || d->width != info.width)
          throw std::runtime_error(
              d->source + ": images are " + std::to_string(d->height) + "x" +
              std::to_string(d->width) + ", " + name + " has " + std::to_string(info.height) +
              "x" + std::to_string(info.width));
    } else {
      const int label_bytes = name == "cifar100" ? 2 : 1;
      for (Dataset* d : {&s.train, &s.test}) {
        d->name = name;
        d->channels = info.channels;
        d->height = info.height;
        d->width = info.width;
        d->num_classes = info.num_classes;
      }
      for (size_t i = 0; i + 1 < found.size(); ++i) read_cifar_file(found[i], label_bytes, s.train);
      read_cifar_file(found.back(), label_bytes, s.test);
    }
    s.train.source = s.test.source = dir;
    return s;
  }

  std::string msg = name + " dataset not found. Looked in:\n";
  for (const auto& n : notes) msg += n + "\n";
  msg += how_to_get(name);
  throw std::runtime_error(msg);
}

Splits make_synthetic(int64_t n_train, int64_t n_test, int channels, int hw, int num_classes,
                      uint64_t seed) {
  if (n_train < 0 || n_test < 0 || channels <= 0 || hw <= 0 || num_classes <= 0)
    throw std::invalid_argument("make_synthetic: bad arguments (n_train " +
                                std::to_string(n_train) + ", n_test " + std::to_string(n_test) +
                                ", channels " + std::to_string(channels) + ", hw " +
                                std::to_string(hw) + ", classes " +
                                std::to_string(num_classes) + ")");
  const int64_t per = int64_t(channels) * hw * hw;
  std::vector<uint8_t> protos(static_cast<size_t>(per * num_classes));
  Rng pr(Rng::derive(seed, kTagPrototype));
  for (auto& v : protos) v = static_cast<uint8_t>(pr.below(256));

  auto make = [&](int64_t n, uint64_t tag) {
    Dataset d;
    d.name = "synthetic";
    d.channels = channels;
    d.height = d.width = hw;
    d.num_classes = num_classes;
    d.images.resize(static_cast<size_t>(n * per));
    d.labels.resize(static_cast<size_t>(n));
    Rng r(Rng::derive(seed, tag));
    for (int64_t i = 0; i < n; ++i) {
      const int c = static_cast<int>(i % num_classes);
      d.labels[i] = c;
      const uint8_t* p = protos.data() + c * per;
      uint8_t* out = d.images.data() + i * per;
      for (int64_t k = 0; k < per; ++k) {
        const int v = int(p[k]) + int(r.below(129)) - 64;
        out[k] = static_cast<uint8_t>(std::clamp(v, 0, 255));
      }
    }
    d.source = "synthetic(seed=" + std::to_string(seed) + ", " + std::to_string(channels) + "x" +
               std::to_string(hw) + "x" + std::to_string(hw) + ", " +
               std::to_string(num_classes) + " classes)";
    return d;
  };
  Splits s;
  s.train = make(n_train, kTagTrainNoise);
  s.test = make(n_test, kTagTestNoise);
  return s;
}

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::iota(p.begin(), p.end(), int64_t(0));
  Rng r(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(r.below(static_cast<uint64_t>(i) + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

Dataset subset(const Dataset& d, const std::vector<int64_t>& indices) {
  Dataset s;
  s.name = d.name;
  s.channels = d.channels;
  s.height = d.height;
  s.width = d.width;
  s.num_classes = d.num_classes;
  s.source = d.source;
  const int64_t per = d.image_bytes();
  const int64_t n = d.size();
  if (static_cast<int64_t>(d.images.size()) != n * per)
    throw std::invalid_argument("subset: dataset " + d.name + " holds " +
                                std::to_string(d.images.size()) + " image bytes for " +
                                std::to_string(n) + " labels");
  s.images.resize(indices.size() * static_cast<size_t>(per));
  s.labels.resize(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    if (i < 0 || i >= n)
      throw std::out_of_range("subset: index " + std::to_string(i) + " out of range for " +
                              std::to_string(n) + " samples of " + d.name);
    s.labels[k] = d.labels[i];
    std::memcpy(s.images.data() + k * per, d.image(i), static_cast<size_t>(per));
  }
  return s;
}

std::pair<Dataset, Dataset> split_train_val(const Dataset& d, int64_t val_size, uint64_t seed) {
  const int64_t n = d.size();
  if (val_size < 0 || val_size > n)
    throw std::invalid_argument("split_train_val: val_size " + std::to_string(val_size) +
                                " not in [0, " + std::to_string(n) + "]");
  std::vector<int64_t> p = seeded_permutation(n, Rng::derive(seed, kTagSplit));
  std::vector<int64_t> val(p.begin(), p.begin() + val_size), train(p.begin() + val_size, p.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return {subset(d, train), subset(d, val)};
}

Dataset fraction(const Dataset& d, double p, uint64_t seed) {
  if (!(p > 0.0 && p <= 1.0))
    throw std::invalid_argument("fraction: p = " + std::to_string(p) + " not in (0, 1]");
  if (p == 1.0) return d;
  std::vector<std::vector<int64_t>> by_class(static_cast<size_t>(std::max(d.num_classes, 0)));
  for (int64_t i = 0; i < d.size(); ++i) {
    const int32_t c = d.labels[i];
    if (c < 0 || c >= d.num_classes)
      throw std::runtime_error("fraction: label " + std::to_string(c) + " at index " +
                               std::to_string(i) + " of " + d.name + " is out of range");
    by_class[c].push_back(i);
  }
  std::vector<int64_t> chosen;
  for (size_t c = 0; c < by_class.size(); ++c) {
    const auto& members = by_class[c];
    const int64_t cnt = static_cast<int64_t>(members.size());
    if (cnt == 0) continue;
    int64_t k = std::llround(p * static_cast<double>(cnt));
    k = std::clamp<int64_t>(k, 1, cnt);
    const std::vector<int64_t> perm =
        seeded_permutation(cnt, Rng::derive(Rng::derive(seed, kTagFraction), c));
    for (int64_t j = 0; j < k; ++j) chosen.push_back(members[perm[j]]);
  }
  std::sort(chosen.begin(), chosen.end());
  return subset(d, chosen);
}

}  // namespace nns::data
