#include "serve/http_front.hpp"

#include "httpd/listener.hpp"

#include <array>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <future>
#include <mutex>
#include <optional>
#include <unordered_map>

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace embedrt::serve {

namespace {

using namespace std::chrono_literals;

/// At the end of the grace period, the time left to a reply being written.
constexpr auto final_write_timeout = 1s;
/// How long the destructor waits for the I/O threads to let go of the
/// shared state.
constexpr auto release_timeout = 5s;

std::string to_string(beast::string_view sv) {
  return std::string{sv.data(), sv.size()};
}

class session;

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
  void add(const std::shared_ptr<session>& s);
  void remove(session* s);
  std::vector<std::shared_ptr<session>> snapshot();
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
  std::unordered_map<session*, std::weak_ptr<session>> sessions;
  bool draining = false;
  std::function<void()> on_drained;
  bool drained_called = false;
};

namespace {

/// One client connection: reads a request, hands it to the handler, writes
/// the reply, and reads the next (HTTP/1.1 keep-alive; one request at a
/// time). All members are touched only on the session's strand.
class session : public std::enable_shared_from_this<session> {
 public:
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

  session(std::shared_ptr<http_front::impl> core, tcp::socket s)
      : core_(std::move(core)), stream_(std::move(s)) {
    // nop
  }

  ~session() {
    core_->remove(this);
  }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->do_read();
    });
  }

  /// Graceful shutdown began: an idle connection with nothing to read closes
  /// now; a request in progress, or one that already arrived (buffered, or
  /// waiting in the socket), is answered with `Connection: close`.
  void begin_drain() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->draining_ = true;
      if (self->phase_ == phase::idle && !self->input_pending())
        self->hard_close();
    });
  }

  /// The grace period is over: a request still waiting for its reply gets a
  /// 503 now; a request still being received is abandoned (it was never
  /// accepted), and the connection closes.
  void expire() {
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
          self->stream_.expires_after(final_write_timeout);
          break;
        default: break;
      }
    });
  }

  /// Closes at once (destructor of the front end).
  void close_now() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      self->hard_close();
    });
  }

 private:
  void do_read() {
    if (phase_ == phase::closed)
      return;
    if (draining_ && !input_pending()) {
      // Shutting down and nothing more arrived: the connection closes.
      lingering_close();
      return;
    }
    phase_ = phase::idle;
    parser_.emplace();
    parser_->body_limit(core_->opts.max_body_bytes);
    stream_.expires_after(buffer_.size() == 0 ? core_->opts.idle_timeout
                                              : core_->opts.io_timeout);
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_header(ec);
        });
  }

  void on_header(beast::error_code ec) {
    if (phase_ == phase::closed)
      return;
    phase_ = phase::reading;
    if (ec) {
      on_read_error(ec);
      return;
    }
    stream_.expires_after(core_->opts.io_timeout);
    if (httpd::expects_continue(parser_->get())) {
      net::async_write(
          stream_,
          net::buffer(httpd::continue_line.data(), httpd::continue_line.size()),
          [self = shared_from_this()](beast::error_code ec, std::size_t) {
            if (ec || self->phase_ == phase::closed) {
              self->hard_close();
              return;
            }
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
    keep_alive_ = false;
    switch (httpd::read_failure_of(ec)) {
      case httpd::read_failure::too_large:
        write(error_reply(413,
                          "Request body too large: the limit is "
                              + std::to_string(core_->opts.max_body_bytes)
                              + " bytes",
                          "invalid_request_error", "request_too_large"));
        break;
      case httpd::read_failure::malformed:
        write(error_reply(400, "Malformed HTTP request: " + ec.message(),
                          "invalid_request_error", "bad_http"));
        break;
      case httpd::read_failure::gone: hard_close(); break;
    }
  }

  void on_read(beast::error_code ec) {
    if (phase_ == phase::closed)
      return;
    if (ec) {
      on_read_error(ec);
      return;
    }
    auto& req = parser_->get();
    keep_alive_ = req.keep_alive();
    front_request fr;
    fr.method = to_string(req.method_string());
    fr.target = to_string(req.target());
    fr.body = std::move(req.body());
    if (auto i = req.find(http::field::authorization); i != req.end())
      fr.authorization = to_string(i->value());
    if (auto i = req.find(timeout_header); i != req.end()) {
      fr.timeout_ms = to_string(i->value());
      fr.has_timeout_ms = true;
    }
    if (auto i = req.find("x-request-id"); i != req.end())
      fr.request_id = to_string(i->value());
    phase_ = phase::waiting;
    stream_.expires_never();
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
    res_ = http::response<http::string_body>{};
    res_.version(11);
    res_.result(static_cast<unsigned>(r.status));
    res_.set(http::field::server, "embedrt");
    res_.set(http::field::content_type, r.content_type);
    for (auto& [name, value] : r.headers)
      res_.set(name, value);
    res_.keep_alive(keep_alive_);
    res_.body() = std::move(r.body);
    res_.prepare_payload();
    stream_.expires_after(core_->opts.io_timeout);
    http::async_write(
        stream_, res_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_write(ec);
        });
  }

  void on_write(beast::error_code ec) {
    if (phase_ == phase::closed)
      return;
    if (ec) {
      hard_close();
      return;
    }
    if (!keep_alive_) {
      lingering_close();
      return;
    }
    do_read();
  }

  void lingering_close() {
    phase_ = phase::lingering;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(httpd::linger_timeout);
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
    return stream_.socket().available(ec) > 0 && !ec;
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
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
    auto keep = std::move(hold_);
  }

  std::shared_ptr<http_front::impl> core_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  std::array<char, 4096> drain_buf_;
  /// Set while waiting for the handler's reply (see on_read).
  std::shared_ptr<session> hold_;
  phase phase_ = phase::idle;
  uint64_t seq_ = 0;
  bool keep_alive_ = true;
  bool draining_ = false;
};

} // namespace

void http_front::impl::on_socket(tcp::socket s) {
  auto sess = std::make_shared<session>(shared_from_this(), std::move(s));
  add(sess);
  sess->start();
}

void http_front::impl::add(const std::shared_ptr<session>& s) {
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

void http_front::impl::remove(session* s) {
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

std::vector<std::shared_ptr<session>> http_front::impl::snapshot() {
  std::vector<std::shared_ptr<session>> out;
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
  auto port = impl_->listener.listen(impl_->opts.host, impl_->opts.port);
  if (port == 0)
    return 0;
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

std::size_t http_front::connections() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->sessions.size();
}

} // namespace embedrt::serve
