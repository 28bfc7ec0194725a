// Counters of the built-in upstream, exposed as `GET /stats` and through
// `mock_server::stats()`. Tests use them to check connection reuse, request
// counts and injected faults.
#pragma once

#include "mock/mock_options.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace embedrt::mock {

/// A snapshot of the counters. Requests to /stats and /stats/reset are not
/// counted (only their connection is).
struct mock_stats {
  uint64_t connections_accepted = 0;
  /// A gauge: connections open right now (not zeroed by a reset).
  uint64_t connections_open = 0;
  /// HTTP requests read (every path except /stats*).
  uint64_t requests = 0;
  /// Requests to POST /v1/embeddings or /embeddings.
  uint64_t embedding_requests = 0;
  /// Inputs of the embedding requests that passed validation.
  uint64_t inputs = 0;
  /// Of those requests, the ones asking for base64 vectors.
  uint64_t base64_requests = 0;
  /// Tokens of the embedding requests answered with vectors (their usage).
  uint64_t tokens = 0;
  /// Responses sent by HTTP status (non-zero entries only).
  std::map<int, uint64_t> by_status;
  /// Injected faults by name (see `to_string(const fault&)`), non-zero only.
  std::map<std::string, uint64_t> faults;

  /// Responses with `status`, 0 if none.
  uint64_t status_count(int status) const;
  /// Injected faults named `name`, 0 if none.
  uint64_t fault_count(std::string_view name) const;
};

/// Renders the snapshot as the JSON object served by `GET /stats`.
std::string to_json(const mock_stats& stats);

/// The live counters: lock-free, updated by the server's I/O threads, read
/// from any thread.
class mock_counters {
 public:
  mock_counters();

  void connection_opened() noexcept;
  void connection_closed() noexcept;
  void request() noexcept;
  void embedding_request() noexcept;
  void inputs(uint64_t n) noexcept;
  void base64_request() noexcept;
  void tokens(uint64_t n) noexcept;
  void response(int status) noexcept;
  void injected(const fault& f) noexcept;

  /// Zeroes every counter except the `connections_open` gauge.
  void reset() noexcept;

  mock_stats snapshot() const;

 private:
  static constexpr int max_status = 600;
  static constexpr std::size_t named_faults = 10;

  std::atomic<uint64_t> connections_accepted_{0};
  std::atomic<uint64_t> connections_open_{0};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> embedding_requests_{0};
  std::atomic<uint64_t> inputs_{0};
  std::atomic<uint64_t> base64_requests_{0};
  std::atomic<uint64_t> tokens_{0};
  std::array<std::atomic<uint64_t>, max_status> by_status_;
  /// Faults of kind `status`, by status.
  std::array<std::atomic<uint64_t>, max_status> status_faults_;
  /// Other faults, by `fault_kind`.
  std::array<std::atomic<uint64_t>, named_faults> kind_faults_;
};

} // namespace embedrt::mock
