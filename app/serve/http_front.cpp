#include "serve/http_front.hpp"

#include "embedrt/log.hpp"
#include "httpd/listener.hpp"
#include "serve/front_parse.hpp"
#include "serve/reply_head.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <future>
#include <mutex>
#include <optional>
#include <random>
#include <sys/resource.h>
#include <type_traits>
#include <unordered_map>

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
namespace ssl = net::ssl;

namespace embedrt::serve {

namespace {

using namespace std::chrono_literals;

/// At the end of the grace period, the time left to a reply being written.
constexpr auto final_write_timeout = 1s;
/// How long the destructor waits for the I/O threads to let go of the
/// shared state.
constexpr auto release_timeout = 5s;

/// Bytes asked for by the read that waits for a request's first byte.
constexpr std::size_t first_read_bytes = 4096;

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Half the file descriptor limit (the rest is for upstream connections,
/// the runtime and the process), between 16 and 16384.
std::size_t default_max_connections() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY)
    return 16384;
  return std::clamp<std::size_t>(static_cast<std::size_t>(lim.rlim_cur / 2), 16,
                                 16384);
}

/// "req-" + 8 hex digits drawn once per process + "-" + a counter: unique
/// within a process and, very likely, across restarts.
std::string request_id_prefix() {
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof(buf), "req-%08x-", static_cast<unsigned>(rd()));
  return buf;
}

/// What the shared state and the drain need of a connection, whatever its
/// stream (plain TCP or TLS).
class session_base {
 public:
  virtual ~session_base() = default;

  /// See session<Stream>.
  virtual void begin_drain() = 0;
  virtual void expire() = 0;
  virtual void evict() = 0;
  virtual void close_now() = 0;

  /// Since when the connection waits for a next request with nothing
  /// received (steady clock, ns), 0 if it does not. Read from other threads.
  int64_t idle_since() const noexcept {
    return idle_since_.load(std::memory_order_relaxed);
  }

  /// Claims the connection for eviction if it is idle (so that it is picked
  /// once); true if it was.
  bool claim_idle(int64_t since) noexcept {
    return idle_since_.compare_exchange_strong(since, 0,
                                               std::memory_order_relaxed);
  }

 protected:
  std::atomic<int64_t> idle_since_{0};
};

/// Fulfils its promise when destroyed: the first member of the shared
/// state, so it goes last, after the listener, the timers and the handler.
struct release_signal {
  std::promise<void> promise;
  ~release_signal() {
    promise.set_value();
  }
};

} // namespace

/// State shared by the front end and its sessions (sessions hold it by
/// shared_ptr, so it outlives them all).
struct http_front::impl : std::enable_shared_from_this<http_front::impl> {
  impl(net::io_context& ctx, front_options o, request_handler h)
      : ioc(ctx),
        opts(std::move(o)),
        handler(std::move(h)),
        listener(net::make_strand(ctx)),
        grace_timer(listener.executor()) {
    // nop
  }

  void on_socket(tcp::socket s);
  /// Loads the certificate chain and key; false with `tls_error` set.
  bool init_tls();
  std::string tls_error;
  bool admit();
  bool evict_oldest_idle();
  void on_accept_error(const beast::error_code& ec);
  /// What happens at a connection limit, each logged at most once per
  /// interval (with the count since its last line).
  enum class limit_event { evicted_idle, refused, accept_failed };
  void note(limit_event what, const std::string& error = {});
  std::string next_request_id() {
    return id_prefix + std::to_string(++id_counter);
  }
  void add(const std::shared_ptr<session_base>& s);
  void remove(session_base* s);
  std::vector<std::shared_ptr<session_base>> snapshot();
  void expire_all();
  void close_all();

