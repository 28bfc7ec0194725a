// Numbers as decimal text, for JSON bodies and error details (internal to
// embedrt_protocol).
#pragma once

#include <charconv>
#include <cmath>
#include <string>
#include <string_view>
#include <type_traits>

namespace embedrt::detail {

/// Appends the decimal digits of `value`.
template <class Int>
void append_int(std::string& out, Int value) {
  char buf[24];
  auto res = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, res.ptr);
}

/// Appends the shortest representation that reads back as the same float32.
/// JSON has no NaN or infinity; a server never sends them, and if one slips
/// into a vector it is written as null, which every strict client rejects.
inline void append_float(std::string& out, float value) {
  if (!std::isfinite(value)) {
    out.append("null");
    return;
  }
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, res.ptr);
}

/// Concatenates text and integers (as decimal digits), as in
/// `concat("input[", i, "] is too large: ", size, " bytes")`.
template <class... Ts>
std::string concat(const Ts&... xs) {
  std::string out;
  auto append = [&out](const auto& x) {
    using T = std::decay_t<decltype(x)>;
    if constexpr (std::is_same_v<T, char>)
      out.push_back(x);
    else if constexpr (std::is_integral_v<T>)
      append_int(out, x);
    else
      out.append(std::string_view{x});
  };
  (append(xs), ...);
  return out;
}

} // namespace embedrt::detail
