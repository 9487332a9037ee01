// experiments/h5file: round trips of every type, clear errors for missing/corrupt files, the
// atomic write protocol, the completeness test, and h5py reading what we write.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/io/atomic_file.h"
#include "experiments/h5file.h"

namespace fs = std::filesystem;
using nns::exp::h5::File;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("nns_h5_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The message of the std::runtime_error thrown by f ("" when none is thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

// A file with one of everything, used by several tests.
void fill_sample(File& f) {
  f.attr("/", "format", "nnsplitter-run-1");
  f.attr("/", "seed", int64_t{42});
  f.attr("/", "threads", 4);  // int goes through the integral template
  f.attr("/", "config", std::string("name: t\nseed: 42\n"));
  f.write("accuracy/original", 0.9375, "fraction");
  f.write("weights/obfuscated_total", int64_t{1234}, "count");
  f.write("weights/layer_names", std::vector<std::string>{"conv1", "layer1.0.conv1", "fc"});
  f.write("weights/eligible_per_layer", std::vector<int64_t>{1728, 36864, 5120}, "count");
  f.write("search/trajectory/reward", std::vector<double>{-0.5, -0.25, -0.125}, "1");
  f.write("stealth/matrix", std::vector<double>{1, 2, 3, 4, 5, 6}, "1", {2, 3});
  f.write("search/trajectory/filters", std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},
          "count", {2, 3, 2});
  f.attr("search", "clamp_lo", -0.05);
  f.attr("search", "policy", "lstm");
  f.attr("accuracy/original", "note", "test split");
}