  /// Signalled when the last owner lets go (see ~http_front).
  release_signal released;
  net::io_context& ioc;
  front_options opts;
  request_handler handler;
  /// Runs on a strand: the accept loop, add(), the grace timer, the drain's
  /// and the destructor's closing of the listener.
  httpd::listener listener;
  net::steady_timer grace_timer;
  /// Sessions by address (weak: a session lives as long as its I/O does).
  mutable std::mutex mtx;
  std::unordered_map<session_base*, std::weak_ptr<session_base>> sessions;
  bool draining = false;
  std::function<void()> on_drained;
  bool drained_called = false;
  /// The listener's TLS context (with tls_certificate and tls_key).
  std::optional<ssl::context> tls;
  /// The connection limit in force (set by start()).
  std::size_t max_connections = 0;
  const std::string id_prefix = request_id_prefix();
  std::atomic<uint64_t> id_counter{0};
  /// Per limit_event: occurrences since its last log line, and when that
  /// was (listener strand only).
  struct throttle {
    uint64_t count = 0;
    std::chrono::steady_clock::time_point last{};
  };
  std::array<throttle, 3> throttles;
};

namespace {

/// One client connection: reads a request, hands it to the handler, writes
/// the reply, and reads the next (HTTP/1.1 keep-alive; one request at a
/// time). All members are touched only on the session's strand.
template <class Stream>
class session : public session_base,
                public std::enable_shared_from_this<session<Stream>> {
 public:
  static constexpr bool is_tls = !std::is_same_v<Stream, beast::tcp_stream>;
  using std::enable_shared_from_this<session<Stream>>::shared_from_this;
  enum class phase {
    /// Waiting for the next request (nothing of it received yet, as far as
    /// the buffer shows).
    idle,
    /// Receiving a request.
    reading,
    /// The handler has the request; waiting for its reply.
    waiting,
    /// Sending a reply.
    writing,
    /// Closing after a `Connection: close` reply (reading until EOF).
    lingering,
    closed,
  };

  template <class... Ts>
  session(std::shared_ptr<http_front::impl> core, Ts&&... xs)
      : core_(std::move(core)),
        stream_(std::forward<Ts>(xs)...),
        read_timer_(stream_.get_executor()) {
    // nop
  }

  ~session() override {
    core_->remove(this);
  }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->on_start();
    });
  }

  /// Graceful shutdown began: an idle connection with nothing to read closes
  /// now; a request in progress, or one that already arrived (buffered, or
  /// waiting in the socket), is answered with `Connection: close`.
  void begin_drain() override {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->draining_ = true;
      if (self->phase_ == phase::idle && !self->input_pending())
        self->hard_close();
    });
  }

  /// The grace period is over: a request still waiting for its reply gets a
  /// 503 now; a request still being received is abandoned (it was never
  /// accepted), and the connection closes.
  void expire() override {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->draining_ = true;
      switch (self->phase_) {
        case phase::waiting: {
          auto r = error_reply(503,
                               "The server is shutting down and could not "
                               "finish this request in time; retry it",
                               "server_error", "shutting_down");
          r.headers.emplace_back("retry-after", "1");
          self->write(std::move(r));
          break;
        }
        case phase::idle:
        case phase::reading: self->hard_close(); break;
        case phase::writing:
        case phase::lingering:
          // A reply on its way (or the wait for the client to close) gets
          // one more second, not the full I/O timeout.
          self->lowest().expires_after(final_write_timeout);
          break;
        default: break;
      }
    });
  }

  /// Closes the connection if it is still idle with nothing received (its
  /// place is taken by a new connection).
  void evict() override {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (self->phase_ == phase::idle && !self->input_pending())
        self->hard_close();
    });
  }

  /// Closes at once (destructor of the front end).
  void close_now() override {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->hard_close();
    });
  }

 private:
  beast::tcp_stream& lowest() {
    return beast::get_lowest_layer(stream_);
  }

  /// A TLS connection starts with the handshake (within the request
  /// timeout); a plain one with its first request.
  void on_start() {
    if constexpr (is_tls) {
      lowest().expires_after(core_->opts.request_timeout);
      stream_.async_handshake(
          ssl::stream_base::server,
          [self = shared_from_this()](beast::error_code ec) {
            if (ec || self->phase_ == phase::closed) {
              self->hard_close();
              return;
            }
            self->lowest().expires_never();
            self->do_read();
          });
    } else {
      do_read();
    }
  }

  void do_read() {
    if (phase_ == phase::closed)
      return;
    if (draining_ && !input_pending()) {
      // Shutting down and nothing more arrived: the connection closes.
      lingering_close();
      return;
    }
    parser_.emplace();
    apply_limits(*parser_, core_->opts);
    if (buffer_.size() != 0) {
      start_request();
      return;
    }
    // Idle until the first byte of the next request: the idle timeout
    // applies, and the connection may give its place to a new one.
    phase_ = phase::idle;
    idle_since_.store(steady_ns(), std::memory_order_relaxed);
    lowest().expires_after(core_->opts.idle_timeout);
    stream_.async_read_some(
        buffer_.prepare(first_read_bytes),
        [self = shared_from_this()](beast::error_code ec, std::size_t n) {
          self->on_first_bytes(ec, n);
        });
  }

  void on_first_bytes(beast::error_code ec, std::size_t n) {
    idle_since_.store(0, std::memory_order_relaxed);
    if (phase_ == phase::closed)
      return;
    if (ec) {
      // Closed by the client, idle timeout, eviction: no request, no answer.
      hard_close();
      return;
    }
    buffer_.commit(n);
    start_request();
  }

  /// The first byte of a request is here: the whole request must arrive
  /// within the request timeout (header and body), else 408.
  void start_request() {
    phase_ = phase::reading;
    request_started_ = std::chrono::steady_clock::now();
    request_id_ = core_->next_request_id();
    lowest().expires_never();
    arm_request_timer();
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_header(ec);
        });
  }

  /// A slow request is cut by cancelling its read (not by the stream's own
  /// timeout, which would close the socket before the 408 is sent).
  void arm_request_timer() {
    auto gen = ++read_gen_;
    timed_out_ = false;
    read_timer_.expires_after(core_->opts.request_timeout);
    read_timer_.async_wait(
        [self = shared_from_this(), gen](beast::error_code ec) {
          if (ec || gen != self->read_gen_ || self->phase_ != phase::reading)
            return;
          self->timed_out_ = true;
          beast::error_code ignored;
          self->lowest().socket().cancel(ignored);
        });
  }

  void stop_request_timer() {
    ++read_gen_;
    read_timer_.cancel();
  }

  void on_header(beast::error_code ec) {
    if (phase_ == phase::closed)
      return;
    if (ec) {
      on_read_error(ec);
      return;
    }
    if (auto id = client_request_id(parser_->get()); !id.empty())
      request_id_ = std::move(id);
    if (auto err = framing_error(*parser_)) {
      // The body's end is unknown: answered, and the connection closes.
      stop_request_timer();
      keep_alive_ = false;
      write_own(std::move(*err));
      return;
    }
    if (httpd::expects_continue(parser_->get())) {
      lowest().expires_after(core_->opts.io_timeout);
      net::async_write(
          stream_,
          net::buffer(httpd::continue_line.data(), httpd::continue_line.size()),
          [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (ec || self->phase_ == phase::closed) {
              self->hard_close();
              return;
            }
            self->lowest().expires_never();
            self->read_body();
          });
      return;
    }
    read_body();
  }

  void read_body() {
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_read(ec);
        });
  }

  void on_read_error(beast::error_code ec) {
    stop_request_timer();
    keep_alive_ = false;
    // A body over the limit is found once the header is complete: the
    // reply names the client's request.
    if (parser_->is_header_done() || ec == http::error::body_limit)
      if (auto id = client_request_id(parser_->get()); !id.empty())
        request_id_ = std::move(id);
    if (timed_out_) {
      write_own(request_timeout_reply(core_->opts));
      return;
    }
    if (auto reply = read_error_reply(ec, core_->opts))
      write_own(std::move(*reply));
    else
      hard_close();
  }

  void on_read(beast::error_code ec) {
    if (phase_ == phase::closed)
      return;
    if (ec) {
      on_read_error(ec);
      return;
    }
    stop_request_timer();
    keep_alive_ = parser_->get().keep_alive();
    http10_ = parser_->get().version() < 11;
    auto fr = request_of(*parser_, std::move(request_id_));
    request_id_ = fr.request_id;
    if (auto err = decode_content(*parser_, fr, core_->opts)) {
      write_own(std::move(*err));
      return;
    }
    phase_ = phase::waiting;
    lowest().expires_never();
    // No I/O is pending while the handler has the request: the session keeps
    // itself alive until the reply comes or the connection closes (the
    // responder only holds a weak reference).
    hold_ = shared_from_this();
    auto seq = ++seq_;
    std::weak_ptr<session> weak = shared_from_this();
    auto executor = stream_.get_executor();
    responder respond = [weak, executor, seq](front_reply r) {
      if (auto self = weak.lock())
        net::post(executor, [self, seq, r = std::move(r)]() mutable {
          self->on_reply(seq, std::move(r));
        });
    };
    // The handler runs here, on the I/O thread; it must not block.
    try {
      core_->handler(std::move(fr), std::move(respond));
    } catch (const std::exception& e) {
      write(error_reply(500, std::string{"internal error: "} + e.what(),
                        "server_error", "internal_error"));
    }
  }

  /// A reply of the front end's own (the request never reached the
  /// gateway, which logs the others): written, and logged like the
  /// gateway's access log, without a client name.
  void write_own(front_reply r) {
    if (log_enabled(log_level::info)) {
      std::string method = "-";
      std::string path = "-";
      if (parser_ && parser_->is_header_done()) {
        const auto& req = parser_->get();
        auto m = req.method_string();
        auto t = req.target();
        method.assign(m.data(), m.size());
        path.assign(t.data(), std::min(t.size(), t.find('?')));
      }
      auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now() - request_started_)
                    .count();
      log(log_level::info, "http_request",
          {{"method", method},
           {"path", path},
           {"status", std::to_string(r.status)},
           {"ms",
            std::to_string(us / 1000) + "." + std::to_string(us % 1000 / 100)},
           {"client", "-"},
           {"request_id", request_id_}});
    }
    write(std::move(r));
  }

  void on_reply(uint64_t seq, front_reply r) {
    if (phase_ != phase::waiting || seq != seq_)
      return; // answered already (e.g. 503 at the end of the grace period)
    write(std::move(r));
  }

  void write(front_reply r) {
    if (phase_ == phase::closed)
      return;
    phase_ = phase::writing;
    auto keep = std::move(hold_); // the write's handler holds it now
    if (draining_)
      keep_alive_ = false;
    if (r.source && !http10_) {
      write_streamed(std::move(r));
      return;
    }
    if (r.source) {
      // HTTP/1.0 has no chunked framing: the body whole.
      while (r.source(r.body)) {
        // more
      }
      r.source = nullptr;
    }
    res_ = http::response<http::string_body>{};
    set_reply_head(res_, r, request_id_, keep_alive_);
    res_.body() = std::move(r.body);
    // A 204 has no body and no Content-Length (RFC 9110, 8.6).
    if (r.status == 204)
      res_.body().clear();
    else
      res_.prepare_payload();
    lowest().expires_after(core_->opts.io_timeout);
    // The head as a string and the body in one gather write: the bytes
    // Beast's serializer would send, without its per-write walk over the
    // fields (docs/profile.md, "I/O on the actor workers").
    write_reply_head(res_, wire_head_);
    auto done = [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->on_write(ec);
    };
    if constexpr (is_tls) {
      // Not a std::array over TLS: with one, a body over 16 KiB is never
      // sent (Boost 1.81; the reason is at the same write in
      // actors/src/http_transport.cpp).
      net::async_write(
          stream_,
          beast::buffers_cat(net::buffer(wire_head_), net::buffer(res_.body())),
          std::move(done));
    } else {
      std::array<net::const_buffer, 2> wire{net::buffer(wire_head_),
                                            net::buffer(res_.body())};
      net::async_write(stream_, wire, std::move(done));
    }
  }

  /// A reply whose body comes piece by piece: the header, one chunk per
  /// piece, the last chunk. The send timeout covers the whole reply.
  void write_streamed(front_reply r) {
    source_ = std::move(r.source);
    head_ = http::response<http::empty_body>{};
    set_reply_head(head_, r, request_id_, keep_alive_);
    head_.chunked(true);
    head_writer_.emplace(head_);
    lowest().expires_after(core_->opts.io_timeout);
    http::async_write_header(
        stream_, *head_writer_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_chunk_written(ec);
        });
  }

  void on_chunk_written(beast::error_code ec) {
    if (phase_ == phase::closed)
      return;
    if (ec) {
      hard_close();
      return;
    }
    if (stream_finished_) {
      stream_finished_ = false;
      head_writer_.reset();
      std::string{}.swap(chunk_);
      on_write(ec);
      return;
    }
    auto done = [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->on_chunk_written(ec);
    };
    if (source_) {
      chunk_.clear();
      bool more = true;
      while (more && chunk_.empty())
        more = source_(chunk_);
      if (!more)
        source_ = nullptr; // what it holds goes before the last bytes
      if (!chunk_.empty()) {
        net::async_write(stream_, http::make_chunk(net::buffer(chunk_)),
                         std::move(done));
        return;
      }
    }
    stream_finished_ = true;
    net::async_write(stream_, http::make_chunk_last(), std::move(done));
  }

  void on_write(beast::error_code ec) {
    if (phase_ == phase::closed)
      return;
    if (ec) {
      hard_close();
      return;
    }
    // A kept-alive connection does not hold on to its last reply's body.
    res_ = http::response<http::string_body>{};
    if (!keep_alive_) {
      lingering_close();
      return;
    }
    do_read();
  }

  void lingering_close() {
    phase_ = phase::lingering;
    // (TLS: no TCP half-close under the TLS layer; the client closes after
    // the `Connection: close` reply, or the linger timeout does.)
    if constexpr (!is_tls) {
      beast::error_code ec;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    }
    lowest().expires_after(httpd::linger_timeout);
    drain_input();
  }

  /// Reads and discards until an error (peer closed, timeout, close).
  void drain_input() {
    stream_.async_read_some(
        net::buffer(drain_buf_),
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          if (ec || self->phase_ == phase::closed) {
            self->hard_close();
            return;
          }
          self->drain_input();
        });
  }

  /// Bytes of a request already here: in the buffer or in the socket.
  bool input_pending() {
    if (buffer_.size() != 0)
      return true;
    beast::error_code ec;
    return lowest().socket().available(ec) > 0 && !ec;
  }

  void hard_close() {
    if (phase_ == phase::closed)
      return;
    phase_ = phase::closed;
    // A closed connection no longer counts (for connections() and the
    // drain), even if a reply to it is still on its way; it stops counting
    // before the peer can see the close.
    core_->remove(this);
    beast::error_code ec;
    lowest().socket().shutdown(tcp::socket::shutdown_both, ec);
    lowest().close();
    read_timer_.cancel();
    // A streamed reply's source goes now (the chunk being written is
    // separate, and stays until its write completes).
    source_ = nullptr;
    auto keep = std::move(hold_);
  }

  std::shared_ptr<http_front::impl> core_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  /// The head of `res_` on the wire (write_reply_head), kept for the write.
  std::string wire_head_;
  /// A streamed reply (write_streamed): its header and the header's
  /// writer, the source of its body, the chunk being written, and whether
  /// the last chunk is on its way.
  http::response<http::empty_body> head_;
  std::optional<http::response_serializer<http::empty_body>> head_writer_;
  body_source source_;
  std::string chunk_;
  bool stream_finished_ = false;
  /// The request being answered is HTTP/1.0 (no chunked replies).
  bool http10_ = false;
  std::array<char, 4096> drain_buf_;
  /// Cuts a request not received within the request timeout.
  net::steady_timer read_timer_;
  /// Guards the timer's handler against a request that already ended.
  uint64_t read_gen_ = 0;
  bool timed_out_ = false;
  /// The id of the request being read or answered (see front_request).
  std::string request_id_;
  /// When its first byte arrived.
  std::chrono::steady_clock::time_point request_started_{};
  /// Set while waiting for the handler's reply (see on_read).
  std::shared_ptr<session> hold_;
  phase phase_ = phase::idle;
  uint64_t seq_ = 0;
  bool keep_alive_ = true;
  bool draining_ = false;
};

