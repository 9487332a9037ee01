// JSON from outside bytes, parsed with a nesting limit.
//
// nlohmann's parser is iterative, but dump(), copies and comparisons recurse once per level: a
// safetensors header holding an array nested 70,000 deep (a 140 KB file) parses, then
// overflows the stack as soon as an error message shows it. Every parse of bytes we did not
// write ourselves in this process goes through a depth check first: our own files are at most
// 3 levels deep (header object, entry object, shape array).
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace nns::io {

inline constexpr int kMaxJsonDepth = 64;

// For use inside an nlohmann parser callback: throws std::runtime_error
// "<name>: <what> is nested more than 64 levels deep" when `event` opens a level beyond
// kMaxJsonDepth (`depth` as nlohmann passes it: 0 for the outermost value).
inline void check_json_depth(int depth, nlohmann::json::parse_event_t event,
                             const std::string& name, const std::string& what) {
  using E = nlohmann::json::parse_event_t;
  if ((event == E::object_start || event == E::array_start) && depth >= kMaxJsonDepth)
    throw std::runtime_error(name + ": " + what + " is nested more than " +
                             std::to_string(kMaxJsonDepth) + " levels deep");
}

// nlohmann::json::parse of [begin, end) with the depth limit above. Syntax errors throw
// nlohmann's json::parse_error unchanged (callers word them); too deep throws
// std::runtime_error naming `name` and `what`.
inline nlohmann::json parse_json_bounded(const char* begin, const char* end,
                                         const std::string& name, const std::string& what) {
  return nlohmann::json::parse(
      begin, end, [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
        check_json_depth(depth, event, name, what);
        return true;
      });
}

inline nlohmann::json parse_json_bounded(const std::string& text, const std::string& name,
                                         const std::string& what) {
  return parse_json_bounded(text.data(), text.data() + text.size(), name, what);
}

}  // namespace nns::io
