// The HTTP/1.1 client transport, after Beast's async SSL client example
// (example/http/client/async-ssl): one session object per connection, a chain
// resolve -> connect -> handshake -> write -> read where each step starts with
// `if (ec) return fail(...)`, everything on a strand of the shared io_context.
//
// Two ideas carry the correctness of the whole file:
//
// 1. Every exchange has a sequence number and one stored completion. `finish`
//    is the only place that invokes it: it clears the stored completion and
//    bumps the sequence number *before* the call, so whichever of {the I/O
//    chain, the deadline timer, close()} gets there first wins and every later
//    handler sees a stale sequence number and does nothing. All of them run on
//    the strand, so there is no race between the check and the clear.
//
// 2. Everything an in-flight Asio operation refers to (resolver, stream,
//    buffer, request, parser) lives in a heap-allocated `link`, and each
//    handler holds that link by shared_ptr. An exchange abandoned on timeout
//    or close() can therefore complete at once and the connection can open a
//    new link right away, while the aborted operation on the old link finishes
//    later against objects that are still alive.

#include "http_transport.hpp"

// GCC 12 with -fsanitize=thread warns (-Wtsan, an error under -Werror) about
// the std::atomic_thread_fence in Asio's fenced_block: TSan does not model
// fences. Asio's cross-thread handoff is synchronised by the scheduler's and
// the strand's mutexes, which TSan does model, so the warning is noise here.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#  pragma GCC diagnostic ignored "-Wtsan"
#endif

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/verify_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_cat.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <cstring>
#include <exception>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <type_traits>

namespace embedrt::detail {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

const char* to_string(transport_errc x) {
  switch (x) {
    case transport_errc::none: return "none";
    case transport_errc::resolve_failed: return "resolve_failed";
    case transport_errc::connect_failed: return "connect_failed";
    case transport_errc::tls_failed: return "tls_failed";
    case transport_errc::timeout: return "timeout";
    case transport_errc::connection_closed: return "connection_closed";
    case transport_errc::protocol_error: return "protocol_error";
    case transport_errc::body_too_large: return "body_too_large";
    case transport_errc::cancelled: return "cancelled";
  }
  return "unknown";
}

namespace {

char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i]))
      return false;
  return true;
}

} // namespace

std::optional<std::string_view>
http_response::header(std::string_view name) const {
  for (const auto& [key, value] : headers)
    if (iequals(key, name))
      return std::string_view{value};
  return std::nullopt;
}

class tls_config {
 public:
  explicit tls_config(bool verify_peer)
      : ctx(ssl::context::tls_client), verify(verify_peer) {}

  ssl::context ctx;
  bool verify;
};

std::shared_ptr<tls_config> make_tls_config(const tls_options& opts,
                                            std::string& error) {
  try {
    auto cfg = std::make_shared<tls_config>(opts.verify);
    if (SSL_CTX_set_min_proto_version(cfg->ctx.native_handle(), TLS1_2_VERSION)
        != 1) {
      error = "cannot restrict TLS to version 1.2 or later";
      return nullptr;
    }
    error_code ec;
    cfg->ctx.set_options(
        ssl::context::default_workarounds | ssl::context::no_compression, ec);
    if (!ec)
      cfg->ctx.set_verify_mode(
          opts.verify ? ssl::verify_peer : ssl::verify_none, ec);
    if (ec) {
      error = "cannot configure TLS: " + ec.message();
      return nullptr;
    }
    if (opts.verify) {
      if (!opts.ca_file.empty()) {
        cfg->ctx.load_verify_file(opts.ca_file, ec);
        if (ec) {
          error = "cannot load CA file '" + opts.ca_file + "': " + ec.message();
          return nullptr;
        }
      } else {
        cfg->ctx.set_default_verify_paths(ec);
        if (ec) {
          error = "cannot load the system's trusted CAs: " + ec.message();
          return nullptr;
        }
      }
    }
    return cfg;
  } catch (const std::exception& e) {
    error = std::string{"cannot create a TLS context: "} + e.what();
    return nullptr;
  }
}

