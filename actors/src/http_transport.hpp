// The HTTP/1.1 client transport: one keep-alive connection (plain TCP or TLS),
// written with Beast on the shared io_context. Free of CAF on purpose (Beast
// TUs are expensive to compile, and CAF headers add to every one of them).
//
// Threading contract (the Asio side of the actor/Asio bridge):
// - all socket state lives in `http_connection` and is only touched on its
//   strand; public member functions are thread-safe (they post);
// - `async_exchange` invokes `done` exactly once, on an I/O thread (never
//   inline in the caller), as long as the io_context keeps running; the
//   connection actor's `done` only sends a message to the actor. `done` may
//   call `async_exchange` or `close` again right away (they post).
// - the object keeps itself alive while an exchange is pending (handlers hold
//   a shared_ptr); dropping the last reference while idle closes the socket.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
} // namespace boost::asio

namespace embedrt::detail {

/// How an exchange failed at the transport level.
enum class transport_errc : uint8_t {
  none,
  /// Host name resolution failed.
  resolve_failed,
  /// TCP connect failed (refused, unreachable).
  connect_failed,
  /// TLS handshake or certificate / host name verification failed.
  tls_failed,
  /// The per-exchange timeout expired; the socket was closed.
  timeout,
  /// The peer closed or reset the connection before a complete response.
  connection_closed,
  /// The response was not valid HTTP/1.1 (also: the request could not be put
  /// on the wire — bad method, target, header name or value — or another
  /// exchange was already pending, message "exchange already pending").
  protocol_error,
  /// The response body exceeded `max_body_bytes`.
  body_too_large,
  /// `close()` was called while the exchange was pending.
  cancelled,
};

const char* to_string(transport_errc x);

/// Header name/value pairs; names are lower-case.
using header_list = std::vector<std::pair<std::string, std::string>>;

struct http_request {
  std::string method = "POST";
  /// Path and query, e.g. "/v1/embeddings".
  std::string target;
  /// Extra headers (Host, Content-Length, Connection are set by the
  /// transport). Values may be secrets: never logged or put in messages.
  header_list headers;
  std::string body;
  std::string content_type = "application/json";
};

struct http_response {
  unsigned status = 0;
  header_list headers;
  std::string body;
  /// False if the server asked to close the connection.
  bool keep_alive = true;

  /// Looks up a header by lower-case name.
  std::optional<std::string_view> header(std::string_view name) const;
};

struct exchange_result {
  transport_errc error = transport_errc::none;
  /// Human-readable description of `error` (never contains header values).
  std::string message;
  http_response response;
  /// True if a new TCP (and TLS) connection was established for this
  /// exchange (also when the exchange failed afterwards, and after the
  /// transparent reconnect of a stale reused connection).
  bool connected = false;
  /// True if the request went over a connection that had carried a previous
  /// request (keep-alive reuse). `connected` and `reused` are exclusive.
  bool reused = false;
  /// Time spent connecting (resolve + TCP + TLS) of the connection that was
  /// established, zero when reused or when no connection was established.
  std::chrono::nanoseconds connect_time{0};
  /// Time from the start of the exchange to its completion.
  std::chrono::nanoseconds total_time{0};
  /// True if the connection stays open for the next exchange (kept alive);
  /// false if it was closed (error, timeout, `Connection: close`).
  bool open_after = false;
};

/// Opaque TLS client configuration shared by the connections of an upstream.
class tls_config;

struct tls_options {
  /// Verify the server's certificate chain and host name (default; turning it
  /// off is for tests only).
  bool verify = true;
  /// PEM file with the trusted CAs (used instead of the system's); empty =
  /// the system's default paths.
  std::string ca_file;
};

/// Creates a TLS client configuration (TLS 1.2+, peer verification on unless
/// disabled). On failure returns nullptr and sets `error`.
std::shared_ptr<tls_config> make_tls_config(const tls_options& opts,
                                            std::string& error);

struct connection_options {
  std::string host;
  uint16_t port = 0;
  /// Non-null: connect with TLS (SNI and host name verification use `host`).
  std::shared_ptr<tls_config> tls;
  /// Max response body size; larger responses fail with body_too_large.
  std::size_t max_body_bytes = 64 * 1024 * 1024;
};

class http_connection : public std::enable_shared_from_this<http_connection> {
 public:
  using completion = std::function<void(exchange_result)>;

  static std::shared_ptr<http_connection> make(boost::asio::io_context& ctx,
                                               connection_options opts);

  virtual ~http_connection() = default;

  /// Sends one request and reads its response; at most one exchange may be
  /// pending (a second one completes at once with protocol_error "exchange
  /// already pending", the first is unaffected). Connects lazily (first use,
  /// after the server closed the connection, after `Connection: close`, after
  /// any error, timeout or `close()`). If a reused connection fails with
  /// EOF/reset on the write or before any byte of the response arrived (the
  /// server closed an idle keep-alive connection), reconnects and resends
  /// once, within the same deadline; the result then has connected = true.
  /// The whole exchange, resolve and connect included, is bounded by
  /// `timeout` (<= 0: completes at once with timeout, nothing sent): on expiry
  /// `done` gets `transport_errc::timeout` at once and the socket is closed.
  /// A request that cannot be sent fails with protocol_error and leaves an
  /// idle connection in place. `done` is invoked exactly once, on an I/O
  /// thread.
  virtual void async_exchange(http_request req,
                              std::chrono::milliseconds timeout,
                              completion done)
      = 0;

  /// Closes the socket (thread-safe, asynchronous). A pending exchange
  /// completes with `transport_errc::cancelled`. Not terminal: a later
  /// exchange connects again.
  virtual void close() = 0;
};

} // namespace embedrt::detail
