// Numbers read from text that someone else wrote (weights and secrets metadata, configs,
// checkpoints, command-line values): the whole string is the number, or it is refused.
//
// std::stoi/stof/stod accept leading white space and stop at the first character they cannot
// use ("2junk" reads as 2, " 7" as 7) and stod accepts "inf" and "nan": read through them, a
// file saying `width_mult: "2junk"` was accepted. These refuse all of that.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace nns::io {

// A decimal integer: an optional sign ('-' or '+') and digits, nothing else (no white space,
// no "0x", no "1.0", no "1e3"), within int64. nullopt otherwise.
std::optional<int64_t> parse_strict_int(std::string_view s);

// A finite floating-point number as strtod reads it in the C locale (decimal or hexadecimal,
// an optional sign and exponent), taking the whole string: no white space, no trailing
// characters, no "inf"/"nan", no value that overflows a double. nullopt otherwise.
std::optional<double> parse_strict_double(std::string_view s);

// parse_strict_int within [lo, hi].
std::optional<int64_t> parse_strict_int(std::string_view s, int64_t lo, int64_t hi);

}  // namespace nns::io
