#include "serve/cors.hpp"

#include <algorithm>
#include <utility>

namespace embedrt::serve {

namespace {

/// What a browser asks for in a preflight and may send afterwards.
constexpr const char* allowed_methods = "GET, POST, HEAD, OPTIONS";
/// Headers the client sends when the preflight names none.
constexpr const char* default_allowed_headers
    = "authorization, content-type, content-encoding, x-request-id, "
      "x-embedrt-timeout-ms";
/// Response headers a script may read.
constexpr const char* exposed_headers
    = "x-request-id, retry-after, retry-after-ms";
/// How long a browser may cache a preflight (seconds).
constexpr const char* max_age = "600";

/// Header values may not carry control characters; a preflight's list of
/// header names is echoed only if it is a plain token list.
bool plain_header_list(std::string_view s) {
  return s.size() <= 2048 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
               || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == ','
               || c == ' ';
         });
}

} // namespace

cors_policy::cors_policy(std::vector<std::string> origins)
    : origins_(std::move(origins)) {
  any_ = std::find(origins_.begin(), origins_.end(), "*") != origins_.end();
}

std::string cors_policy::allow_origin(std::string_view origin) const {
  if (!enabled() || origin.empty())
    return {};
  if (any_)
    return "*";
  for (const auto& o : origins_)
    if (o == origin)
      return o;
  return {};
}

front_reply cors_policy::preflight(const front_request& req) const {
  auto allow = allow_origin(req.origin);
  if (allow.empty()) {
    auto r = error_reply(403,
                         req.origin.empty()
                             ? "CORS preflight without an Origin header"
                             : "Origin '" + req.origin.substr(0, 200)
                                 + "' is not allowed (cors_origins)",
                         "invalid_request_error", "origin_not_allowed");
    if (!any_)
      r.headers.emplace_back("vary", "Origin");
    return r;
  }
  front_reply r;
  r.status = 204;
  r.content_type.clear();
  r.headers.emplace_back("access-control-allow-origin", allow);
  r.headers.emplace_back("access-control-allow-methods", allowed_methods);
  const auto& asked = req.cors_request_headers;
  r.headers.emplace_back("access-control-allow-headers",
                         !asked.empty() && plain_header_list(asked)
                             ? asked
                             : std::string{default_allowed_headers});
  r.headers.emplace_back("access-control-max-age", max_age);
  if (!any_)
    r.headers.emplace_back("vary", "Origin");
  return r;
}

void cors_policy::decorate(std::string_view origin, front_reply& r) const {
  if (!enabled())
    return;
  if (!any_)
    r.headers.emplace_back("vary", "Origin");
  auto allow = allow_origin(origin);
  if (allow.empty())
    return;
  r.headers.emplace_back("access-control-allow-origin", allow);
  r.headers.emplace_back("access-control-expose-headers", exposed_headers);
}

} // namespace embedrt::serve