using plain_session = session<beast::tcp_stream>;
using tls_session = session<beast::ssl_stream<beast::tcp_stream>>;

} // namespace

void http_front::impl::on_socket(tcp::socket s) {
  if (!admit()) {
    beast::error_code ignored;
    s.close(ignored);
    note(limit_event::refused);
    return;
  }
  if (tls) {
    auto sess
        = std::make_shared<tls_session>(shared_from_this(), std::move(s), *tls);
    add(sess);
    sess->start();
    return;
  }
  auto sess = std::make_shared<plain_session>(shared_from_this(), std::move(s));
  add(sess);
  sess->start();
}

bool http_front::impl::init_tls() {
  tls.emplace(ssl::context::tls_server);
  beast::error_code ec;
  tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2
                       | ssl::context::no_sslv3 | ssl::context::no_tlsv1
                       | ssl::context::no_tlsv1_1,
                   ec);
  if (!ec)
    tls->use_certificate_chain_file(opts.tls_certificate, ec);
  if (ec) {
    tls_error = "cannot load the TLS certificate '" + opts.tls_certificate
        + "': " + ec.message();
    tls.reset();
    return false;
  }
  tls->use_private_key_file(opts.tls_key, ssl::context::pem, ec);
  if (!ec && SSL_CTX_check_private_key(tls->native_handle()) != 1)
    ec = net::error::invalid_argument;
  if (ec) {
    tls_error = "cannot load the TLS key '" + opts.tls_key
        + "' (or it does not match the certificate): " + ec.message();
    tls.reset();
    return false;
  }
  return true;
}

