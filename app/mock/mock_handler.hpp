// The request logic of the built-in upstream, free of sockets: turns one HTTP
// request into a reply (status, headers, body, delay) or a connection-level
// action (hang, reset). The server (mock_server.cpp) does the I/O.
//
// Thread-safe: the counters are atomics; the seeded RNGs and the rate limiter
// are guarded by one mutex held only for a few arithmetic operations.
#pragma once

#include "mock/mock_options.hpp"
#include "mock/mock_stats.hpp"
#include "mock/rate_limiter.hpp"

#include <chrono>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace embedrt::mock {

/// The parts of an HTTP request the mock looks at.
struct mock_request {
  std::string_view method;
  std::string_view target;
  std::string_view body;
  /// `x-mock-fault`, if present.
  std::optional<std::string_view> fault_header;
  /// `x-mock-latency-ms`, if present.
  std::optional<std::string_view> latency_header;
};

/// What the server does with a request.
struct mock_reply {
  enum class action : uint8_t {
    /// Send the response (after `delay`).
    respond,
    /// Never answer; keep the connection open until the peer or stop closes
    /// it.
    hang,
    /// Send part of the response (after `delay`), then abort with RST.
    reset,
  };
  action what = action::respond;
  int status = 200;
  /// Headers besides Content-Length and Connection.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// Send `Connection: close` and close the connection afterwards.
  bool close = false;
  std::chrono::nanoseconds delay{0};

  /// Clears the reply for reuse (keeps capacity).
  void clear();
};

class mock_handler {
 public:
  explicit mock_handler(const mock_options& opts);

  /// Handles one fully read request.
  void handle(const mock_request& req, mock_reply& out);

  /// The request body exceeded `max_body_bytes`: 413, then close.
  void body_too_large(mock_reply& out);

  /// The request was not valid HTTP: 400, then close.
  void bad_http(std::string_view what, mock_reply& out);

  mock_counters& counters() noexcept {
    return counters_;
  }

  /// Every embeddings request without an `x-mock-fault` header gets this
  /// fault until it is set back to none (an outage; also `POST /outage`).
  void set_outage(fault f) noexcept;
  fault outage() const noexcept;

  const mock_counters& counters() const noexcept {
    return counters_;
  }

  /// Every embeddings request without an `x-mock-latency-ms` header waits
  /// `m` instead of the configured latency (also `POST /latency`); nullopt
  /// restores the configured one.
  void set_latency(std::optional<latency_model> m);

 private:
  void embeddings(const mock_request& req, mock_reply& out);
  void stats_endpoint(const mock_request& req, mock_reply& out);
  void outage_endpoint(const mock_request& req, mock_reply& out);
  void latency_endpoint(const mock_request& req, mock_reply& out);
  void error(mock_reply& out, int status, std::string message, const char* type,
             const char* param, const char* code);
  void injected_error(const fault& f, mock_reply& out);
  void respond_json(mock_reply& out, int status, std::string body);
  void add_request_id(mock_reply& out);

  /// Draws the fault of a request from the configured rates.
  fault draw_fault();
  /// Draws the latency of a request from the configured model.
  std::chrono::nanoseconds draw_latency();

  mock_options opts_;
  mock_counters counters_;
  std::atomic<uint64_t> next_request_id_{1};
  /// The outage fault, packed as kind << 32 | status (0: none).
  std::atomic<uint64_t> outage_{0};
  /// The latency set over HTTP, guarded by `mtx_`; `latency_set_` says
  /// whether there is one (read first, so the configured path takes no
  /// lock), `latency_spec_` how it was written.
  std::atomic<bool> latency_set_{false};
  latency_model latency_override_;
  std::string latency_spec_;
  std::mutex mtx_;
  std::mt19937_64 fault_rng_;
  std::mt19937_64 latency_rng_;
  rate_limiter limiter_;
};

} // namespace embedrt::mock
