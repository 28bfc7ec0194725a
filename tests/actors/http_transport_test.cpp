#include "http_transport.hpp"

// GCC 12 with -fsanitize=thread warns (-Wtsan, an error under -Werror) about
// the std::atomic_thread_fence in Asio's fenced_block: TSan does not model
// fences. Asio's cross-thread handoff is synchronised by the scheduler's and
// the strand's mutexes, which TSan does model, so the warning is noise here.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#  pragma GCC diagnostic ignored "-Wtsan"
#endif
// GCC 12 with -fsanitize=address,undefined reports a false
// -Wmaybe-uninitialized inside Beast's request parser (the boost::optional
// returned by basic_parser<true>::content_length_unchecked), which only the
// test server instantiates.
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "embedrt/io_runtime.hpp"

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>
#include <openssl/ssl.h>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
using namespace std::chrono_literals;
using embedrt::detail::connection_options;
using embedrt::detail::exchange_result;
using embedrt::detail::header_list;
using embedrt::detail::http_connection;
using embedrt::detail::http_request;
using embedrt::detail::make_tls_config;
using embedrt::detail::tls_config;
using embedrt::detail::tls_options;
using embedrt::detail::transport_errc;
using std::chrono::milliseconds;

std::string tls_file(const char* name) {
  return std::string{EMBEDRT_TEST_DATA_DIR} + "/tls/" + name;
}

// -- the scripted test server ------------------------------------------------

/// What the server does with one request.
struct action {
  enum kind_t {
    /// Send the response; keep the connection unless `connection_close`.
    respond,
    /// Send a keep-alive response, then close the now idle connection (what a
    /// server's keep-alive timeout does).
    respond_then_close,
    /// Never answer; wait until the client closes.
    hang,
    /// Close without answering.
    close_now,
    /// Send the head and part of the body, then reset (SO_LINGER 0).
    partial_then_reset,
  };
  kind_t kind = respond;
  unsigned status = 200;
  std::string body;
  header_list headers;
  bool chunked = false;
  /// Send "Connection: close" and close after the response.
  bool connection_close = false;
  /// Send "100 Continue" before the response.
  bool interim = false;
  /// Announce `body` with Content-Length but send no body (HEAD).
  bool omit_body = false;
  /// Wait this long before acting.
  milliseconds delay{0};
};

action respond(std::string body) {
  action a;
  a.body = std::move(body);
  return a;
}

action with_kind(action::kind_t kind) {
  action a;
  a.kind = kind;
  return a;
}

struct request_info {
  /// 0-based index of the connection, in accept order.
  std::size_t connection;
  /// 0-based index of the request on its connection.
  std::size_t index;
  const http::request<http::string_body>& request;
};

using script_fn = std::function<action(const request_info&)>;

std::string serialize(const action& a) {
  std::string out;
  if (a.interim)
    out += "HTTP/1.1 100 Continue\r\n\r\n";
  out += "HTTP/1.1 " + std::to_string(a.status) + " "
      + std::string{http::obsolete_reason(http::int_to_status(a.status))}
      + "\r\n";
  for (const auto& [name, value] : a.headers)
    out += name + ": " + value + "\r\n";
  if (a.connection_close)
    out += "Connection: close\r\n";
  if (a.chunked) {
    out += "Transfer-Encoding: chunked\r\n\r\n";
    std::size_t step = a.body.size() / 3 + 1;
    for (std::size_t i = 0; i < a.body.size(); i += step) {
      auto part = a.body.substr(i, step);
      char size[32];
      std::snprintf(size, sizeof(size), "%zx", part.size());
      out += std::string{size} + "\r\n" + part + "\r\n";
    }
    out += "0\r\n\r\n";
  } else {
    out += "Content-Length: " + std::to_string(a.body.size()) + "\r\n\r\n";
    if (!a.omit_body)
      out += a.body;
  }
  return out;
}

class test_server {
 public:
  enum class mode {
    /// Plain HTTP.
    http,
    /// HTTPS with tests/data/tls/server.pem.
    tls,
    /// Accepts TCP connections and never reads or writes.
    silent,
  };

  struct stats {
    std::size_t accepted = 0;
    std::size_t requests = 0;
    /// Connections the server closed after a response.
    std::size_t server_closes = 0;
    /// Hanging or silent connections that saw the client close.
    std::size_t client_closes_while_waiting = 0;
    std::size_t handshake_failures = 0;
    /// SNI of each TLS handshake ("" if none was sent).
    std::vector<std::string> server_names;
    std::vector<http::request<http::string_body>> seen;
  };

  explicit test_server(script_fn script, mode m = mode::http,
                       const std::string& address = "127.0.0.1",
                       bool record_requests = true)
      : script_(std::move(script)),
        mode_(m),
        record_(record_requests),
        acceptor_(ioc_, tcp::endpoint{net::ip::make_address(address), 0}) {
    if (m == mode::tls) {
      tls_.emplace(ssl::context::tls_server);
      tls_->use_certificate_chain_file(tls_file("server.pem"));
      tls_->use_private_key_file(tls_file("server.key"), ssl::context::pem);
    }
    port_ = acceptor_.local_endpoint().port();
    accept();
    thread_ = std::thread{[this] {
      ioc_.run();
    }};
  }