namespace {

using strand_type = net::strand<net::io_context::executor_type>;
using clock_type = std::chrono::steady_clock;

/// Upper bound for the status line plus header fields of a response.
constexpr std::uint32_t max_header_bytes = 64 * 1024;

/// Where an exchange currently is; only used to describe timeouts.
enum class stage : uint8_t {
  idle,
  resolving,
  connecting,
  handshaking,
  writing,
  reading,
};

const char* describe(stage s) {
  switch (s) {
    case stage::idle: return "idle";
    case stage::resolving: return "resolving the host name";
    case stage::connecting: return "connecting";
    case stage::handshaking: return "in the TLS handshake";
    case stage::writing: return "writing the request";
    case stage::reading: return "reading the response";
  }
  return "unknown";
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

bool is_tchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
      || (c >= 'A' && c <= 'Z'))
    return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

bool is_token(std::string_view s) {
  if (s.empty())
    return false;
  for (char c : s)
    if (!is_tchar(c))
      return false;
  return true;
}

bool is_field_value(std::string_view s) {
  for (char c : s)
    if (c == '\r' || c == '\n' || c == '\0')
      return false;
  return true;
}

bool is_request_target(std::string_view s) {
  if (s.empty())
    return false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f)
      return false;
  }
  return true;
}

/// Errors that mean "the peer closed or reset the connection".
bool is_closed_error(const error_code& ec) {
  return ec == net::error::eof || ec == http::error::end_of_stream
      || ec == http::error::partial_message
      || ec == net::error::connection_reset
      || ec == net::error::connection_aborted || ec == net::error::broken_pipe
      || ec == ssl::error::stream_truncated;
}

/// The errors a server's close of an idle keep-alive connection shows up as
/// on our next write or on the first read (TLS servers often close without a
/// close_notify, hence stream_truncated).
bool is_stale_connection_error(const error_code& ec) {
  return ec == net::error::eof || ec == http::error::end_of_stream
      || ec == net::error::connection_reset
      || ec == net::error::connection_aborted || ec == net::error::broken_pipe
      || ec == ssl::error::stream_truncated;
}

/// The request's start line and fields as they go on the wire, up to the
/// empty line: the message is sent as this string and the body, in one
/// gather write. Beast's serializer writes the same bytes, but walks the
/// fields through layers of buffer-sequence iterators on every write; this
/// is the hot path of every request (docs/profile.md).
void write_head(const http::request<http::string_body>& req, std::string& out) {
  auto add = [&out](beast::string_view s) {
    out.append(s.data(), s.size());
  };
  out.clear();
  add(req.method_string());
  out += ' ';
  add(req.target());
  out += req.version() == 10 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n";
  for (const auto& field : req) {
    add(field.name_string());
    out += ": ";
    add(field.value());
    out += "\r\n";
  }
  out += "\r\n";
}

/// One TCP (and TLS) connection and everything its operations refer to.
struct link {
  link(const strand_type& strand, std::shared_ptr<tls_config> cfg)
      : tls(std::move(cfg)), resolver(strand) {
    if (tls)
      tls_stream.emplace(strand, tls->ctx);
    else
      plain_stream.emplace(strand);
  }

  beast::tcp_stream& tcp() {
    return plain_stream ? *plain_stream : beast::get_lowest_layer(*tls_stream);
  }

  /// Calls `f` with the stream HTTP goes over (plain or TLS).
  template <class F>
  void with_stream(F&& f) {
    if (plain_stream)
      f(*plain_stream);
    else
      f(*tls_stream);
  }

  /// Aborts every pending operation and closes the socket (no TLS
  /// close_notify: we never wait for a peer that may be stuck).
  void close() {
    resolver.cancel();
    tcp().close();
  }

  // Declared first: the TLS stream refers to its context until destroyed.
  std::shared_ptr<tls_config> tls;
  tcp::resolver resolver;
  std::optional<beast::tcp_stream> plain_stream;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_stream;
  /// Persists across the exchanges of this connection (bytes read past one
  /// response belong to the next read).
  beast::flat_buffer buffer;
  http::request<http::string_body> request;
  /// The request's head on the wire (write_head), kept for the write.
  std::string head;
  /// A parser reads exactly one message; re-emplaced (no heap allocation of
  /// its own) for each response.
  std::optional<http::response_parser<http::string_body>> parser;
  /// Why certificate verification failed, filled by the verify callback.
  std::string verify_error;
};

