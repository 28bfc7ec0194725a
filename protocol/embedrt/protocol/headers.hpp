// Parsers for the HTTP response headers that steer retries and pacing:
// retry-after (seconds or HTTP-date), retry-after-ms, x-should-retry,
// x-ratelimit-{limit,remaining,reset}-{requests,tokens} and x-request-id.
//
// Every parser is total: a malformed value yields a `caf::error` of category
// embedrt (code `invalid_response`, detail names the header and the value);
// no exception escapes.
#pragma once

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace embedrt {

/// Parses a Go-style duration as used by OpenAI's x-ratelimit-reset-*:
/// a sequence of decimal numbers with units `h`, `m`, `s`, `ms`, `us`/`µs`,
/// `ns`, e.g. "1s", "6m0s", "12ms", "1h2m3.5s", "0.5s". A bare number is
/// read as seconds. Negative, empty or overflowing values are errors.
caf::expected<std::chrono::nanoseconds> parse_duration(std::string_view text);

/// Parses `retry-after`: delta-seconds ("120", also fractional "1.5") or an
/// HTTP-date (IMF-fixdate, RFC 850 and asctime forms), the latter relative to
/// `now` (a date in the past yields 0).
caf::expected<std::chrono::milliseconds>
parse_retry_after(std::string_view text,
                  std::chrono::system_clock::time_point now
                  = std::chrono::system_clock::now());

/// Parses `retry-after-ms`: a non-negative number of milliseconds (may be
/// fractional).
caf::expected<std::chrono::milliseconds>
parse_retry_after_ms(std::string_view text);

/// Parses `x-should-retry`: "true" or "false" (case-insensitive).
caf::expected<bool> parse_should_retry(std::string_view text);

/// Parses an HTTP-date into a time point (IMF-fixdate, RFC 850, asctime).
caf::expected<std::chrono::system_clock::time_point>
parse_http_date(std::string_view text);

/// Rate-limit state reported by the upstream (each field optional).
struct rate_limit_info {
  std::optional<int64_t> limit_requests;
  std::optional<int64_t> limit_tokens;
  std::optional<int64_t> remaining_requests;
  std::optional<int64_t> remaining_tokens;
  std::optional<std::chrono::nanoseconds> reset_requests;
  std::optional<std::chrono::nanoseconds> reset_tokens;
};

/// Everything the runtime reads from an upstream response's headers.
struct response_hints {
  /// From retry-after-ms if present and valid, else retry-after.
  std::optional<std::chrono::milliseconds> retry_after;
  std::optional<bool> should_retry;
  rate_limit_info rate_limit;
  std::string request_id;
  /// Malformed header values seen (header name and value, for a log line);
  /// a malformed value never aborts parsing of the others.
  std::string malformed;
};

/// Looks up a header by lower-case name; returns std::nullopt if absent.
using header_lookup
  = std::function<std::optional<std::string_view>(std::string_view name)>;

/// Extracts all hints from a response's headers.
response_hints parse_response_hints(const header_lookup& lookup,
                                    std::chrono::system_clock::time_point now
                                    = std::chrono::system_clock::now());

} // namespace embedrt