  ~test_server() {
    ioc_.stop();
    thread_.join();
  }

  test_server(const test_server&) = delete;
  test_server& operator=(const test_server&) = delete;

  uint16_t port() const {
    return port_;
  }

  stats snapshot() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return stats_;
  }

  /// Waits (bounded) until `pred(stats)` holds.
  template <class Pred>
  bool wait_until(Pred pred, milliseconds timeout = 5s) const {
    std::unique_lock<std::mutex> guard{mtx_};
    return cv_.wait_for(guard, timeout, [&] {
      return pred(stats_);
    });
  }

  // -- called by sessions on the server thread -------------------------------

  action on_request(std::size_t connection, std::size_t index,
                    const http::request<http::string_body>& req) {
    auto result = script_(request_info{connection, index, req});
    update([&](stats& s) {
      ++s.requests;
      if (record_)
        s.seen.push_back(req);
    });
    return result;
  }

  template <class F>
  void update(F f) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      f(stats_);
    }
    cv_.notify_all();
  }

 private:
  template <class Stream>
  class session;

  void accept();

  script_fn script_;
  mode mode_;
  bool record_;
  net::io_context ioc_{1};
  tcp::acceptor acceptor_;
  std::optional<ssl::context> tls_;
  uint16_t port_ = 0;
  std::size_t next_id_ = 0;
  std::thread thread_;
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  stats stats_;
};

template <class Stream>
class test_server::session
    : public std::enable_shared_from_this<session<Stream>> {
 public:
  session(test_server& srv, Stream stream, std::size_t id, mode m)
      : srv_(srv),
        stream_(std::move(stream)),
        timer_(stream_.get_executor()),
        id_(id),
        mode_(m) {}

  void start() {
    if (mode_ == mode::silent)
      return wait_for_client_close();
    if constexpr (std::is_same_v<Stream, ssl::stream<tcp::socket>>) {
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](error_code ec) {
                                if (ec) {
                                  self->srv_.update([](stats& s) {
                                    ++s.handshake_failures;
                                  });
                                  return;
                                }
                                const char* name = SSL_get_servername(
                                    self->stream_.native_handle(),
                                    TLSEXT_NAMETYPE_host_name);
                                self->srv_.update([&](stats& s) {
                                  s.server_names.emplace_back(name ? name : "");
                                });
                                self->read();
                              });
    } else {
      read();
    }
  }

 private:
  tcp::socket& socket() {
    return beast::get_lowest_layer(stream_);
  }

  void read() {
    parser_.emplace();
    parser_->body_limit(64 * 1024 * 1024);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](error_code ec, std::size_t) {
          if (ec)
            return; // the client closed or sent garbage
          self->act_ = self->srv_.on_request(self->id_, self->index_++,
                                             self->parser_->get());
          if (self->act_.delay.count() == 0)
            return self->perform();
          self->timer_.expires_after(self->act_.delay);
          self->timer_.async_wait([self](error_code ec) {
            if (!ec)
              self->perform();
          });
        });
  }

  void perform() {
    auto self = this->shared_from_this();
    switch (act_.kind) {
      case action::respond:
      case action::respond_then_close:
        out_ = serialize(act_);
        net::async_write(stream_, net::buffer(out_),
                         [self](error_code ec, std::size_t) {
                           if (ec)
                             return;
                           if (self->act_.connection_close
                               || self->act_.kind == action::respond_then_close)
                             return self->close_by_server();
                           self->read();
                         });
        return;
      case action::hang: return wait_for_client_close();
      case action::close_now: return close_by_server();
      case action::partial_then_reset:
        out_ = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
            + std::string(100, 'x');
        net::async_write(stream_, net::buffer(out_),
                         [self](error_code ec, std::size_t) {
                           if (ec)
                             return;
                           error_code ignored;
                           self->socket().set_option(
                               net::socket_base::linger{true, 0}, ignored);
                           self->socket().close(ignored);
                         });
        return;
    }
  }

  void wait_for_client_close() {
    stream_.async_read_some(
        net::buffer(scratch_),
        [self = this->shared_from_this()](error_code ec, std::size_t) {
          if (ec) {
            self->srv_.update([](stats& s) {
              ++s.client_closes_while_waiting;
            });
            return;
          }
          self->wait_for_client_close();
        });
  }

  void close_by_server() {
    error_code ignored;
    socket().shutdown(tcp::socket::shutdown_both, ignored);
    socket().close(ignored);
    srv_.update([](stats& s) {
      ++s.server_closes;
    });
  }

  test_server& srv_;
  Stream stream_;
  net::steady_timer timer_;
  std::size_t id_;
  mode mode_;
  std::size_t index_ = 0;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  action act_;
  std::string out_;
  char scratch_[512];
};

void test_server::accept() {
  acceptor_.async_accept([this](error_code ec, tcp::socket socket) {
    if (ec)
      return;
    auto id = next_id_++;
    update([](stats& s) {
      ++s.accepted;
    });
    if (mode_ == mode::tls) {
      using tls_stream = ssl::stream<tcp::socket>;
      std::make_shared<session<tls_stream>>(
          *this, tls_stream{std::move(socket), *tls_}, id, mode_)
          ->start();
    } else {
      std::make_shared<session<tcp::socket>>(*this, std::move(socket), id,
                                             mode_)
          ->start();
    }
    accept();
  });
}

