// The HTTP/1.1 front end of `embedrt serve`: accepts client connections on an
// Asio io_context (the node's io_runtime), reads requests with keep-alive,
// enforces the body limit and read timeouts, and hands each complete request
// to a handler together with a one-shot `responder`. The handler (the
// gateway, CAF side) answers later, from any thread; the responder posts the
// reply back onto the connection's strand. No thread ever waits for a reply.
//
// Graceful shutdown (`drain`): the listener closes (new connections are
// refused), idle keep-alive connections close, requests in flight run on and
// are answered with `Connection: close`; when the grace period ends, every
// request still waiting gets a 503 (`shutting_down`), so none is dropped
// silently. `done` runs once the last connection is gone.
//
// The interface is free of CAF and Beast.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace embedrt::serve {

/// One complete client request.
struct front_request {
  std::string method;
  /// Path and query, as sent.
  std::string target;
  std::string body;
  /// Header values the gateway needs ("" if absent). `authorization` is a
  /// secret: never log it.
  std::string authorization;
  std::string timeout_ms;
  bool has_timeout_ms = false;
  /// The client's `x-request-id` if acceptable (front_parse.hpp), else one
  /// the front end assigned; never empty. Every reply carries it.
  std::string request_id;
  /// `Origin` and, in a CORS preflight, `Access-Control-Request-Headers`
  /// ("" if absent).
  std::string origin;
  std::string cors_request_headers;
};

/// A body produced piece by piece, so that a large reply is never held
/// whole: each call appends the next piece to `out` and returns true, or
/// returns false once the body is complete. Called on the connection's
/// strand; destroyed (with whatever it holds) when the reply has been
/// written or the connection closed.
using body_source = std::function<bool(std::string& out)>;

/// The answer to one request.
struct front_reply {
  int status = 200;
  /// "" sends no Content-Type (a reply without a body).
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// If set, the body (`body` is ignored): sent with `Transfer-Encoding:
  /// chunked`, one chunk per piece (to an HTTP/1.0 client: whole, with
  /// Content-Length).
  body_source source;
};

/// Completes one request; callable from any thread, exactly one call counts
/// (later calls, and calls after the connection closed, are ignored).
using responder = std::function<void(front_reply)>;

/// Called on an I/O thread for every request; must not block.
using request_handler = std::function<void(front_request, responder)>;

/// The name of the header carrying a per-request deadline in milliseconds.
constexpr const char* timeout_header = "x-embedrt-timeout-ms";

struct front_options {
  /// IP literal to bind (IPv4 or IPv6 without brackets) and port (0 = any).
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  /// Larger request bodies get 413.
  std::size_t max_body_bytes = 16 * 1024 * 1024;
  /// Larger request lines + headers get 431 (large JWTs in Authorization
  /// and cookies are common: Beast's default of 8 KiB is too small).
  std::size_t max_header_bytes = 32 * 1024;
  /// A kept-alive connection with nothing received for this long is closed
  /// (silently: HTTP allows closing an idle connection at any time).
  std::chrono::milliseconds idle_timeout{60000};
  /// Time to receive one whole request (header and body) from its first
  /// byte; a slower one (e.g. headers or a body trickled in) gets 408 and
  /// the connection closes.
  std::chrono::milliseconds request_timeout{30000};
  /// Time to send one response.
  std::chrono::milliseconds io_timeout{30000};
  /// Client connections open at once; 0 = half the process's file
  /// descriptor limit (between 16 and 16384). At the limit a new connection
  /// takes the place of the one idle the longest, or, with none idle, is
  /// closed at once. While accept() fails for want of file descriptors
  /// (EMFILE/ENFILE) the connection idle the longest is closed too, so that
  /// the next try succeeds. Each of these is logged at most once per
  /// `limit_log_interval`, with the count since the last line.
  std::size_t max_connections = 0;
  std::chrono::milliseconds limit_log_interval{10000};
  /// TLS on the listener: the certificate chain and private key (PEM);
  /// both empty: plain HTTP. TLS 1.2 or later; the handshake must finish
  /// within `request_timeout`.
  std::string tls_certificate;
  std::string tls_key;
};
class http_front {
 public:
  /// Serves on `ioc` (run by the caller's threads; each connection gets its
  /// own strand). `ioc` must outlive this object.
  http_front(boost::asio::io_context& ioc, front_options opts,
             request_handler handler);

  /// Closes the listener and every connection at once (no drain) and waits
  /// until the I/O threads have let go of them: the last one to do so
  /// signals it (no polling; at most 5 s). Call it from a thread that is not
  /// an I/O thread, while the io_context still runs.
  ~http_front();

  http_front(const http_front&) = delete;
  http_front& operator=(const http_front&) = delete;

  /// Loads the TLS files (if any), binds and listens; returns the port, or 0
  /// with `error()` set.
  uint16_t start();

  const std::string& error() const noexcept;

  /// Starts the graceful shutdown (see above); `done` runs once, on an I/O
  /// thread, when no connection is left. Idempotent.
  void drain(std::chrono::milliseconds grace, std::function<void()> done);

  /// Ends the grace period now (e.g. a second signal).
  void expire_grace();

  /// Connections open right now.
  std::size_t connections() const;

  /// The connection limit in force (`max_connections`, or the one derived
  /// from the file descriptor limit); valid after `start`.
  std::size_t max_connections() const;

  /// Implementation detail (shared with the connections).
  struct impl;

 private:
  std::shared_ptr<impl> impl_;
};

/// An OpenAI-shaped error reply: `{"error":{"message","type","param","code"}}`
/// (param null when empty, code null when empty).
front_reply error_reply(int status, const std::string& message,
                        const std::string& type, const std::string& code,
                        const std::string& param = {});

} // namespace embedrt::serve