/// Peer verification plus host name verification (DNS name or IP address),
/// recording a readable reason on failure.
class verifier {
 public:
  verifier(std::string host, link* owner)
      : check_(host), host_(std::move(host)), owner_(owner) {}

  bool operator()(bool preverified, ssl::verify_context& ctx) const {
    if (!preverified) {
      if (owner_->verify_error.empty()) {
        int err = X509_STORE_CTX_get_error(ctx.native_handle());
        owner_->verify_error = X509_verify_cert_error_string(err);
      }
      return false;
    }
    if (!check_(preverified, ctx)) {
      owner_->verify_error = "certificate does not match host '" + host_ + "'";
      return false;
    }
    return true;
  }

 private:
  ssl::host_name_verification check_;
  std::string host_;
  // The link owns the stream that owns this callback, so it outlives us.
  link* owner_;
};

class connection_impl final : public http_connection {
 public:
  connection_impl(net::io_context& ctx, connection_options opts)
      : strand_(net::make_strand(ctx)),
        timer_(strand_),
        opts_(std::move(opts)),
        port_string_(std::to_string(opts_.port)) {
    bool ipv6 = opts_.host.find(':') != std::string::npos;
    std::string host = ipv6 ? "[" + opts_.host + "]" : opts_.host;
    endpoint_ = host + ":" + port_string_;
    uint16_t default_port = opts_.tls ? 443 : 80;
    host_header_ = opts_.port == default_port ? host : endpoint_;
  }

  void async_exchange(http_request req, std::chrono::milliseconds timeout,
                      completion done) override {
    if (!done)
      done = [](exchange_result) {};
    net::post(strand_,
              [self = shared_self(), req = std::move(req), timeout,
               done = std::move(done)]() mutable {
                self->start(std::move(req), timeout, std::move(done));
              });
  }

  void close() override {
    net::post(strand_, [self = shared_self()] {
      self->do_close();
    });
  }

 private:
  std::shared_ptr<connection_impl> shared_self() {
    return std::static_pointer_cast<connection_impl>(shared_from_this());
  }

  /// True if a handler for `l` started by exchange `seq` is still relevant.
  bool current(const std::shared_ptr<link>& l, uint64_t seq) const {
    return done_ && seq == seq_ && l == link_;
  }

  static void invoke(completion& done, exchange_result result) {
    // An exception thrown by the callback must not unwind into io_context::run
    // (it would take an I/O thread down with it); the callback owns its errors.
    try {
      done(std::move(result));
    } catch (...) {
    }
  }

  // -- the exchange chain ----------------------------------------------------

  void start(http_request req, std::chrono::milliseconds timeout,
             completion done) {
    if (done_) {
      // A second concurrent call is a caller bug; answer it without touching
      // the pending exchange.
      exchange_result r;
      r.error = transport_errc::protocol_error;
      r.message = "exchange already pending";
      invoke(done, std::move(r));
      return;
    }
    done_ = std::move(done);
    started_ = clock_type::now();
    timeout_ = timeout;
    retried_ = false;
    result_ = exchange_result{};
    http::request<http::string_body> msg;
    // Neither failure touched the connection: an idle one stays usable.
    if (std::string err; !build_request(req, msg, err))
      return finish(transport_errc::protocol_error, std::move(err));
    if (timeout.count() <= 0)
      return finish(transport_errc::timeout,
                    "the deadline for the exchange with " + endpoint_
                        + " had already passed");
    timer_.expires_after(timeout);
    timer_.async_wait([self = shared_self(), seq = seq_](error_code ec) {
      self->on_timer(ec, seq);
    });
    if (link_) {
      // Only an idle connection whose last exchange succeeded is kept.
      result_.reused = true;
      link_->request = std::move(msg);
      write(link_);
    } else {
      connect(std::move(msg));
    }
  }

