// The typed errors of embedrt (docs/architecture.md, "Errors").
//
// Every failure a caller can see is a `caf::error` in the "embedrt" category
// with one of these codes. The error's context is always the triple
// (std::string detail, int32_t http_status, int64_t retry_after_ms) so that it
// crosses CAF nodes unchanged and a gateway can map it to an HTTP response:
// - detail: a human-readable message (never a secret);
// - http_status: the upstream's HTTP status for `upstream_error` (0 if none);
// - retry_after_ms: time until a retry can succeed for `breaker_open`,
//   `rate_limited`, `upstream_down`, `overloaded` (0 if unknown).
#pragma once

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/make_message.hpp>
#include <caf/message.hpp>
#include <chrono>
#include <cstdint>
#include <string>

namespace embedrt {

enum class errc : uint8_t {
  /// Not an error (CAF reserves code 0).
  none = 0,
  /// The caller's input is invalid (empty text, invalid UTF-8, limits, ...).
  invalid_input,
  /// The bounded queue is full: rejected at once.
  overloaded,
  /// The upstream's circuit breaker is open; retry_after_ms says for how long.
  breaker_open,
  /// The caller's deadline passed before a response arrived.
  deadline_exceeded,
  /// The upstream answered 429 rate_limit_exceeded and retries ran out.
  rate_limited,
  /// The upstream answered 429 insufficient_quota (not retried).
  quota_exceeded,
  /// The upstream answered 401 or 403 (not retried).
  auth_failed,
  /// The upstream answered another non-success status (status kept).
  upstream_error,
  /// The upstream's response failed validation.
  invalid_response,
  /// Connecting, sending or receiving failed (after retries).
  connection_failed,
  /// The TLS handshake or certificate verification failed.
  tls_failed,
  /// The request was cancelled (e.g. shutdown).
  cancelled,
  /// A remote node that held the request went away.
  node_down,
  /// Every connection of the upstream failed beyond its restart intensity.
  upstream_down,
};

/// Returns the enum name, e.g. "breaker_open".
const char* to_string(errc x);

/// Parses a name produced by `to_string(errc)`; returns `errc::none` if the
/// name is unknown.
errc errc_from_string(const std::string& name);

/// The CAF error category atom of embedrt errors ("embedrt").
caf::atom_value error_category();

/// Creates an embedrt error with the standard context triple.
caf::error make_error(errc code, std::string detail, int32_t http_status = 0,
                      std::chrono::milliseconds retry_after
                      = std::chrono::milliseconds{0});

/// Returns the code if `err` is an embedrt error, `errc::none` otherwise.
errc error_code(const caf::error& err);

/// Returns the detail message of an embedrt error, or CAF's rendering of any
/// other error.
std::string error_detail(const caf::error& err);

/// Returns the upstream HTTP status kept in an embedrt error, or 0.
int32_t error_http_status(const caf::error& err);

/// Returns the retry-after hint kept in an embedrt error, or 0.
std::chrono::milliseconds error_retry_after(const caf::error& err);

/// Renders an error as "embedrt.<code>: <detail>" (for logs and CAF's
/// renderer); other categories are rendered by CAF.
std::string render_error(const caf::error& err);

} // namespace embedrt

CAF_ERROR_CODE_ENUM(embedrt::errc, "embedrt")
