#include "core/io/strict_number.h"

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

namespace nns::io {

std::optional<int64_t> parse_strict_int(std::string_view s) {
  // from_chars takes a '-' but no '+': a '+' is dropped here, and must be followed by a digit.
  const bool plus = !s.empty() && s.front() == '+';
  if (plus) s.remove_prefix(1);
  if (s.empty() || !((!plus && s.front() == '-') || (s.front() >= '0' && s.front() <= '9')))
    return std::nullopt;
  int64_t v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v, 10);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<int64_t> parse_strict_int(std::string_view s, int64_t lo, int64_t hi) {
  auto v = parse_strict_int(s);
  if (!v || *v < lo || *v > hi) return std::nullopt;
  return v;
}

std::optional<double> parse_strict_double(std::string_view s) {
  if (s.empty()) return std::nullopt;
  // strtod skips leading white space and reads "inf", "nan(...)", "infinity": the first
  // character must start a number ('+', '-', a digit or '.'), and what it reads must be finite.
  const char c = s.front();
  if (!(c == '+' || c == '-' || c == '.' || (c >= '0' && c <= '9'))) return std::nullopt;
  if ((c == '+' || c == '-') && s.size() > 1 && !(s[1] == '.' || (s[1] >= '0' && s[1] <= '9')))
    return std::nullopt;
  const std::string text(s);  // strtod needs a terminating NUL
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || errno == ERANGE || !std::isfinite(v))
    return std::nullopt;
  return v;
}

}  // namespace nns::io