bool http_front::impl::admit() {
  {
    std::lock_guard<std::mutex> guard{mtx};
    if (sessions.size() < max_connections)
      return true;
  }
  if (!evict_oldest_idle())
    return false;
  note(limit_event::evicted_idle);
  return true;
}

bool http_front::impl::evict_oldest_idle() {
  std::shared_ptr<session_base> victim;
  {
    std::lock_guard<std::mutex> guard{mtx};
    int64_t oldest = 0;
    for (auto& [ptr, weak] : sessions) {
      auto since = ptr->idle_since();
      if (since != 0 && (oldest == 0 || since < oldest))
        if (auto s = weak.lock()) {
          victim = std::move(s);
          oldest = since;
        }
    }
    if (!victim || !victim->claim_idle(oldest))
      return false;
  }
  victim->evict();
  return true;
}

void http_front::impl::on_accept_error(const beast::error_code& ec) {
  // Out of file descriptors: an idle connection gives its place, so that a
  // new one (a health check) can be accepted on the next try.
  if (ec.value() == EMFILE || ec.value() == ENFILE)
    evict_oldest_idle();
  note(limit_event::accept_failed, ec.message());
}

void http_front::impl::note(limit_event what, const std::string& error) {
  static constexpr const char* reasons[]
      = {"evicted_idle", "max_connections", "accept_failed"};
  auto& t = throttles[static_cast<std::size_t>(what)];
  ++t.count;
  auto now = std::chrono::steady_clock::now();
  if (t.last != std::chrono::steady_clock::time_point{}
      && now - t.last < opts.limit_log_interval)
    return;
  t.last = now;
  std::size_t open = 0;
  {
    std::lock_guard<std::mutex> guard{mtx};
    open = sessions.size();
  }
  log(log_level::warn, "connection_limit",
      {{"reason", reasons[static_cast<std::size_t>(what)]},
       {"error", error},
       {"count", std::to_string(t.count)},
       {"connections", std::to_string(open)},
       {"max_connections", std::to_string(max_connections)}});
  t.count = 0;
}