/// An echo server: "echo:" + request body, plus a mixed-case header.
action echo(const request_info& info) {
  auto a = respond("echo:" + info.request.body());
  a.headers.emplace_back("X-Index", std::to_string(info.index));
  a.headers.emplace_back("X-Mixed-Case", "Value");
  return a;
}

// -- the client side
// -----------------------------------------------------------

/// Records the completions of one exchange.
struct probe {
  std::mutex mtx;
  std::condition_variable cv;
  int calls = 0;
  bool on_caller_thread = false;
  exchange_result result;
};

http_request post(std::string body) {
  http_request req;
  req.target = "/v1/embeddings";
  req.body = std::move(body);
  return req;
}

class fixture {
 public:
  fixture() : io_(2) {}

  /// Stops the I/O threads, then checks that every completion ran exactly
  /// once (after the join no handler can run any more).
  ~fixture() {
    io_.stop();
    for (const auto& p : probes_) {
      CHECK(p->calls == 1);
      CHECK_FALSE(p->on_caller_thread);
    }
  }

  std::shared_ptr<http_connection>
  connect(std::string host, uint16_t port,
          std::shared_ptr<tls_config> tls = nullptr,
          std::size_t max_body_bytes = 64 * 1024 * 1024) {
    connection_options opts;
    opts.host = std::move(host);
    opts.port = port;
    opts.tls = std::move(tls);
    opts.max_body_bytes = max_body_bytes;
    return http_connection::make(io_.context(), std::move(opts));
  }

  std::shared_ptr<probe> start(http_connection& conn, http_request req,
                               milliseconds timeout = 5s) {
    auto p = std::make_shared<probe>();
    probes_.push_back(p);
    auto caller = std::this_thread::get_id();
    conn.async_exchange(std::move(req), timeout,
                        [p, caller](exchange_result r) {
                          {
                            std::lock_guard<std::mutex> guard{p->mtx};
                            if (++p->calls == 1)
                              p->result = std::move(r);
                            if (std::this_thread::get_id() == caller)
                              p->on_caller_thread = true;
                          }
                          p->cv.notify_all();
                        });
    return p;
  }

  static exchange_result wait(probe& p, milliseconds timeout = 10s) {
    std::unique_lock<std::mutex> guard{p.mtx};
    REQUIRE(p.cv.wait_for(guard, timeout, [&] {
      return p.calls > 0;
    }));
    return p.result;
  }

  exchange_result exchange(http_connection& conn, http_request req = post("x"),
                           milliseconds timeout = 5s) {
    return wait(*start(conn, std::move(req), timeout));
  }

 protected:
  embedrt::io_runtime io_;
  std::vector<std::shared_ptr<probe>> probes_;
};

std::shared_ptr<tls_config> tls_with(const std::string& ca_file,
                                     bool verify = true) {
  tls_options opts;
  opts.verify = verify;
  opts.ca_file = ca_file;
  std::string error;
  auto cfg = make_tls_config(opts, error);
  INFO(error);
  REQUIRE(cfg != nullptr);
  return cfg;
}

#define REQUIRE_OK(r)                                                          \
  do {                                                                         \
    const exchange_result& res_ = (r);                                         \
    INFO(to_string(res_.error) << ": " << res_.message);                       \
    REQUIRE(res_.error == transport_errc::none);                               \
  } while (false)

#define REQUIRE_ERROR(r, kind)                                                 \
  do {                                                                         \
    const exchange_result& res_ = (r);                                         \
    INFO(to_string(res_.error) << ": " << res_.message);                       \
    REQUIRE(res_.error == (kind));                                             \
  } while (false)

} // namespace

using embedrt::detail::to_string;

// -- plain HTTP
// ----------------------------------------------------------------

TEST_CASE_METHOD(fixture, "keep-alive exchanges share one connection",
                 "[http_transport]") {
  test_server srv{echo};
  auto conn = connect("127.0.0.1", srv.port());
  for (int i = 0; i < 5; ++i) {
    auto req = post("req" + std::to_string(i));
    req.headers.emplace_back("Authorization", "Bearer sk-test-secret");
    auto r = exchange(*conn, std::move(req));
    REQUIRE_OK(r);
    CHECK(r.connected == (i == 0));
    CHECK(r.reused == (i != 0));
    CHECK(r.response.status == 200);
    CHECK(r.response.body == "echo:req" + std::to_string(i));
    CHECK(r.response.keep_alive);
    CHECK(r.response.header("x-index") == std::to_string(i));
    CHECK(r.response.header("x-mixed-case") == std::string_view{"Value"});
    CHECK(r.response.header("X-MIXED-CASE") == std::string_view{"Value"});
    CHECK_FALSE(r.response.header("x-absent"));
    if (i == 0)
      CHECK(r.connect_time.count() > 0);
    else
      CHECK(r.connect_time.count() == 0);
    CHECK(r.total_time >= r.connect_time);
    for (const auto& [name, value] : r.response.headers)
      for (char c : name)
        CHECK_FALSE((c >= 'A' && c <= 'Z'));
  }
  auto stats = srv.snapshot();
  CHECK(stats.accepted == 1);
  REQUIRE(stats.seen.size() == 5);
  const auto& req = stats.seen.front();
  CHECK(req.method() == http::verb::post);
  CHECK(req.target() == "/v1/embeddings");
  CHECK(req[http::field::host] == "127.0.0.1:" + std::to_string(srv.port()));
  CHECK(req[http::field::content_type] == "application/json");
  CHECK(req[http::field::content_length] == "4");
  CHECK(req[http::field::authorization] == "Bearer sk-test-secret");
  CHECK(req.keep_alive());
}

