// Model specs read from outside (weights metadata): the bounds of core/models/zoo.h, with
// errors naming the file and the key instead of a bare std::bad_alloc (the probe's
// `in_channels: 2147483647` and `input_size: 100000`).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>

#include "core/io/model_io.h"
#include "core/io/safetensors.h"
#include "core/models/zoo.h"

namespace nns {
namespace {

std::map<std::string, std::string> lenet_meta() {
  return {{"arch", "lenet5"},   {"in_channels", "1"}, {"input_size", "28"},
          {"num_classes", "10"}, {"width_mult", "1"}, {"format", "nnsplitter-weights-1"}};
}

std::string spec_error(const std::map<std::string, std::string>& meta) {
  io::SafetensorsFile f;
  f.metadata = meta;
  try {
    io::spec_from_metadata(f, "w.safetensors");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(ModelSpecBounds, MetadataOutsideTheBoundsNamesFileAndKey) {
  auto with = [](const std::string& key, const std::string& value) {
    auto m = lenet_meta();
    m[key] = value;
    return m;
  };
  EXPECT_EQ(spec_error(lenet_meta()), "<no error>");
  EXPECT_EQ(spec_error(with("in_channels", "2147483647")),
            "w.safetensors: metadata in_channels = 2147483647 is out of range [1, 256] (the "
            "bounds of core/models/zoo.h)");
  EXPECT_EQ(spec_error(with("input_size", "100000")),
            "w.safetensors: metadata input_size = 100000 is out of range [1, 1024] (the bounds of "
            "core/models/zoo.h)");
  EXPECT_EQ(spec_error(with("num_classes", "0")),
            "w.safetensors: metadata num_classes = 0 is out of range [1, 50000] (the bounds of "
            "core/models/zoo.h)");
  EXPECT_EQ(spec_error(with("in_channels", "-3")).rfind("w.safetensors: metadata in_channels = -3", 0), 0u);
  for (const std::string w : {"0", "1e9", "nan", "inf", "-1", "4.5"})
    EXPECT_EQ(spec_error(with("width_mult", w)).rfind("w.safetensors: metadata width_mult = ", 0), 0u)
        << w;
  // At the bounds: accepted.
  EXPECT_EQ(spec_error(with("in_channels", "256")), "<no error>");
  EXPECT_EQ(spec_error(with("width_mult", "4")), "<no error>");
  EXPECT_EQ(spec_error(with("width_mult", "0.01")), "<no error>");
}

TEST(ModelSpecBounds, BuildModelRefusesSpecsOutsideTheBounds) {
  models::ModelSpec s;
  s.arch = "resnet20";
  s.in_channels = 2147483647;
  try {
    models::build_model(s);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "model resnet20: in_channels = 2147483647 is out of range [1, 256]");
  }
  s.in_channels = models::kMaxInChannels;
  s.num_classes = models::kMaxNumClasses;
  s.width_mult = 0.25f;
  auto m = models::build_model(s);  // the largest stem and head are fine
  EXPECT_EQ(m->spec().num_classes, 50000);
}

// A whole file whose metadata passes the bounds but not the architecture (lenet5 needs at
// least 12 pixels): load_model names the file.
TEST(ModelSpecBounds, LoadModelNamesTheFileForSpecsTheArchitectureRefuses) {
  const auto dir = std::filesystem::temp_directory_path() / ("nns-mio-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "tiny.safetensors").string();
  auto meta = lenet_meta();
  meta["input_size"] = "4";
  io::write_safetensors(path, {}, meta);
  try {
    io::load_model(path);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": lenet5: input size too small");
  }
  meta["input_size"] = "100000";
  io::write_safetensors(path, {}, meta);
  try {
    io::load_model(path);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(path + ": metadata input_size = 100000 is out of range", 0), 0u)
        << e.what();
  }
  std::filesystem::remove_all(dir);
}


// The probe's `width_mult: "2junk"` was read as 2 (std::stof stops at the first character it
// cannot use; std::stoi likewise skipped " 3" and cut "3.0"). Every numeric metadata field is
// now the whole string or an error naming the file, the key and the value.
TEST(ModelSpecBounds, MetadataNumbersAreStrict) {
  auto with = [](const std::string& key, const std::string& value) {
    auto m = lenet_meta();
    m[key] = value;
    return m;
  };
  for (const std::string key : {"in_channels", "input_size", "num_classes"})
    for (const std::string v : {"2junk", " 3", "3 ", "3.0", "1e1", "0x1c", "", "+"})
      EXPECT_EQ(spec_error(with(key, v)),
                "w.safetensors: metadata " + key + " = '" + v + "' is not an integer")
          << key << " = '" << v << "'";
  for (const std::string v : {"2junk", " 1", "1 ", "", "nan", "inf", "1,5", "0.5x"})
    EXPECT_EQ(spec_error(with("width_mult", v)),
              "w.safetensors: metadata width_mult = '" + v + "' is not a finite number")
        << "'" << v << "'";
  EXPECT_EQ(spec_error(with("num_classes", "99999999999")),
            "w.safetensors: metadata num_classes = 99999999999 is out of range (the bounds of "
            "core/models/zoo.h)");
  // What save_model writes reads back.
  EXPECT_EQ(spec_error(with("width_mult", "0.25")), "<no error>");
  EXPECT_EQ(spec_error(with("in_channels", "+1")), "<no error>");
}

// Weights given as a device, a FIFO or a folder: refused by what they are, at once (a FIFO
// used to block in open(), /dev/zero to be read until memory ran out).
TEST(ModelSpecBounds, WeightsMustBeARegularFile) {
  const auto dir = std::filesystem::temp_directory_path() / ("nns-mio-dev-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string fifo = (dir / "w.safetensors").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  auto error_of = [](const std::string& p) -> std::string {
    try {
      io::load_model(p);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "<no error>";
  };
  EXPECT_EQ(error_of("/dev/zero"), "/dev/zero: is a character device, not a safetensors file "
                                   "(weights must be a regular file)");
  EXPECT_EQ(error_of(fifo), fifo + ": is a FIFO, not a safetensors file (weights must be a "
                                   "regular file)");
  EXPECT_EQ(error_of(dir.string()), dir.string() + ": is a directory, not a safetensors file");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace nns