TEST(H5File, RoundTripsEveryType) {
  fs::path dir = temp_dir("roundtrip");
  std::string path = (dir / "r.h5").string();
  {
    File f = File::create(path);
    fill_sample(f);
    f.write("victim/train_loss", std::vector<double>{}, "1");  // empty (loaded victim)
    f.write("strings/empty", std::vector<std::string>{});
    f.write("strings/utf8", std::vector<std::string>{"α-β", "", "naïve ✓"});
    f.write("ints/extremes",
            std::vector<int64_t>{std::numeric_limits<int64_t>::min(), -1, 0,
                                 std::numeric_limits<int64_t>::max()},
            "1");
    f.write("scalars/size_t", size_t{7}, "count");
    f.write("scalars/bool", true, "1");
    f.write("scalars/nan", std::nan(""), "1");
    f.close();
    f.close();  // idempotent
  }
  File f = File::open_read(path);
  EXPECT_EQ(f.path(), path);

  // Scalars: scalar dataspaces.
  EXPECT_EQ(f.shape("accuracy/original"), std::vector<int64_t>{});
  EXPECT_DOUBLE_EQ(f.read_double("accuracy/original"), 0.9375);
  EXPECT_DOUBLE_EQ(f.read_double("/accuracy/original"), 0.9375);  // leading slash optional
  EXPECT_EQ(f.read_ints("weights/obfuscated_total"), std::vector<int64_t>{1234});
  EXPECT_DOUBLE_EQ(f.read_double("weights/obfuscated_total"), 1234.0);  // ints read as doubles
  EXPECT_EQ(f.read_ints("scalars/size_t"), std::vector<int64_t>{7});
  EXPECT_EQ(f.read_ints("scalars/bool"), std::vector<int64_t>{1});
  EXPECT_TRUE(std::isnan(f.read_double("scalars/nan")));

  // 1-D, 2-D, 3-D.
  EXPECT_EQ(f.shape("search/trajectory/reward"), std::vector<int64_t>{3});
  EXPECT_EQ(f.read_doubles("search/trajectory/reward"), (std::vector<double>{-0.5, -0.25, -0.125}));
  EXPECT_EQ(f.read_ints("weights/eligible_per_layer"), (std::vector<int64_t>{1728, 36864, 5120}));
  EXPECT_EQ(f.shape("stealth/matrix"), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.read_doubles("stealth/matrix"), (std::vector<double>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(f.shape("search/trajectory/filters"), (std::vector<int64_t>{2, 3, 2}));
  std::vector<int64_t> iota(12);
  for (int i = 0; i < 12; ++i) iota[i] = i;
  EXPECT_EQ(f.read_ints("search/trajectory/filters"), iota);
  EXPECT_EQ(f.read_ints("ints/extremes"),
            (std::vector<int64_t>{std::numeric_limits<int64_t>::min(), -1, 0,
                                  std::numeric_limits<int64_t>::max()}));
  EXPECT_EQ(f.shape("victim/train_loss"), std::vector<int64_t>{0});
  EXPECT_TRUE(f.read_doubles("victim/train_loss").empty());

  // Strings.
  EXPECT_EQ(f.read_strings("weights/layer_names"),
            (std::vector<std::string>{"conv1", "layer1.0.conv1", "fc"}));
  EXPECT_EQ(f.read_strings("strings/utf8"), (std::vector<std::string>{"α-β", "", "naïve ✓"}));
  EXPECT_TRUE(f.read_strings("strings/empty").empty());

  // Units on every dataset.
  EXPECT_EQ(f.attr_string("accuracy/original", "units"), "fraction");
  EXPECT_EQ(f.attr_string("weights/obfuscated_total", "units"), "count");
  EXPECT_EQ(f.attr_string("weights/layer_names", "units"), "string");
  EXPECT_EQ(f.attr_string("stealth/matrix", "units"), "1");
  EXPECT_EQ(f.attr_string("search/trajectory/filters", "units"), "count");

  // Attributes at the root, on a group, on a dataset.
  EXPECT_EQ(f.attr_string("/", "format"), "nnsplitter-run-1");
  EXPECT_EQ(f.attr_int("/", "seed"), 42);
  EXPECT_EQ(f.attr_int("/", "threads"), 4);
  EXPECT_DOUBLE_EQ(f.attr_double("/", "seed"), 42.0);
  EXPECT_EQ(f.attr_string("/", "config"), "name: t\nseed: 42\n");
  EXPECT_DOUBLE_EQ(f.attr_double("search", "clamp_lo"), -0.05);
  EXPECT_EQ(f.attr_string("/search", "policy"), "lstm");
  EXPECT_EQ(f.attr_string("accuracy/original", "note"), "test split");
  EXPECT_TRUE(f.has_attr("/", "format"));
  EXPECT_TRUE(f.has_attr("search", "clamp_lo"));
  EXPECT_FALSE(f.has_attr("search", "clamp_hi"));
  EXPECT_FALSE(f.has_attr("no/such/group", "x"));

  // Structure.
  EXPECT_TRUE(f.exists("/"));
  EXPECT_TRUE(f.exists("search"));
  EXPECT_TRUE(f.exists("search/trajectory/reward"));
  EXPECT_FALSE(f.exists("search/trajectory/nope"));
  EXPECT_FALSE(f.exists("attacks/norm_clip/k"));      // missing parent
  EXPECT_FALSE(f.exists("accuracy/original/child"));  // a dataset has no children
  EXPECT_EQ(f.list("/"), (std::vector<std::string>{"accuracy", "ints", "scalars", "search",
                                                   "stealth", "strings", "victim", "weights"}));
  EXPECT_EQ(f.list("search/trajectory"), (std::vector<std::string>{"filters", "reward"}));
  fs::remove_all(dir);
}

TEST(H5File, RewritingReplaces) {
  fs::path dir = temp_dir("rewrite");
  std::string path = (dir / "r.h5").string();
  File f = File::create(path);
  f.write("a/x", 1.0, "1");
  f.write("a/x", std::vector<double>{1, 2}, "fraction");
  f.attr("a", "k", "one");
  f.attr("a", "k", int64_t{2});
  EXPECT_EQ(f.read_doubles("a/x"), (std::vector<double>{1, 2}));
  EXPECT_EQ(f.attr_string("a/x", "units"), "fraction");
  EXPECT_EQ(f.attr_int("a", "k"), 2);
  f.close();
  fs::remove_all(dir);
}

TEST(H5File, ReadErrorsNameFileObjectAndProblem) {
  fs::path dir = temp_dir("readerr");
  std::string path = (dir / "r.h5").string();
  {
    File f = File::create(path);
    fill_sample(f);
  }
  File f = File::open_read(path);
  std::string e = error_of([&] { f.read_doubles("accuracy/missing"); });
  EXPECT_TRUE(contains(e, path)) << e;
  EXPECT_TRUE(contains(e, "/accuracy/missing")) << e;
  EXPECT_TRUE(contains(e, "no such dataset")) << e;

  e = error_of([&] { f.read_double("search/trajectory/reward"); });
  EXPECT_TRUE(contains(e, "expected a scalar or 1 element, got shape [3]")) << e;

  e = error_of([&] { f.read_ints("search/trajectory/reward"); });
  EXPECT_TRUE(contains(e, "not an integer dataset")) << e;

  e = error_of([&] { f.read_doubles("weights/layer_names"); });
  EXPECT_TRUE(contains(e, "not a numeric dataset")) << e;

  e = error_of([&] { f.read_strings("accuracy/original"); });
  EXPECT_TRUE(contains(e, "not a string type")) << e;

  e = error_of([&] { f.attr_string("/", "nope"); });
  EXPECT_TRUE(contains(e, "attribute 'nope'")) << e;
  EXPECT_TRUE(contains(e, "no such attribute")) << e;

  e = error_of([&] { f.attr_int("search", "clamp_lo"); });
  EXPECT_TRUE(contains(e, "not an integer")) << e;

  e = error_of([&] { f.list("nope"); });
  EXPECT_TRUE(contains(e, "no such group")) << e;

  // Writing into a read-only file fails with a message, not a crash.
  e = error_of([&] { f.write("x", 1.0, "1"); });
  EXPECT_TRUE(contains(e, path) && contains(e, "/x")) << e;

  f.close();
  e = error_of([&] { f.read_double("accuracy/original"); });
  EXPECT_TRUE(contains(e, "closed")) << e;
  fs::remove_all(dir);
}

TEST(H5File, WriteErrors) {
  fs::path dir = temp_dir("writeerr");
  std::string path = (dir / "w.h5").string();
  File f = File::create(path);
  std::string e = error_of([&] { f.write("m", std::vector<double>{1, 2, 3}, "1", {2, 2}); });
  EXPECT_TRUE(contains(e, "shape [2, 2] holds 4 values, got 3")) << e;
  EXPECT_TRUE(contains(e, "/m")) << e;
  e = error_of([&] { f.write("m", std::vector<int64_t>{1}, "1", {-1}); });
  EXPECT_TRUE(contains(e, "negative dimension")) << e;
  f.write("d", 1.0, "1");
  e = error_of([&] { f.write("d/child", 1.0, "1"); });  // a dataset cannot hold children
  EXPECT_TRUE(contains(e, path) && contains(e, "/d/child")) << e;
  e = error_of([] { File::create("/nonexistent-dir-nns/x.h5"); });
  EXPECT_TRUE(contains(e, "/nonexistent-dir-nns/x.h5")) << e;
  EXPECT_TRUE(contains(e, "does not exist")) << e;
  f.close();
  fs::remove_all(dir);
}

TEST(H5File, MissingAndCorruptFilesGiveClearErrors) {
  fs::path dir = temp_dir("corrupt");
  std::string missing = (dir / "missing.h5").string();
  std::string e = error_of([&] { File::open_read(missing); });
  EXPECT_TRUE(contains(e, missing)) << e;
  EXPECT_TRUE(contains(e, "no such file")) << e;

  std::string garbage = (dir / "garbage.h5").string();
  write_bytes(garbage, std::string(4096, 'x'));
  e = error_of([&] { File::open_read(garbage); });
  EXPECT_TRUE(contains(e, garbage)) << e;
  EXPECT_TRUE(contains(e, "not an HDF5 file")) << e;

  std::string empty = (dir / "empty.h5").string();
  write_bytes(empty, "");
  e = error_of([&] { File::open_read(empty); });
  EXPECT_TRUE(contains(e, empty)) << e;

  // A real file cut in half.
  std::string real = (dir / "real.h5").string();
  {
    File f = File::create(real);
    fill_sample(f);
    f.write("big", std::vector<double>(20000, 0.5), "1");
  }
  std::string bytes = read_bytes(real);
  ASSERT_GT(bytes.size(), 100000u);
  std::string half = (dir / "half.h5").string();
  write_bytes(half, bytes.substr(0, bytes.size() / 2));
  e = error_of([&] { File::open_read(half); });
  EXPECT_TRUE(contains(e, half)) << e;
  EXPECT_TRUE(contains(e, "truncated")) << e;

  EXPECT_FALSE(nns::exp::h5::is_complete_result(missing));
  EXPECT_FALSE(nns::exp::h5::is_complete_result(garbage));
  EXPECT_FALSE(nns::exp::h5::is_complete_result(empty));
  EXPECT_FALSE(nns::exp::h5::is_complete_result(half));
  EXPECT_FALSE(nns::exp::h5::is_complete_result(dir.string()));  // a directory
  EXPECT_TRUE(nns::exp::h5::is_complete_result(real));
  fs::remove_all(dir);
}

TEST(H5File, WriteAtomically) {
  fs::path dir = temp_dir("atomic");
  std::string path = (dir / "run.h5").string();
  // The temporary files of the writer (core/io/atomic_file.h) in `dir`.
  auto temporaries = [&] {
    int n = 0;
    for (auto& e : fs::directory_iterator(dir))
      n += nns::io::is_temporary_name(e.path().filename().string());
    return n;
  };

  nns::exp::h5::write_atomically(path, [](File& f) { fill_sample(f); });
  EXPECT_TRUE(fs::exists(path));
  EXPECT_EQ(temporaries(), 0);
  EXPECT_TRUE(nns::exp::h5::is_complete_result(path));
  const std::string before = read_bytes(path);

  // A fill that throws halfway: the exception propagates, no temporary remains, and the
  // existing file is byte-identical. (The file is built in memory: nothing is on disk yet
  // while it is filled.)
  EXPECT_THROW(nns::exp::h5::write_atomically(path,
                                              [&](File& f) {
                                                f.attr("/", "format", "nnsplitter-run-1");
                                                f.write("accuracy/original", 0.1, "fraction");
                                                EXPECT_EQ(temporaries(), 0);
                                                throw std::runtime_error("interrupted");
                                              }),
               std::runtime_error);
  EXPECT_EQ(temporaries(), 0);
  EXPECT_EQ(read_bytes(path), before);

  // An HDF5 error inside the fill behaves the same.
  std::string e = error_of([&] {
    nns::exp::h5::write_atomically(path,
                                   [](File& f) { f.write("m", std::vector<double>{1}, "1", {3}); });
  });
  EXPECT_TRUE(contains(e, "HDF5 file '" + path + "'")) << e;  // names the file being written
  EXPECT_EQ(temporaries(), 0);
  EXPECT_EQ(read_bytes(path), before);

  // A failed first write leaves nothing behind.
  std::string fresh = (dir / "fresh.h5").string();
  EXPECT_THROW(nns::exp::h5::write_atomically(fresh, [](File&) { throw std::runtime_error("x"); }),
               std::runtime_error);
  EXPECT_FALSE(fs::exists(fresh));
  EXPECT_EQ(temporaries(), 0);

  // Whole HDF5 files without the format attribute are not results.
  std::string other = (dir / "other.h5").string();
  nns::exp::h5::write_atomically(other, [](File& f) { f.write("x", 1.0, "1"); });
  EXPECT_FALSE(nns::exp::h5::is_complete_result(other));
  fs::remove_all(dir);
}

// h5py (Debian python3-h5py) reads what we write: values, shapes, dtypes, units, attributes.
TEST(H5File, H5pyReadsOurFiles) {
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "HINT: /usr/bin/python3 with h5py not available (apt-get install python3-h5py)";
  fs::path dir = temp_dir("h5py");
  std::string path = (dir / "run.h5").string();
  nns::exp::h5::write_atomically(path, [](File& f) {
    fill_sample(f);
    f.write("victim/train_loss", std::vector<double>{}, "1");
  });
  fs::path script = dir / "check.py";
  {
    std::ofstream py(script);
    py << R"PY(import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    a = f.attrs
    assert a["format"] == "nnsplitter-run-1", a["format"]
    assert a["seed"] == 42 and a["seed"].dtype == np.int64, a["seed"]
    assert a["threads"] == 4
    assert a["config"] == "name: t\nseed: 42\n", repr(a["config"])
    d = f["accuracy/original"]
    assert d.shape == () and d.dtype == np.float64 and d[()] == 0.9375, d
    assert d.attrs["units"] == "fraction"
    assert d.attrs["note"] == "test split"
    t = f["weights/obfuscated_total"]
    assert t.shape == () and t.dtype == np.int64 and t[()] == 1234 and t.attrs["units"] == "count"
    names = f["weights/layer_names"]
    assert h5py.check_string_dtype(names.dtype).encoding == "utf-8"
    assert list(names.asstr()[:]) == ["conv1", "layer1.0.conv1", "fc"]
    assert names.attrs["units"] == "string"
    assert list(f["weights/eligible_per_layer"][:]) == [1728, 36864, 5120]
    assert np.array_equal(f["search/trajectory/reward"][:], [-0.5, -0.25, -0.125])
    m = f["stealth/matrix"][:]
    assert m.shape == (2, 3) and np.array_equal(m, [[1, 2, 3], [4, 5, 6]]), m
    fl = f["search/trajectory/filters"][:]
    assert fl.shape == (2, 3, 2) and fl[1, 2, 1] == 11 and fl[0, 1, 0] == 2, fl
    assert f["search"].attrs["clamp_lo"] == -0.05
    assert f["search"].attrs["policy"] == "lstm"
    assert f["victim/train_loss"].shape == (0,)
    for name, obj in f.items():
        pass
    def units(name, obj):
        if isinstance(obj, h5py.Dataset):
            assert "units" in obj.attrs, name
    f.visititems(units)
print("h5py ok")
)PY";
  }
  std::string cmd = "/usr/bin/python3 " + script.string() + " " + path;
  int st = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(st)) << cmd;
  EXPECT_EQ(WEXITSTATUS(st), 0) << cmd;
  fs::remove_all(dir);
}