  void connect(http::request<http::string_body> msg) {
    if (link_) {
      link_->close();
      link_.reset();
    }
    connect_started_ = clock_type::now();
    try {
      link_ = std::make_shared<link>(strand_, opts_.tls);
    } catch (const std::exception& e) {
      return fail(transport_errc::tls_failed,
                  std::string{"cannot create a TLS stream: "} + e.what());
    }
    link_->request = std::move(msg);
    if (link_->tls_stream) {
      auto* ssl_handle = link_->tls_stream->native_handle();
      // SNI: many servers need it to pick the certificate. RFC 6066 forbids
      // IP literals here.
      if (!is_ip_literal(opts_.host)
          && !SSL_set_tlsext_host_name(ssl_handle, opts_.host.c_str()))
        return fail(transport_errc::tls_failed,
                    "cannot set the TLS server name for " + endpoint_);
      if (opts_.tls->verify) {
        error_code ec;
        link_->tls_stream->set_verify_callback(
            verifier{opts_.host, link_.get()}, ec);
        if (ec)
          return fail(transport_errc::tls_failed,
                      "cannot enable TLS host name verification: "
                          + ec.message());
      }
    }
    stage_ = stage::resolving;
    link_->resolver.async_resolve(
        opts_.host, port_string_,
        [self = shared_self(), l = link_,
         seq = seq_](error_code ec, tcp::resolver::results_type results) {
          self->on_resolve(l, seq, ec, std::move(results));
        });
  }

  void on_resolve(const std::shared_ptr<link>& l, uint64_t seq, error_code ec,
                  tcp::resolver::results_type results) {
    if (!current(l, seq))
      return;
    if (ec)
      return fail(transport_errc::resolve_failed,
                  "cannot resolve '" + opts_.host + "': " + ec.message());
    stage_ = stage::connecting;
    l->tcp().async_connect(
        results,
        [self = shared_self(), l, seq](error_code ec, const tcp::endpoint&) {
          self->on_connect(l, seq, ec);
        });
  }

  void on_connect(const std::shared_ptr<link>& l, uint64_t seq, error_code ec) {
    if (!current(l, seq))
      return;
    if (ec)
      return fail(transport_errc::connect_failed,
                  "connect to " + endpoint_ + " failed: " + ec.message());
    // Requests are small and latency matters more than segment count.
    error_code ignored;
    l->tcp().socket().set_option(tcp::no_delay{true}, ignored);
    if (!l->tls_stream)
      return on_connected(l);
    stage_ = stage::handshaking;
    l->tls_stream->async_handshake(
        ssl::stream_base::client,
        [self = shared_self(), l, seq](error_code ec) {
          self->on_handshake(l, seq, ec);
        });
  }

  void on_handshake(const std::shared_ptr<link>& l, uint64_t seq,
                    error_code ec) {
    if (!current(l, seq))
      return;
    if (ec) {
      std::string reason = ec.message();
      if (!l->verify_error.empty())
        reason = "certificate verify failed: " + l->verify_error;
      return fail(transport_errc::tls_failed,
                  "TLS handshake with " + endpoint_ + " failed: " + reason);
    }
    on_connected(l);
  }

  void on_connected(const std::shared_ptr<link>& l) {
    result_.connected = true;
    result_.reused = false;
    result_.connect_time = clock_type::now() - connect_started_;
    write(l);
  }

  void write(const std::shared_ptr<link>& l) {
    stage_ = stage::writing;
    write_head(l->request, l->head);
    auto done
        = [self = shared_self(), l, seq = seq_](error_code ec, std::size_t) {
            self->on_write(l, seq, ec);
          };
    l->with_stream([&](auto& stream) {
      if constexpr (std::is_same_v<std::decay_t<decltype(stream)>,
                                   beast::tcp_stream>) {
        std::array<net::const_buffer, 2> wire{net::buffer(l->head),
                                              net::buffer(l->request.body())};
        net::async_write(stream, wire, std::move(done));
      } else {
        // Not a std::array over TLS: Asio's write of a two-buffer array
        // hands the stream an empty first buffer once the head is out, and
        // beast::ssl_stream (Boost 1.81) takes that for nothing to write
        // when the body is over 16 KiB; async_write then completes, without
        // error, with the body never sent. buffers_cat's sequence skips
        // what was written.
        net::async_write(stream,
                         beast::buffers_cat(net::buffer(l->head),
                                            net::buffer(l->request.body())),
                         std::move(done));
      }
    });
  }

