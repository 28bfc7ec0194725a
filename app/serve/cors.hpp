// Cross-origin requests to `embedrt serve` (browsers; off by default): the
// `cors_origins` of the configuration, the preflight reply and the headers
// an actual reply gets. No CAF, no Beast.
#pragma once

#include "serve/http_front.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace embedrt::serve {

class cors_policy {
 public:
  cors_policy() = default;
  /// Allowed origins as browsers send them ("https://app.example.com"),
  /// or "*" for any; empty: CORS is off.
  explicit cors_policy(std::vector<std::string> origins);

  bool enabled() const noexcept {
    return !origins_.empty();
  }

  /// The `Access-Control-Allow-Origin` value for a request from `origin`:
  /// "*" when any origin is allowed, the origin itself when it is listed,
  /// "" when it is not (or CORS is off, or there is no Origin header).
  std::string allow_origin(std::string_view origin) const;

  /// The reply to `OPTIONS` (a preflight): 204 with the
  /// Access-Control-Allow-* headers for an allowed origin, 403
  /// `origin_not_allowed` for another one. Only while enabled().
  front_reply preflight(const front_request& req) const;

  /// Adds Access-Control-Allow-Origin (and Expose-Headers, Vary) to the
  /// reply of an actual request from an allowed origin; nothing otherwise.
  void decorate(std::string_view origin, front_reply& r) const;

 private:
  std::vector<std::string> origins_;
  bool any_ = false;
};

} // namespace embedrt::serve