// What h5py writes, we read (fixed-length strings, other numeric types, ASCII attributes).
TEST(H5File, ReadsH5pyFiles) {
  if (std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "HINT: /usr/bin/python3 with h5py not available (apt-get install python3-h5py)";
  fs::path dir = temp_dir("fromh5py");
  std::string path = (dir / "py.h5").string();
  std::string cmd =
      "/usr/bin/python3 -c '\n"
      "import sys, h5py, numpy as np\n"
      "with h5py.File(sys.argv[1], \"w\") as f:\n"
      "    f.attrs[\"format\"] = \"nnsplitter-summary-1\"\n"
      "    f.attrs[\"runs\"] = np.int32(3)\n"
      "    f.attrs[\"fixed\"] = np.bytes_(b\"abc\")\n"
      "    f[\"runs/name\"] = np.array([b\"a\", b\"bcd\"], dtype=\"S4\")\n"
      "    f[\"runs/vname\"] = np.array([\"x\", \"yz\"], dtype=h5py.string_dtype())\n"
      "    f[\"runs/f32\"] = np.array([0.5, 0.25], dtype=np.float32)\n"
      "    f[\"runs/u8\"] = np.array([1, 200], dtype=np.uint8)\n"
      "' " +
      path;
  int st = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << cmd;
  File f = File::open_read(path);
  EXPECT_EQ(f.attr_string("/", "format"), "nnsplitter-summary-1");
  EXPECT_EQ(f.attr_int("/", "runs"), 3);
  EXPECT_EQ(f.attr_string("/", "fixed"), "abc");
  EXPECT_EQ(f.read_strings("runs/name"), (std::vector<std::string>{"a", "bcd"}));
  EXPECT_EQ(f.read_strings("runs/vname"), (std::vector<std::string>{"x", "yz"}));
  EXPECT_EQ(f.read_doubles("runs/f32"), (std::vector<double>{0.5, 0.25}));
  EXPECT_EQ(f.read_ints("runs/u8"), (std::vector<int64_t>{1, 200}));
  EXPECT_TRUE(nns::exp::h5::is_complete_result(path));
  f.close();
  fs::remove_all(dir);
}

}  // namespace
