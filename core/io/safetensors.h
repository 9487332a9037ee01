// Safetensors weight files (SPEC.md §5, MODELS.md "Safetensors files").
//
// Layout: 8-byte little-endian header length N, N bytes of JSON (padded with spaces so that
// 8 + N is a multiple of 8), then the raw little-endian tensor bytes. Header entries are
// {"dtype": ..., "shape": [...], "data_offsets": [begin, end]} with offsets relative to the end
// of the header, plus an optional "__metadata__" object of string values.
//
// The reader validates everything (header bounds, JSON and its nesting depth, duplicate names,
// field types, dtypes, dimensions, sizes against shapes, overlaps, gaps, truncation, trailing
// bytes). Every error is a std::runtime_error whose message starts with "<path>: " and says
// precisely what is wrong.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace nns::io {

// Headers longer than this are rejected before anything is allocated for them (same limit as
// the reference Rust implementation).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;
// A tensor of more dimensions is refused (ours have at most 4; a shape of millions of zeros
// would otherwise describe an empty tensor with a huge shape vector).
inline constexpr size_t kSafetensorsMaxDims = 64;
// The header JSON may nest at most io::kMaxJsonDepth levels (json_bounded.h; ours uses 3).

struct SafetensorsFile {
  std::vector<std::pair<std::string, Tensor>> tensors;  // in file order (sorted by data offset)
  std::map<std::string, std::string> metadata;          // "__metadata__" (string values)
  const Tensor* find(const std::string& key) const;     // nullptr when absent
};

// Reads and validates. F32 stays F32; F16 and BF16 are converted to F32; I64, I32 and U8 are
// kept as such. Any other dtype (F64, BOOL, I8, ...) is an error naming the tensor and dtype.
// Tensors are on the CPU.
SafetensorsFile read_safetensors(const std::string& path);
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& name_for_errors);

// Writes atomically through core/io/atomic_file.h (a temporary file in the same folder, fsync,
// rename over `path`, fsync of the folder; on failure `path` is untouched and no temporary file
// is left). Tensors are stored in the given order without gaps; the header JSON is padded with
// spaces so that 8 + header length is a multiple of 8; metadata goes to "__metadata__" (omitted
// when empty). CUDA tensors are copied to the CPU.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                       const std::map<std::string, std::string>& metadata);
// The bytes write_safetensors would write. name_for_errors prefixes error messages.
std::string serialize_safetensors(const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                                  const std::map<std::string, std::string>& metadata,
                                  const std::string& name_for_errors = "<safetensors>");

// IEEE half and bfloat16 bit patterns to float (exact; subnormals, infinities, NaN and signed
// zeros preserved). Exposed for tests.
float f16_to_f32(uint16_t h);
float bf16_to_f32(uint16_t b);

}  // namespace nns::io