TEST_CASE_METHOD(fixture, "chunked responses are reassembled",
                 "[http_transport]") {
  std::string big(10000, 'b');
  test_server srv{[&](const request_info& info) {
    auto a = respond(info.index == 0 ? big : std::string{});
    a.chunked = true;
    return a;
  }};
  auto conn = connect("127.0.0.1", srv.port());
  auto r1 = exchange(*conn);
  REQUIRE_OK(r1);
  CHECK(r1.response.body == big);
  CHECK(r1.response.header("transfer-encoding") == std::string_view{"chunked"});
  auto r2 = exchange(*conn);
  REQUIRE_OK(r2);
  CHECK(r2.response.body.empty());
  CHECK(r2.reused);
  CHECK(srv.snapshot().accepted == 1);
}

TEST_CASE_METHOD(fixture, "interim responses and HEAD are handled",
                 "[http_transport]") {
  test_server srv{[](const request_info& info) {
    auto a = respond("hello");
    if (info.index == 0)
      a.interim = true;
    else
      a.omit_body = true;
    return a;
  }};
  auto conn = connect("127.0.0.1", srv.port());
  auto r1 = exchange(*conn);
  REQUIRE_OK(r1);
  CHECK(r1.response.status == 200);
  CHECK(r1.response.body == "hello");
  http_request head;
  head.method = "HEAD";
  head.target = "/";
  auto r2 = exchange(*conn, head);
  REQUIRE_OK(r2);
  CHECK(r2.reused);
  CHECK(r2.response.header("content-length") == std::string_view{"5"});
  CHECK(r2.response.body.empty());
  auto r3 = exchange(*conn, head);
  REQUIRE_OK(r3);
  CHECK(r3.reused);
}

TEST_CASE_METHOD(fixture, "Connection: close makes the next exchange reconnect",
                 "[http_transport]") {
  test_server srv{[](const request_info& info) {
    auto a = respond("c" + std::to_string(info.connection));
    a.connection_close = info.connection == 0;
    return a;
  }};
  auto conn = connect("127.0.0.1", srv.port());
  auto r1 = exchange(*conn);
  REQUIRE_OK(r1);
  CHECK(r1.connected);
  CHECK_FALSE(r1.response.keep_alive);
  CHECK(r1.response.body == "c0");
  auto r2 = exchange(*conn);
  REQUIRE_OK(r2);
  CHECK(r2.connected);
  CHECK_FALSE(r2.reused);
  CHECK(r2.response.keep_alive);
  CHECK(r2.response.body == "c1");
  auto r3 = exchange(*conn);
  REQUIRE_OK(r3);
  CHECK(r3.reused);
  CHECK(srv.snapshot().accepted == 2);
}

TEST_CASE_METHOD(fixture,
                 "a stale keep-alive connection is replaced transparently",
                 "[http_transport]") {
  test_server srv{[](const request_info& info) {
    auto a = respond("c" + std::to_string(info.connection) + "-"
                     + info.request.body());
    if (info.connection == 0)
      a.kind = action::respond_then_close;
    return a;
  }};
  auto conn = connect("127.0.0.1", srv.port());
  auto r1 = exchange(*conn, post("a"));
  REQUIRE_OK(r1);
  CHECK(r1.response.keep_alive);
  REQUIRE(srv.wait_until([](const auto& s) {
    return s.server_closes == 1;
  }));
  auto r2 = exchange(*conn, post("b"));
  REQUIRE_OK(r2);
  CHECK(r2.connected);
  CHECK_FALSE(r2.reused);
  CHECK(r2.response.body == "c1-b");
  auto r3 = exchange(*conn, post("c"));
  REQUIRE_OK(r3);
  CHECK(r3.reused);
  auto stats = srv.snapshot();
  CHECK(stats.accepted == 2);
  CHECK(stats.requests == 3);
}

TEST_CASE_METHOD(fixture, "the stale-connection retry happens only once",
                 "[http_transport]") {
  test_server srv{[](const request_info& info) {
    if (info.connection == 0)
      return with_kind(action::respond_then_close);
    return with_kind(action::close_now);
  }};
  auto conn = connect("127.0.0.1", srv.port());
  REQUIRE_OK(exchange(*conn));
  REQUIRE(srv.wait_until([](const auto& s) {
    return s.server_closes == 1;
  }));
  auto r = exchange(*conn);
  REQUIRE_ERROR(r, transport_errc::connection_closed);
  CHECK(r.connected);
  CHECK_THAT(r.message, Catch::Contains("before responding"));
  REQUIRE(srv.wait_until([](const auto& s) {
    return s.server_closes == 2;
  }));
  CHECK(srv.snapshot().accepted == 2);
}