void http_front::impl::add(const std::shared_ptr<session_base>& s) {
  bool drain_now = false;
  {
    std::lock_guard<std::mutex> guard{mtx};
    sessions.emplace(s.get(), s);
    drain_now = draining;
  }
  // Outside the lock: begin_drain() may close the session inline, and its
  // remove() takes the lock again (a connection accepted just as the drain
  // began used to deadlock the front end here).
  if (drain_now)
    s->begin_drain();
}

void http_front::impl::remove(session_base* s) {
  std::function<void()> done;
  {
    std::lock_guard<std::mutex> guard{mtx};
    sessions.erase(s);
    if (draining && sessions.empty() && !drained_called && on_drained) {
      drained_called = true;
      done = std::move(on_drained);
    }
  }
  if (done)
    done();
}

std::vector<std::shared_ptr<session_base>> http_front::impl::snapshot() {
  std::vector<std::shared_ptr<session_base>> out;
  std::lock_guard<std::mutex> guard{mtx};
  out.reserve(sessions.size());
  for (auto& [ptr, weak] : sessions)
    if (auto s = weak.lock())
      out.push_back(std::move(s));
  return out;
}

void http_front::impl::expire_all() {
  for (auto& s : snapshot())
    s->expire();
}

void http_front::impl::close_all() {
  listener.close();
  grace_timer.cancel();
  for (auto& s : snapshot())
    s->close_now();
}

