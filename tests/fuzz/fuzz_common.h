// Shared by the libFuzzer harnesses (one fuzz_<name>.cpp per reader of outside bytes).
//
// The contract every reader must keep for ANY input: return a result, or throw
// std::runtime_error (ConfigError included) whose message starts with the name it was given for
// the file. Anything else is a finding: a crash or sanitizer report, a hang (-timeout), an
// allocation beyond -rss_limit_mb / -malloc_limit_mb, another exception type escaping
// (std::bad_alloc, std::out_of_range, nlohmann's type_error: libFuzzer reports the abort), or
// an error that does not name the file (trapped below).
#pragma once

#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include <zlib.h>

namespace nns::fuzz {

// Traps unless the error names the file (the message starts with `name`).
inline void expect_named(const std::runtime_error& e, const std::string& name) {
  const std::string what = e.what();
  if (what.rfind(name, 0) != 0) {
    std::fprintf(stderr, "error message does not start with '%s': %s\n", name.c_str(), e.what());
    __builtin_trap();
  }
}

// Traps when a harness invariant fails (a result that contradicts its own header).
inline void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "harness invariant failed: %s\n", what);
    __builtin_trap();
  }
}

// gzip of `in` (one member), so that a harness can let the fuzzer mutate the content of a
// gzipped file rather than its deflate stream.
inline std::vector<uint8_t> gzip_bytes(const uint8_t* in, size_t n, int level) {
  z_stream zs{};
  expect(deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK,
         "deflateInit2");
  std::vector<uint8_t> out(deflateBound(&zs, uLong(n)) + 32);
  zs.next_in = const_cast<Bytef*>(in);
  zs.avail_in = uInt(n);
  zs.next_out = out.data();
  zs.avail_out = uInt(out.size());
  expect(deflate(&zs, Z_FINISH) == Z_STREAM_END, "deflate");
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

}  // namespace nns::fuzz