TEST_CASE_METHOD(fixture,
                 "no retry once part of the response arrived on a reused "
                 "connection",
                 "[http_transport]") {
  test_server srv{[](const request_info& info) {
    if (info.index == 0)
      return respond("first");
    return with_kind(action::partial_then_reset);
  }};
  auto conn = connect("127.0.0.1", srv.port());
  REQUIRE_OK(exchange(*conn));
  auto r = exchange(*conn);
  REQUIRE_ERROR(r, transport_errc::connection_closed);
  CHECK(r.reused);
  CHECK_THAT(r.message, Catch::Contains("middle of the response"));
  CHECK(srv.snapshot().accepted == 1);
  CHECK(srv.snapshot().requests == 2);
}

TEST_CASE_METHOD(fixture, "a reset in the middle of a response",
                 "[http_transport]") {
  test_server srv{[](const request_info& info) {
    if (info.connection == 0)
      return with_kind(action::partial_then_reset);
    return respond("ok");
  }};
  auto conn = connect("127.0.0.1", srv.port());
  auto r = exchange(*conn);
  REQUIRE_ERROR(r, transport_errc::connection_closed);
  CHECK(r.connected);
  CHECK(r.response.status == 0);
  auto r2 = exchange(*conn);
  REQUIRE_OK(r2);
  CHECK(r2.connected);
  CHECK(r2.response.body == "ok");
}

TEST_CASE_METHOD(fixture, "a timeout closes the socket", "[http_transport]") {
  test_server srv{[](const request_info& info) {
    if (info.connection == 0)
      return with_kind(action::hang);
    return respond("late but fine");
  }};
  auto conn = connect("127.0.0.1", srv.port());
  auto t0 = std::chrono::steady_clock::now();
  auto r = exchange(*conn, post("x"), 300ms);
  auto elapsed = std::chrono::steady_clock::now() - t0;
  REQUIRE_ERROR(r, transport_errc::timeout);
  CHECK_THAT(r.message, Catch::Contains("reading the response"));
  CHECK(elapsed >= 300ms);
  CHECK(elapsed < 300ms + 1s);
  CHECK(r.total_time >= 300ms);
  // The server sees the close: the socket was not left open.
  CHECK(srv.wait_until(
      [](const auto& s) {
        return s.client_closes_while_waiting == 1;
      },
      2s));
  auto r2 = exchange(*conn);
  REQUIRE_OK(r2);
  CHECK(r2.connected);
  CHECK(r2.response.body == "late but fine");
}

TEST_CASE_METHOD(fixture, "the deadline covers the TLS handshake",
                 "[http_transport]") {
  test_server srv{echo, test_server::mode::silent};
  auto conn = connect("127.0.0.1", srv.port(), tls_with(tls_file("ca.pem")));
  auto t0 = std::chrono::steady_clock::now();
  auto r = exchange(*conn, post("x"), 300ms);
  auto elapsed = std::chrono::steady_clock::now() - t0;
  REQUIRE_ERROR(r, transport_errc::timeout);
  CHECK_THAT(r.message, Catch::Contains("TLS handshake"));
  CHECK(elapsed < 300ms + 1s);
  CHECK(srv.wait_until(
      [](const auto& s) {
        return s.client_closes_while_waiting == 1;
      },
      2s));
}

TEST_CASE_METHOD(fixture, "an expired deadline fails at once",
                 "[http_transport]") {
  test_server srv{echo};
  auto conn = connect("127.0.0.1", srv.port());
  auto r = exchange(*conn, post("x"), 0ms);
  REQUIRE_ERROR(r, transport_errc::timeout);
  CHECK_FALSE(r.connected);
  CHECK(srv.snapshot().accepted == 0);
  REQUIRE_OK(exchange(*conn));
}

TEST_CASE_METHOD(fixture, "a refused connection", "[http_transport]") {
  uint16_t port = 0;
  {
    net::io_context ioc;
    tcp::acceptor acceptor{
        ioc, tcp::endpoint{net::ip::make_address("127.0.0.1"), 0}};
    port = acceptor.local_endpoint().port();
  }
  auto conn = connect("127.0.0.1", port);
  auto r = exchange(*conn);
  REQUIRE_ERROR(r, transport_errc::connect_failed);
  CHECK_THAT(r.message, Catch::Contains("127.0.0.1:" + std::to_string(port)));
  CHECK_FALSE(r.connected);
}

TEST_CASE_METHOD(fixture, "an unresolvable host", "[http_transport]") {
  // RFC 6761: names under .invalid never resolve.
  auto conn = connect("embedrt-test.invalid", 80);
  auto r = exchange(*conn);
  REQUIRE_ERROR(r, transport_errc::resolve_failed);
  CHECK_THAT(r.message, Catch::Contains("embedrt-test.invalid"));
}