http_front::http_front(net::io_context& ioc, front_options opts,
                       request_handler handler)
    : impl_(std::make_shared<impl>(ioc, std::move(opts), std::move(handler))) {
  // nop
}

http_front::~http_front() {
  auto released = impl_->released.promise.get_future();
  // Closing on the listener's strand: no connection accepted after the
  // snapshot can slip through.
  net::dispatch(impl_->listener.executor(), [d = impl_] {
    d->close_all();
  });
  // Wait (bounded) until the aborted operations and closed sessions have
  // released the shared state: the last one destroys it, which fulfils
  // `released` after its listener and timers are gone. So they are
  // destroyed while the io_context runs (see the header), and never later
  // by its destructor.
  impl_.reset();
  released.wait_for(release_timeout);
}

uint16_t http_front::start() {
  if (!impl_->opts.tls_certificate.empty() && !impl_->init_tls())
    return 0;
  auto port = impl_->listener.listen(impl_->opts.host, impl_->opts.port);
  if (port == 0)
    return 0;
  impl_->max_connections = impl_->opts.max_connections != 0
      ? impl_->opts.max_connections
      : default_max_connections();
  impl_->listener.on_accept_error(
      [d = impl_.get()](const beast::error_code& ec) {
        d->on_accept_error(ec);
      });
  impl_->listener.start(
      [&ioc = impl_->ioc]() -> httpd::listener::executor_type {
        return net::make_strand(ioc);
      },
      [d = impl_.get()](tcp::socket s) {
        d->on_socket(std::move(s));
      },
      impl_);
  return port;
}

