// What the two HTTP/1.1 servers of the `embedrt` command share: the built-in
// upstream (mock/mock_server.cpp) and the gateway's front end
// (serve/http_front.cpp). Beast and Asio, no CAF; each server keeps its own
// sessions (one request at a time per keep-alive connection) and only
// borrows these pieces:
//
//   listener             the listening socket and its accept loop
//   read_failure_of      what a failed request read means (413, 400 or gone)
//   expects_continue     whether a request header asks for 100 Continue
//
// See docs/architecture.md, "The HTTP front end".
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/fields.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace embedrt::httpd {

/// The interim response to `Expect: 100-continue`.
constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";

/// After a response with `Connection: close` a server stops sending and
/// reads (discarding) until the peer closes or this time passes: closing with
/// unread request bytes in the socket makes the kernel send RST, which can
/// destroy the response before the client reads it (e.g. a 413 sent while
/// the client is still uploading).
constexpr std::chrono::seconds linger_timeout{2};

/// Pause before accepting again after an accept error (e.g. EMFILE).
constexpr std::chrono::milliseconds accept_retry_delay{50};

/// What a failed read of a request means for the connection.
enum class read_failure {
  /// The body is over the parser's limit: answer 413, then close.
  too_large,
  /// Not HTTP: answer 400 (with the error's message), then close.
  malformed,
  /// Closed, timed out or failed: close without an answer.
  gone,
};

read_failure read_failure_of(const boost::beast::error_code& ec);

/// True if the header asks for `100 Continue` before the body is sent.
bool expects_continue(const boost::beast::http::fields& header);

/// A listening TCP socket and its accept loop. The loop and the socket
/// handler run on the listener's executor (a strand if its io_context has
/// more than one thread), and `close` must too: a server serializes its own
/// bookkeeping of new connections with the loop by running it there.
class listener {
 public:
  using tcp = boost::asio::ip::tcp;
  using executor_type = boost::asio::any_io_executor;
  /// Takes each accepted connection (TCP_NODELAY set).
  using socket_handler = std::function<void(tcp::socket)>;
  /// The executor the next connection's socket is created on.
  using executor_source = std::function<executor_type()>;
  /// Told of each failed accept (e.g. EMFILE), on the listener's executor.
  using error_handler = std::function<void(const boost::beast::error_code&)>;

  explicit listener(executor_type ex);

  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;

  /// Binds `host` (an IP literal, IPv4 or IPv6 without brackets) and `port`
  /// (0 = any) with SO_REUSEADDR and listens. Returns the bound port, or 0
  /// with `error()` saying why ("cannot bind 127.0.0.1:80: ...").
  uint16_t listen(const std::string& host, uint16_t port);

  /// Why `listen` failed (empty otherwise).
  const std::string& error() const noexcept;

  /// Starts the accept loop (posted to the listener's executor; call once,
  /// after a successful `listen`). An accept error other than the close (e.g.
  /// EMFILE) pauses the loop for `accept_retry_delay`. Every pending operation
  /// of the loop holds `keep_alive`, which must own this listener unless the
  /// owner otherwise guarantees that the listener outlives the io_context's
  /// handlers (by stopping and joining its threads first).
  void start(executor_source next, socket_handler on_socket,
             std::shared_ptr<void> keep_alive = {});

  /// Sets the handler of accept errors (call before `start`).
  void on_accept_error(error_handler h);

  /// Stops accepting and closes the socket: new connections are refused,
  /// and no accepted one reaches the handler any more. Runs on the
  /// listener's executor; idempotent.
  void close();

  const executor_type& executor() const noexcept {
    return executor_;
  }

 private:
  void do_accept(std::shared_ptr<void> keep_alive);
  void on_accept(boost::beast::error_code ec, tcp::socket s,
                 std::shared_ptr<void> keep_alive);

  executor_type executor_;
  tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_;
  executor_source next_;
  socket_handler on_socket_;
  error_handler on_error_;
  std::string error_;
};

} // namespace embedrt::httpd