TEST_CASE_METHOD(fixture, "a body larger than max_body_bytes",
                 "[http_transport]") {
  test_server srv{[](const request_info& info) {
    auto a = respond(std::string(info.connection < 2 ? 1000 : 100, 'z'));
    a.chunked = info.connection == 1;
    return a;
  }};
  auto conn = connect("127.0.0.1", srv.port(), nullptr, 100);
  auto r1 = exchange(*conn);
  REQUIRE_ERROR(r1, transport_errc::body_too_large);
  CHECK_THAT(r1.message, Catch::Contains("100 bytes"));
  auto r2 = exchange(*conn);
  REQUIRE_ERROR(r2, transport_errc::body_too_large);
  CHECK(r2.connected);
  auto r3 = exchange(*conn);
  REQUIRE_OK(r3);
  CHECK(r3.connected);
  CHECK(r3.response.body.size() == 100);
}

TEST_CASE_METHOD(fixture, "close() cancels a pending exchange once",
                 "[http_transport]") {
  test_server srv{[](const request_info& info) {
    if (info.connection == 0)
      return with_kind(action::hang);
    return respond("after close");
  }};
  auto conn = connect("127.0.0.1", srv.port());
  auto p = start(*conn, post("x"), 10s);
  REQUIRE(srv.wait_until([](const auto& s) {
    return s.requests == 1;
  }));
  conn->close();
  auto r = wait(*p, 2s);
  REQUIRE_ERROR(r, transport_errc::cancelled);
  CHECK(r.connected);
  CHECK(srv.wait_until(
      [](const auto& s) {
        return s.client_closes_while_waiting == 1;
      },
      2s));
  // The object stays usable: the next exchange reconnects.
  auto r2 = exchange(*conn);
  REQUIRE_OK(r2);
  CHECK(r2.connected);
  CHECK(r2.response.body == "after close");
  // close() on an idle connection: nothing to complete, next one reconnects.
  conn->close();
  auto r3 = exchange(*conn);
  REQUIRE_OK(r3);
  CHECK(r3.connected);
  CHECK(srv.snapshot().accepted == 3);
}

TEST_CASE_METHOD(fixture, "a second concurrent exchange is rejected",
                 "[http_transport]") {
  test_server srv{echo};
  auto conn = connect("127.0.0.1", srv.port());
  auto first = start(*conn, post("first"));
  auto second = start(*conn, post("second"));
  auto r2 = wait(*second);
  REQUIRE_ERROR(r2, transport_errc::protocol_error);
  CHECK(r2.message == "exchange already pending");
  auto r1 = wait(*first);
  REQUIRE_OK(r1);
  CHECK(r1.response.body == "echo:first");
  CHECK(srv.snapshot().requests == 1);
}

TEST_CASE_METHOD(fixture, "the completion may start the next exchange",
                 "[http_transport]") {
  test_server srv{echo};
  auto conn = connect("127.0.0.1", srv.port());
  constexpr int n = 20;
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<exchange_result> results;
  std::function<void(exchange_result)> on_done;
  on_done = [&](exchange_result r) {
    std::size_t count;
    {
      std::lock_guard<std::mutex> guard{mtx};
      results.push_back(std::move(r));
      count = results.size();
    }
    if (count < n) {
      conn->async_exchange(post(std::to_string(count)), 5s, on_done);
    } else {
      // Notify under the lock: the waiting test may return (destroying cv)
      // as soon as it sees the predicate hold.
      std::lock_guard<std::mutex> guard{mtx};
      cv.notify_all();
    }
  };
  conn->async_exchange(post("0"), 5s, on_done);
  std::unique_lock<std::mutex> guard{mtx};
  REQUIRE(cv.wait_for(guard, 10s, [&] {
    return results.size() == n;
  }));
  for (std::size_t i = 0; i < n; ++i) {
    INFO(i << ": " << results[i].message);
    REQUIRE(results[i].error == transport_errc::none);
    CHECK(results[i].response.body == "echo:" + std::to_string(i));
    CHECK(results[i].connected == (i == 0));
    CHECK(results[i].reused == (i != 0));
  }
}

TEST_CASE_METHOD(fixture, "timeouts racing with responses complete once",
                 "[http_transport]") {
  // The request body is the server's delay in ms: 5..15 around a 10 ms
  // deadline, so both the response and the timer win some of the races.
  test_server srv{[](const request_info& info) {
    auto a = respond("raced");
    a.delay = milliseconds{std::stoi(info.request.body())};
    return a;
  }};
  auto conn = connect("127.0.0.1", srv.port());
  for (int i = 0; i < 33; ++i) {
    auto r = exchange(*conn, post(std::to_string(5 + i % 11)), 10ms);
    INFO(to_string(r.error) << ": " << r.message);
    CHECK((r.error == transport_errc::none
           || r.error == transport_errc::timeout));
    if (r.error == transport_errc::none)
      CHECK(r.response.body == "raced");
  }
  auto r = exchange(*conn, post("0"));
  REQUIRE_OK(r);
  CHECK(r.response.body == "raced");
}

TEST_CASE_METHOD(fixture, "close() racing with responses completes once",
                 "[http_transport]") {
  test_server srv{echo};
  auto conn = connect("127.0.0.1", srv.port());
  for (int i = 0; i < 50; ++i) {
    auto p = start(*conn, post("x"));
    if (i % 2 == 0)
      std::this_thread::yield();
    conn->close();
    auto r = wait(*p);
    INFO(to_string(r.error) << ": " << r.message);
    CHECK((r.error == transport_errc::none
           || r.error == transport_errc::cancelled));
  }
  REQUIRE_OK(exchange(*conn));
}