const std::string& http_front::error() const noexcept {
  if (!impl_->tls_error.empty())
    return impl_->tls_error;
  return impl_->listener.error();
}

void http_front::drain(std::chrono::milliseconds grace,
                       std::function<void()> done) {
  auto d = impl_;
  {
    std::lock_guard<std::mutex> guard{d->mtx};
    if (d->draining)
      return;
    d->draining = true;
    d->on_drained = std::move(done);
  }
  net::dispatch(d->listener.executor(), [d, grace] {
    d->listener.close();
    d->grace_timer.expires_after(grace);
    d->grace_timer.async_wait([d](beast::error_code ec) {
      if (!ec)
        d->expire_all();
    });
  });
  for (auto& s : d->snapshot())
    s->begin_drain();
  // No connection at all: done at once (remove() never runs).
  std::function<void()> now;
  {
    std::lock_guard<std::mutex> guard{d->mtx};
    if (d->sessions.empty() && !d->drained_called && d->on_drained) {
      d->drained_called = true;
      now = std::move(d->on_drained);
    }
  }
  if (now)
    net::post(d->listener.executor(), std::move(now));
}

void http_front::expire_grace() {
  auto d = impl_;
  net::dispatch(d->listener.executor(), [d] {
    d->grace_timer.cancel();
    d->expire_all();
  });
}

std::size_t http_front::max_connections() const {
  return impl_->max_connections;
}

std::size_t http_front::connections() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->sessions.size();
}

} // namespace embedrt::serve
