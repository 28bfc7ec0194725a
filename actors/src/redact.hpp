// Keeps the API key out of everything derived from an upstream's answer: an
// upstream (or a proxy in front of it) may echo the Authorization or api-key
// header in an error message, which would otherwise reach error details,
// logs and replies. Runs on the connection actor, on failed exchanges only.
#pragma once

#include <string>
#include <string_view>

namespace embedrt::detail {

/// Replaces every occurrence of the secret carried by `auth_value` (an
/// Authorization value "Bearer KEY" or a bare api-key value) in `text` with
/// "[redacted]". Keys shorter than 8 characters are left alone (too short to
/// redact without mangling unrelated text).
inline void redact_secret(std::string& text, std::string_view auth_value) {
  constexpr std::string_view bearer = "Bearer ";
  if (auth_value.substr(0, bearer.size()) == bearer)
    auth_value.remove_prefix(bearer.size());
  if (auth_value.size() < 8 || text.size() < auth_value.size())
    return;
  constexpr std::string_view mark = "[redacted]";
  for (auto pos = text.find(auth_value); pos != std::string::npos;
       pos = text.find(auth_value, pos + mark.size()))
    text.replace(pos, auth_value.size(), mark);
}

} // namespace embedrt::detail