TEST_CASE_METHOD(fixture, "invalid requests fail without leaking secrets",
                 "[http_transport]") {
  test_server srv{echo};
  auto conn = connect("127.0.0.1", srv.port());
  REQUIRE_OK(exchange(*conn));
  auto bad = post("x");
  bad.headers.emplace_back("Authorization",
                           "Bearer sk-secret\r\nX-Injected: 1");
  auto r1 = exchange(*conn, bad);
  REQUIRE_ERROR(r1, transport_errc::protocol_error);
  CHECK_THAT(r1.message,
             Catch::Contains("authorization", Catch::CaseSensitive::No));
  CHECK_THAT(r1.message, !Catch::Contains("sk-secret"));
  auto bad_target = post("x");
  bad_target.target = "/a b";
  REQUIRE_ERROR(exchange(*conn, bad_target), transport_errc::protocol_error);
  auto bad_name = post("x");
  bad_name.headers.emplace_back("Bad Name", "v");
  REQUIRE_ERROR(exchange(*conn, bad_name), transport_errc::protocol_error);
  // The transport owns framing headers; the connection stays reusable.
  auto framing = post("y");
  framing.headers.emplace_back("Connection", "close");
  framing.headers.emplace_back("Content-Length", "999");
  auto r2 = exchange(*conn, framing);
  REQUIRE_OK(r2);
  CHECK(r2.reused);
  CHECK(r2.response.body == "echo:y");
  auto r3 = exchange(*conn);
  REQUIRE_OK(r3);
  CHECK(r3.reused);
  CHECK(srv.snapshot().accepted == 1);
}

TEST_CASE_METHOD(fixture, "a malformed response is a protocol error",
                 "[http_transport]") {
  test_server srv{[](const request_info&) {
    auto a = respond("x");
    a.headers.emplace_back("Bad Header", "1");
    return a;
  }};
  auto conn = connect("127.0.0.1", srv.port());
  auto r = exchange(*conn);
  REQUIRE_ERROR(r, transport_errc::protocol_error);
  CHECK_THAT(r.message, Catch::Contains("invalid HTTP response"));
}

// -- TLS
// -------------------------------------------------------------------------

TEST_CASE_METHOD(fixture, "TLS with the test CA", "[http_transport][tls]") {
  test_server srv{echo, test_server::mode::tls};
  auto tls = tls_with(tls_file("ca.pem"));
  SECTION("IP literal: no SNI, IP address verified") {
    auto conn = connect("127.0.0.1", srv.port(), tls);
    for (int i = 0; i < 3; ++i) {
      auto r = exchange(*conn, post(std::to_string(i)));
      REQUIRE_OK(r);
      CHECK(r.connected == (i == 0));
      CHECK(r.reused == (i != 0));
      CHECK(r.response.body == "echo:" + std::to_string(i));
    }
    auto stats = srv.snapshot();
    CHECK(stats.accepted == 1);
    CHECK(stats.server_names == std::vector<std::string>{""});
  }
  SECTION("DNS name: SNI sent, name verified") {
    auto conn = connect("localhost", srv.port(), tls);
    auto r = exchange(*conn);
    REQUIRE_OK(r);
    CHECK(srv.snapshot().server_names == std::vector<std::string>{"localhost"});
    auto seen = srv.snapshot().seen;
    REQUIRE(seen.size() == 1);
    CHECK(seen[0][http::field::host]
          == "localhost:" + std::to_string(srv.port()));
  }
}

// A request body over one TLS record (16 KiB) after a short head: with
// Boost 1.81 a gather write of the two as a std::array handed
// beast::ssl_stream an empty first buffer once the head was out, which it
// took for nothing to write, and the write completed without the body
// (the server then waited for it until the deadline).
TEST_CASE_METHOD(fixture, "TLS: bodies larger than a TLS record go out whole",
                 "[http_transport][tls]") {
  test_server srv{echo, test_server::mode::tls};
  auto conn = connect("127.0.0.1", srv.port(), tls_with(tls_file("ca.pem")));
  for (std::size_t size : {16'383, 16'385, 40'000, 300'000, 100}) {
    std::string body(size, 'b');
    for (std::size_t i = 0; i < size; i += 997)
      body[i] = static_cast<char>('a' + i % 26);
    auto r = exchange(*conn, post(body));
    REQUIRE_OK(r);
    CHECK(r.response.body == "echo:" + body);
  }
  CHECK(srv.snapshot().accepted == 1);
}

TEST_CASE_METHOD(fixture, "TLS without a trusted CA fails",
                 "[http_transport][tls]") {
  test_server srv{echo, test_server::mode::tls};
  SECTION("system CAs") {
    auto conn = connect("127.0.0.1", srv.port(), tls_with(""));
    auto r = exchange(*conn);
    REQUIRE_ERROR(r, transport_errc::tls_failed);
    CHECK_THAT(r.message,
               Catch::StartsWith("TLS handshake with 127.0.0.1:"
                                 + std::to_string(srv.port())
                                 + " failed: certificate verify failed"));
  }
  SECTION("an unrelated CA") {
    auto conn
        = connect("127.0.0.1", srv.port(), tls_with(tls_file("other.pem")));
    auto r = exchange(*conn);
    REQUIRE_ERROR(r, transport_errc::tls_failed);
    CHECK_THAT(r.message, Catch::Contains("certificate verify failed"));
  }
  CHECK(srv.wait_until([](const auto& s) {
    return s.handshake_failures == 1;
  }));
  CHECK(srv.snapshot().requests == 0);
}