  void on_write(const std::shared_ptr<link>& l, uint64_t seq, error_code ec) {
    if (!current(l, seq))
      return;
    if (ec) {
      if (may_retry(ec))
        return retry();
      return fail(transport_errc::connection_closed,
                  "writing the request to " + endpoint_
                      + " failed: " + ec.message());
    }
    read(l);
  }

  void read(const std::shared_ptr<link>& l) {
    stage_ = stage::reading;
    auto& parser = l->parser.emplace();
    parser.body_limit(static_cast<std::uint64_t>(opts_.max_body_bytes));
    parser.header_limit(max_header_bytes);
    // The response to HEAD announces a length but has no body.
    if (l->request.method() == http::verb::head)
      parser.skip(true);
    l->with_stream([&](auto& stream) {
      http::async_read(
          stream, l->buffer, parser,
          [self = shared_self(), l, seq = seq_](error_code ec, std::size_t) {
            self->on_read(l, seq, ec);
          });
    });
  }

  void on_read(const std::shared_ptr<link>& l, uint64_t seq, error_code ec) {
    if (!current(l, seq))
      return;
    if (ec)
      return on_read_error(l, ec);
    auto& msg = l->parser->get();
    unsigned status = msg.result_int();
    // Interim responses (100 Continue, 103 Early Hints) precede the real one.
    if (status >= 100 && status < 200 && status != 101)
      return read(l);
    http_response& res = result_.response;
    res.status = status;
    res.keep_alive = l->parser->keep_alive() && status != 101;
    res.headers.reserve(
        static_cast<std::size_t>(std::distance(msg.begin(), msg.end())));
    for (const auto& field : msg) {
      std::string name{field.name_string()};
      for (char& c : name)
        c = ascii_lower(c);
      res.headers.emplace_back(std::move(name), std::string{field.value()});
    }
    res.body = std::move(msg.body());
    // Bytes after a complete response were never asked for: the connection's
    // framing can no longer be trusted, so it is not reused.
    if (!res.keep_alive || l->buffer.size() != 0) {
      l->close();
      link_.reset();
    }
    finish(transport_errc::none, {});
  }

  void on_read_error(const std::shared_ptr<link>& l, error_code ec) {
    if (ec == http::error::body_limit)
      return fail(transport_errc::body_too_large,
                  "the response body from " + endpoint_
                      + " exceeds the limit of "
                      + std::to_string(opts_.max_body_bytes) + " bytes");
    bool nothing_received = !l->parser->got_some() && l->buffer.size() == 0;
    if (nothing_received && may_retry(ec))
      return retry();
    if (is_closed_error(ec))
      return fail(transport_errc::connection_closed,
                  endpoint_
                      + (nothing_received
                             ? " closed the connection before responding ("
                             : " closed the connection in the middle of the "
                               "response (")
                      + ec.message() + ")");
    if (ec.category()
        == http::make_error_code(http::error::bad_version).category())
      return fail(transport_errc::protocol_error,
                  "invalid HTTP response from " + endpoint_ + ": "
                      + ec.message());
    fail(transport_errc::connection_closed,
         "reading the response from " + endpoint_ + " failed: " + ec.message());
  }

  // -- stale keep-alive connections ------------------------------------------

  /// A reused connection that fails before any byte of the response arrived
  /// was most likely closed by the server while idle (keep-alive timeout):
  /// the request is sent once more over a new connection.
  bool may_retry(const error_code& ec) const {
    return result_.reused && !retried_ && is_stale_connection_error(ec);
  }

  void retry() {
    retried_ = true;
    result_.reused = false;
    // No operation is pending on the old link (we are in its only handler).
    auto msg = std::move(link_->request);
    connect(std::move(msg));
  }

  // -- deadline, close, completion -------------------------------------------

