// The built-in OpenAI-compatible upstream as an in-process server: the
// `embedrt mock` command, the embedded default upstream and the test and
// benchmark upstream (docs/cli.md, "embedrt mock").
//
// A Beast HTTP/1.1 (optionally TLS) server with keep-alive on its own I/O
// threads (`mock_options::threads`, one io_context each; connections are
// spread round-robin and stay on their thread). It serves
//   POST /v1/embeddings (and /embeddings)  deterministic hash_embed vectors
//   GET  /stats                            counters as JSON (mock_stats.hpp)
//   POST /stats/reset                      zeroes the counters
// with latency and fault injection (mock_options.hpp), per-request overrides
// through the `x-mock-fault` and `x-mock-latency-ms` headers, markers in
// an input — `[[mock:400]]` makes the request fail naming the input's
// index, `[[mock:delay-ms=N]]` delays its answer to at least N ms — and
// optional per-minute request/token limits.
//
// The interface is free of CAF and Beast; no exception escapes it.
#pragma once

#include "mock/mock_options.hpp"
#include "mock/mock_stats.hpp"

#include <cstdint>
#include <memory>
#include <string>

namespace embedrt::mock {

class mock_server {
 public:
  explicit mock_server(mock_options opts);

  /// Stops the server if it is running.
  ~mock_server();

  mock_server(const mock_server&) = delete;
  mock_server& operator=(const mock_server&) = delete;

  /// Validates the options, loads the TLS files, binds and listens, and
  /// starts the I/O threads. Returns the bound port, or 0 on failure (then
  /// `error()` says why). Calling it on a running server returns its port.
  uint16_t start();

  /// Closes the listener and every connection (including hanging ones),
  /// waits for the sessions to end and joins the I/O threads. Idempotent;
  /// a stopped server cannot be restarted.
  void stop();

  /// The bound port (0 before a successful start).
  uint16_t port() const noexcept;

  /// "http://HOST:PORT/v1" ("https://" with TLS; IPv6 hosts in brackets).
  std::string base_url() const;

  /// Why `start()` failed (empty otherwise).
  const std::string& error() const noexcept;

  const mock_options& options() const noexcept;

  /// A snapshot of the counters.
  mock_stats stats() const;

  /// Zeroes the counters (as POST /stats/reset does).
  void reset_stats();

  /// Starts (or with a `none` fault ends) an outage: every embeddings request
  /// without an `x-mock-fault` header gets `f` (as POST /outage does).
  void set_outage(fault f);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace embedrt::mock