TEST_CASE_METHOD(fixture, "TLS host name mismatch fails",
                 "[http_transport][tls]") {
  // The certificate names localhost and 127.0.0.1, not 127.0.0.2.
  test_server srv{echo, test_server::mode::tls, "127.0.0.2"};
  auto conn = connect("127.0.0.2", srv.port(), tls_with(tls_file("ca.pem")));
  auto r = exchange(*conn);
  REQUIRE_ERROR(r, transport_errc::tls_failed);
  CHECK_THAT(r.message, Catch::Contains("does not match host '127.0.0.2'"));
  CHECK(srv.snapshot().requests == 0);
}

TEST_CASE_METHOD(fixture, "TLS verification can be turned off",
                 "[http_transport][tls]") {
  test_server srv{echo, test_server::mode::tls, "127.0.0.2"};
  auto conn = connect("127.0.0.2", srv.port(), tls_with("", false));
  REQUIRE_OK(exchange(*conn));
}

TEST_CASE_METHOD(fixture, "a stale TLS connection is replaced transparently",
                 "[http_transport][tls]") {
  test_server srv{[](const request_info& info) {
                    auto a = respond("c" + std::to_string(info.connection));
                    if (info.connection == 0)
                      a.kind = action::respond_then_close;
                    return a;
                  },
                  test_server::mode::tls};
  auto conn = connect("127.0.0.1", srv.port(), tls_with(tls_file("ca.pem")));
  REQUIRE_OK(exchange(*conn));
  REQUIRE(srv.wait_until([](const auto& s) {
    return s.server_closes == 1;
  }));
  auto r = exchange(*conn);
  REQUIRE_OK(r);
  CHECK(r.connected);
  CHECK(r.response.body == "c1");
}

TEST_CASE("make_tls_config reports a missing CA file",
          "[http_transport][tls]") {
  tls_options opts;
  opts.ca_file = "/nonexistent/ca.pem";
  std::string error;
  CHECK(make_tls_config(opts, error) == nullptr);
  CHECK_THAT(error, Catch::Contains("/nonexistent/ca.pem"));
}

// -- stress
// ----------------------------------------------------------------------

TEST_CASE_METHOD(fixture, "64 connections x 200 exchanges over 2 I/O threads",
                 "[http_transport][stress]") {
  constexpr std::size_t connections = 64;
  constexpr std::size_t per_connection = 200;
  test_server srv{echo, test_server::mode::http, "127.0.0.1", false};

  // Each chain starts its next exchange from the completion of the previous
  // one, on an I/O thread.
  struct chain : std::enable_shared_from_this<chain> {
    std::shared_ptr<http_connection> conn;
    std::size_t id = 0;
    std::size_t next = 0;
    std::vector<int> calls = std::vector<int>(per_connection, 0);
    std::vector<std::string> failures;
    std::function<void()> on_finished;

    void run() {
      auto i = next;
      conn->async_exchange(post(std::to_string(id) + "/" + std::to_string(i)),
                           10s,
                           [self = shared_from_this(), i](exchange_result r) {
                             self->on_done(i, std::move(r));
                           });
    }

    void on_done(std::size_t i, exchange_result r) {
      if (++calls[i] > 1)
        return; // counted; the check after the join reports it
      std::string expected
          = "echo:" + std::to_string(id) + "/" + std::to_string(i);
      if (r.error != transport_errc::none || r.response.body != expected
          || r.connected != (i == 0) || r.reused != (i != 0))
        failures.push_back(std::to_string(i) + ": " + to_string(r.error) + " "
                           + r.message + " body=" + r.response.body);
      if (++next < per_connection)
        run();
      else
        on_finished();
    }
  };

  std::mutex mtx;
  std::condition_variable cv;
  std::size_t finished = 0;
  std::vector<std::shared_ptr<chain>> chains;
  for (std::size_t c = 0; c < connections; ++c) {
    auto ch = std::make_shared<chain>();
    ch->conn = connect("127.0.0.1", srv.port());
    ch->id = c;
    ch->on_finished = [&] {
      std::lock_guard<std::mutex> guard{mtx};
      ++finished;
      cv.notify_all();
    };
    chains.push_back(ch);
  }
  for (auto& ch : chains)
    ch->run();
  {
    std::unique_lock<std::mutex> guard{mtx};
    REQUIRE(cv.wait_for(guard, 60s, [&] {
      return finished == connections;
    }));
  }
  io_.stop();
  for (auto& ch : chains) {
    INFO("connection " << ch->id);
    CHECK(ch->failures.empty());
    if (!ch->failures.empty())
      FAIL_CHECK(ch->failures.front());
    for (int n : ch->calls)
      REQUIRE(n == 1);
  }
  auto stats = srv.snapshot();
  CHECK(stats.accepted == connections);
  CHECK(stats.requests == connections * per_connection);
}