  void on_timer(error_code ec, uint64_t seq) {
    if (ec == net::error::operation_aborted || seq != seq_ || !done_)
      return;
    fail(transport_errc::timeout,
         "timed out after " + std::to_string(timeout_.count()) + " ms "
             + describe(stage_) + " (" + endpoint_ + ")");
  }

  void do_close() {
    if (link_) {
      link_->close();
      link_.reset();
    }
    if (done_)
      finish(transport_errc::cancelled,
             "the connection to " + endpoint_
                 + " was closed while the exchange was pending");
  }

  /// Closes the connection (the next exchange reconnects) and completes.
  void fail(transport_errc err, std::string message) {
    if (link_) {
      link_->close();
      link_.reset();
    }
    finish(err, std::move(message));
  }

  /// The only place that invokes the completion: clears it and invalidates
  /// the exchange's handlers first, so it runs exactly once.
  void finish(transport_errc err, std::string message) {
    error_code ignored;
    timer_.cancel(ignored);
    stage_ = stage::idle;
    ++seq_;
    completion done = std::move(done_);
    done_ = nullptr;
    exchange_result result = std::move(result_);
    result_ = exchange_result{};
    result.error = err;
    result.message = std::move(message);
    if (err != transport_errc::none)
      result.response = http_response{};
    result.total_time = clock_type::now() - started_;
    result.open_after = link_ != nullptr;
    // The request was needed until now (a stale connection sends it again);
    // an idle connection does not hold its body (up to megabytes) any longer.
    if (link_)
      link_->request = {};
    // State is consistent: `done` may start the next exchange (it posts).
    invoke(done, std::move(result));
  }

  // -- request ---------------------------------------------------------------

  bool build_request(http_request& req, http::request<http::string_body>& msg,
                     std::string& err) const {
    if (!is_token(req.method)) {
      err = "invalid request: bad method";
      return false;
    }
    if (!is_request_target(req.target)) {
      err = "invalid request: bad target";
      return false;
    }
    msg.version(11);
    if (auto verb = http::string_to_verb(req.method);
        verb != http::verb::unknown)
      msg.method(verb);
    else
      msg.method_string(req.method);
    msg.target(req.target);
    msg.set(http::field::host, host_header_);
    if (!req.content_type.empty() && !req.body.empty()) {
      if (!is_field_value(req.content_type)) {
        err = "invalid request: bad content type";
        return false;
      }
      msg.set(http::field::content_type, req.content_type);
    }
    for (auto& [name, value] : req.headers) {
      // Header values may be secrets: only names go into messages.
      if (!is_token(name)) {
        err = "invalid request: bad header name";
        return false;
      }
      if (!is_field_value(value)) {
        err = "invalid request: bad value for header '" + name + "'";
        return false;
      }
      // Framing and routing headers are the transport's.
      if (iequals(name, "host") || iequals(name, "content-length")
          || iequals(name, "connection") || iequals(name, "transfer-encoding")
          || iequals(name, "keep-alive") || iequals(name, "upgrade"))
        continue;
      if (iequals(name, "content-type"))
        msg.set(http::field::content_type, value);
      else
        msg.insert(name, value);
    }
    msg.body() = std::move(req.body);
    msg.keep_alive(true);
    msg.prepare_payload();
    return true;
  }

  // -- state (touched only on strand_) ---------------------------------------

  strand_type strand_;
  net::steady_timer timer_;
  const connection_options opts_;
  const std::string port_string_;
  /// "host:port" ("[v6]:port"), used in messages.
  std::string endpoint_;
  std::string host_header_;

  /// The connection; non-null between exchanges only if it can be reused.
  std::shared_ptr<link> link_;
  /// The pending exchange's completion; empty when idle.
  completion done_;
  /// Incremented by `finish`; handlers compare it with their capture.
  uint64_t seq_ = 0;
  exchange_result result_;
  clock_type::time_point started_;
  clock_type::time_point connect_started_;
  std::chrono::milliseconds timeout_{0};
  stage stage_ = stage::idle;
  bool retried_ = false;
};

} // namespace

std::shared_ptr<http_connection>
http_connection::make(boost::asio::io_context& ctx, connection_options opts) {
  return std::make_shared<connection_impl>(ctx, std::move(opts));
}

} // namespace embedrt::detail
