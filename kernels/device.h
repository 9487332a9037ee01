// Devices a tensor or an op can live on, and what this build and machine offer.
#pragma once

#include <cstdint>
#include <string>

namespace nns {

enum class Device : uint8_t { CPU = 0, CUDA = 1 };

const char* device_name(Device d);

// True when this binary was built with the CUDA backend.
bool cuda_compiled();
// Number of usable CUDA devices (0 when not compiled in, or no driver/device).
int cuda_device_count();
// A one-line description of why CUDA is unusable, or "" when it is usable.
std::string cuda_unavailable_reason();

// Parses "cpu", "cuda" or "auto" (auto = CUDA when a device exists, else CPU). Throws
// std::invalid_argument for anything else, and std::runtime_error when "cuda" is asked for and
// no device is usable.
Device parse_device(const std::string& name);

}  // namespace nns
