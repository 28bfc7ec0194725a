// Options of the built-in OpenAI-compatible upstream (`embedrt mock`) and the
// parsers of their textual forms (command line). Free of CAF and Beast.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace embedrt::mock {

/// The result of parsing an option: a value, or a clear error message that
/// names what was wrong (never both).
template <class T>
struct parse_result {
  std::optional<T> value;
  std::string error;

  static parse_result ok(T x) {
    return parse_result{std::move(x), {}};
  }

  static parse_result fail(std::string msg) {
    return parse_result{std::nullopt, std::move(msg)};
  }

  explicit operator bool() const noexcept {
    return value.has_value();
  }
};

/// What the mock does instead of (or to) a normal answer.
enum class fault_kind : uint8_t {
  none,
  /// An OpenAI-shaped error with `status` (400-599, not 429); 5xx have type
  /// server_error, 4xx invalid_request_error.
  status,
  /// 429 rate_limit_exceeded with `retry-after` and `retry-after-ms`.
  rate_limit,
  /// 429 insufficient_quota, no retry-after.
  quota,
  /// Reads the request and never answers (the socket stays open until the
  /// client closes it or the server stops).
  hang,
  /// Sends the status line and part of the response, then aborts the TCP
  /// connection with RST.
  reset,
  /// 200 with a body that is not valid JSON (a truncated response).
  malformed,
  /// 200 where one vector has a different dimension.
  baddims,
  /// 200 where one value is NaN.
  nan,
  /// A normal 200 sent with `Connection: close`; then the server closes.
  close,
};

/// One fault: a kind and, for `fault_kind::status`, the HTTP status.
struct fault {
  fault_kind kind = fault_kind::none;
  int status = 0;

  friend bool operator==(const fault& a, const fault& b) {
    return a.kind == b.kind && a.status == b.status;
  }
  friend bool operator!=(const fault& a, const fault& b) {
    return !(a == b);
  }
};

/// The name of a fault as used on the command line, in `x-mock-fault` and in
/// the `faults` object of /stats: "500", "429", "quota", "hang", ...
std::string to_string(const fault& f);

/// Parses one fault kind: a status 400-599 ("429" is `rate_limit`) or one of
/// quota, hang, reset, malformed, baddims, nan, close.
parse_result<fault> parse_fault(std::string_view text);

/// A fault with the probability of hitting a request.
struct fault_rate {
  fault what;
  double probability = 0.0;
};

/// Parses a spec like "500:0.1,429:0.05,hang:0.02". Each rate is in [0, 1];
/// the sum must be <= 1 (a request draws one uniform number u and gets the
/// first fault whose cumulative rate exceeds u, so every fault hits with
/// exactly its own rate). Duplicate kinds are rejected.
parse_result<std::vector<fault_rate>> parse_fault_spec(std::string_view text);

/// How long the mock waits before answering an embeddings request.
struct latency_model {
  enum class shape : uint8_t { none, fixed, lognormal };
  shape kind = shape::none;
  /// For `fixed`.
  double fixed_ms = 0.0;
  /// For `lognormal`: median and 99th percentile; sigma is
  /// ln(p99 / median) / 2.3263.
  double median_ms = 0.0;
  double p99_ms = 0.0;
};

/// Parses "lognormal:MEDIAN_MS:P99_MS" (0 < median <= p99) or
/// "fixed:MS" / a bare "MS" (>= 0). Values may be fractional.
parse_result<latency_model> parse_latency_spec(std::string_view text);

/// Parses a listen address "HOST:PORT": an IPv4 literal, "[IPv6]" or
/// "localhost" (127.0.0.1); PORT 0 picks a free port.
struct listen_address {
  std::string host;
  uint16_t port = 0;
};
parse_result<listen_address> parse_listen(std::string_view text);

/// Everything that configures a mock_server.
struct mock_options {
  /// IP literal to bind (IPv4 or IPv6, without brackets).
  std::string host = "127.0.0.1";
  /// 0 picks a free port.
  uint16_t port = 0;
  /// I/O threads running the server's own io_context (>= 1).
  std::size_t threads = 1;
  latency_model latency;
  std::vector<fault_rate> faults;
  /// Seed of the fault and latency RNGs.
  uint64_t seed = 1;
  /// Requests per minute; 0 = unlimited.
  int64_t rpm = 0;
  /// Tokens per minute (estimated as in provider.hpp); 0 = unlimited.
  int64_t tpm = 0;
  /// PEM certificate chain and private key; both set = TLS.
  std::string tls_cert_file;
  std::string tls_key_file;
  /// Dimensions when a request does not ask for any.
  int32_t dims_default = 256;
  /// Largest accepted `dimensions`.
  int32_t dims_max = 4096;
  /// Largest request body; larger bodies get 413.
  std::size_t max_body_bytes = 16 * 1024 * 1024;
  /// Tokens (estimated as in provider.hpp) one request may carry in total;
  /// more -> 400 with OpenAI's `max_tokens_per_request` code.
  int64_t max_tokens_per_request = 300000;
  /// `retry-after-ms` of an injected 429.
  int64_t retry_after_ms = 20;
  /// If non-empty, responses report this model instead of echoing the
  /// request's.
  std::string model;
  /// Refuse `encoding_format: base64` with a 400 naming `encoding_format`
  /// (an upstream that only answers floats).
  bool refuse_base64 = false;

  bool tls() const noexcept {
    return !tls_cert_file.empty();
  }
};

/// Checks an options struct as a whole (ranges, TLS files given in pairs,
/// fault rates); returns an empty string if valid, else an error message.
std::string validate(const mock_options& opts);

} // namespace embedrt::mock
