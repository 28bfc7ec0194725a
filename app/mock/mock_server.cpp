#include "mock/mock_server.hpp"

#include "httpd/listener.hpp"
#include "mock/mock_handler.hpp"

#include <array>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

namespace embedrt::mock {

namespace {

using namespace std::chrono_literals;

/// How long a TLS handshake may take.
constexpr auto handshake_timeout = 10s;
/// How long stop() waits for the sessions to end before it stops the
/// io_context (which then destroys whatever is left).
constexpr auto stop_timeout = 5s;

std::string_view to_std(beast::string_view sv) {
  return std::string_view{sv.data(), sv.size()};
}

/// The server-side handle of a session, for stop().
class session_base {
 public:
  virtual ~session_base() = default;
  /// Closes the connection from any thread (posts to the session's I/O
  /// thread).
  virtual void close_async() = 0;
};

/// State shared by the server and its sessions; outlives all sessions.
struct server_core {
  explicit server_core(const mock_options& o) : opts(o), handler(o) {
    // nop
  }

  /// Registers a new session; false if the server is stopping.
  bool add(session_base* s, std::weak_ptr<session_base> w) {
    std::lock_guard<std::mutex> guard{mtx};
    if (stopping)
      return false;
    sessions.emplace(s, std::move(w));
    return true;
  }

  void remove(session_base* s) {
    std::lock_guard<std::mutex> guard{mtx};
    if (sessions.erase(s) > 0 && sessions.empty())
      cv.notify_all();
  }

  mock_options opts;
  mock_handler handler;
  std::mutex mtx;
  std::condition_variable cv;
  std::unordered_map<session_base*, std::weak_ptr<session_base>> sessions;
  bool stopping = false;
};

/// One accepted connection: reads requests, lets the handler decide, and
/// writes the replies, one at a time (HTTP/1.1 keep-alive). All members are
/// touched only on the connection's I/O thread (each io_context is run by
/// exactly one thread).
template <class Stream>
class session : public session_base,
                public std::enable_shared_from_this<session<Stream>> {
 public:
  static constexpr bool is_tls = !std::is_same_v<Stream, beast::tcp_stream>;

  template <class... Ts>
  session(server_core& core, Ts&&... xs)
      : core_(core),
        stream_(std::forward<Ts>(xs)...),
        executor_(stream_.get_executor()),
        timer_(executor_) {
    // nop
  }

  ~session() override {
    core_.remove(this);
    core_.handler.counters().connection_closed();
  }

  void start() {
    if (!core_.add(this, this->weak_from_this()))
      return; // stopping: the destructor closes the socket
    net::dispatch(executor_, [self = this->shared_from_this()] {
      self->on_start();
    });
  }

  void close_async() override {
    net::post(executor_, [self = this->shared_from_this()] {
      self->hard_close();
    });
  }

 private:
  beast::tcp_stream& lowest() {
    return beast::get_lowest_layer(stream_);
  }

  void on_start() {
    if (closed_)
      return;
    if constexpr (is_tls) {
      lowest().expires_after(handshake_timeout);
      stream_.async_handshake(
          ssl::stream_base::server,
          [self = this->shared_from_this()](beast::error_code ec) {
            if (ec || self->closed_) {
              self->hard_close();
              return;
            }
            self->do_read();
          });
    } else {
      do_read();
    }
  }

  void do_read() {
    parser_.emplace();
    parser_->body_limit(core_.opts.max_body_bytes);
    lowest().expires_never();
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_header(ec);
        });
  }

  void on_header(beast::error_code ec) {
    if (closed_)
      return;
    if (ec) {
      on_read_error(ec);
      return;
    }
    if (httpd::expects_continue(parser_->get())) {
      net::async_write(
          stream_,
          net::buffer(httpd::continue_line.data(), httpd::continue_line.size()),
          [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
            if (ec || self->closed_) {
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
    // Usually the body arrived with the header: parse what is buffered
    // synchronously instead of starting another (immediately completing)
    // asynchronous operation.
    beast::error_code ec;
    while (!parser_->is_done() && buffer_.size() > 0) {
      auto n = parser_->put(buffer_.data(), ec);
      buffer_.consume(n);
      if (ec || n == 0)
        break;
    }
    if (ec == http::error::need_more)
      ec = {};
    if (ec || parser_->is_done()) {
      on_read(ec);
      return;
    }
    http::async_read(
        stream_, buffer_, *parser_,
        [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_read(ec);
        });
  }

  void on_read_error(beast::error_code ec) {
    switch (httpd::read_failure_of(ec)) {
      case httpd::read_failure::too_large:
        core_.handler.body_too_large(reply_);
        break;
      case httpd::read_failure::malformed:
        core_.handler.bad_http(ec.message(), reply_);
        break;
      case httpd::read_failure::gone: hard_close(); return;
    }
    keep_alive_ = false;
    respond();
  }

  void on_read(beast::error_code ec) {
    if (closed_)
      return;
    if (ec) {
      on_read_error(ec);
      return;
    }
    const auto& req = parser_->get();
    mock_request view;
    view.method = to_std(req.method_string());
    view.target = to_std(req.target());
    view.body = req.body();
    if (auto i = req.find("x-mock-fault"); i != req.end())
      view.fault_header = to_std(i->value());
    if (auto i = req.find("x-mock-latency-ms"); i != req.end())
      view.latency_header = to_std(i->value());
    core_.handler.handle(view, reply_);
    keep_alive_ = req.keep_alive() && !reply_.close;
    if (reply_.what == mock_reply::action::hang) {
      // Never answer; notice when the peer goes away.
      drain();
      return;
    }
    if (reply_.delay.count() > 0) {
      timer_.expires_after(reply_.delay);
      timer_.async_wait(
          [self = this->shared_from_this()](beast::error_code ec) {
            if (ec || self->closed_)
              return;
            self->respond();
          });
      return;
    }
    respond();
  }

  void respond() {
    res_ = http::response<http::string_body>{};
    res_.version(11);
    res_.result(static_cast<unsigned>(reply_.status));
    for (const auto& [name, value] : reply_.headers)
      res_.set(name, value);
    res_.keep_alive(keep_alive_);
    res_.body() = std::move(reply_.body);
    res_.prepare_payload();
    if (reply_.what == mock_reply::action::reset) {
      send_partial_then_reset();
      return;
    }
    http::async_write(
        stream_, res_,
        [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
          self->on_write(ec);
        });
  }

  void on_write(beast::error_code ec) {
    if (closed_)
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

  /// Sends the status line and about half of the serialized response, then
  /// aborts the connection: SO_LINGER 0 makes close() send RST.
  void send_partial_then_reset() {
    std::ostringstream os;
    os << res_;
    raw_ = os.str();
    net::async_write(
        stream_, net::buffer(raw_.data(), raw_.size() / 2),
        [self = this->shared_from_this()](beast::error_code, std::size_t) {
          self->abort_connection();
        });
  }

  void abort_connection() {
    if (closed_)
      return;
    beast::error_code ec;
    lowest().socket().set_option(tcp::socket::linger(true, 0), ec);
    hard_close();
  }

  void lingering_close() {
    if constexpr (!is_tls) {
      beast::error_code ec;
      lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
    }
    lowest().expires_after(httpd::linger_timeout);
    drain();
  }

  /// Reads and discards until an error (peer closed, timeout, stop).
  void drain() {
    stream_.async_read_some(
        net::buffer(drain_buf_),
        [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
          if (ec || self->closed_) {
            self->hard_close();
            return;
          }
          self->drain();
        });
  }

  void hard_close() {
    if (closed_)
      return;
    closed_ = true;
    timer_.cancel();
    lowest().close();
  }

  server_core& core_;
  Stream stream_;
  net::any_io_executor executor_;
  net::steady_timer timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  mock_reply reply_;
  std::string raw_;
  std::array<char, 4096> drain_buf_;
  bool keep_alive_ = true;
  bool closed_ = false;
};

using plain_session = session<beast::tcp_stream>;
using tls_session = session<beast::ssl_stream<beast::tcp_stream>>;

} // namespace

struct mock_server::impl {
  enum class state { idle, running, stopped };

  explicit impl(mock_options o) : core(o) {
    // nop
  }

  bool init_tls() {
    tls.emplace(ssl::context::tls_server);
    beast::error_code ec;
    tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2
                         | ssl::context::no_sslv3 | ssl::context::no_tlsv1
                         | ssl::context::no_tlsv1_1,
                     ec);
    if (!ec)
      tls->use_certificate_chain_file(core.opts.tls_cert_file, ec);
    if (ec) {
      error = "cannot load TLS certificate '" + core.opts.tls_cert_file
          + "': " + ec.message();
      return false;
    }
    tls->use_private_key_file(core.opts.tls_key_file, ssl::context::pem, ec);
    if (ec) {
      error = "cannot load TLS key '" + core.opts.tls_key_file
          + "': " + ec.message();
      return false;
    }
    return true;
  }

  bool listen() {
    listener.emplace(iocs.front()->get_executor());
    port = listener->listen(core.opts.host, core.opts.port);
    if (port == 0)
      error = listener->error();
    return port != 0;
  }

  /// Starts the accept loop on the first I/O thread; connections go
  /// round-robin to the I/O threads' io_contexts.
  void start_accepting() {
    listener->start(
        [this]() -> httpd::listener::executor_type {
          auto& target = *iocs[next_ioc];
          next_ioc = (next_ioc + 1) % iocs.size();
          return target.get_executor();
        },
        [this](tcp::socket s) {
          on_socket(std::move(s));
        });
  }

  void on_socket(tcp::socket s) {
    core.handler.counters().connection_opened();
    if (tls) {
      std::make_shared<tls_session>(core, std::move(s), *tls)->start();
    } else {
      std::make_shared<plain_session>(core, std::move(s))->start();
    }
  }

  void run_thread(net::io_context& ioc) {
    for (;;) {
      try {
        ioc.run();
        return;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "embedrt mock: exception in an I/O thread: %s\n",
                     e.what());
      } catch (...) {
        std::fprintf(stderr,
                     "embedrt mock: unknown exception in an I/O "
                     "thread\n");
      }
    }
  }

  /// Releases the I/O objects; the io_context last (its destructor destroys
  /// pending handlers and thereby any session left).
  void release() {
    listener.reset();
    iocs.clear();
    tls.reset();
  }

  server_core core;
  /// One io_context per I/O thread (no locks or strands between threads: a
  /// connection lives on one thread). The listener runs on the first.
  std::vector<std::unique_ptr<net::io_context>> iocs;
  std::size_t next_ioc = 0;
  std::optional<ssl::context> tls;
  /// Runs on the first I/O thread; outlives its handlers (stop() joins the
  /// threads before release()).
  std::optional<httpd::listener> listener;
  std::vector<net::executor_work_guard<net::io_context::executor_type>> work;
  std::vector<std::thread> threads;
  uint16_t port = 0;
  std::string error;
  state st = state::idle;
};

mock_server::mock_server(mock_options opts)
    : impl_(std::make_unique<impl>(std::move(opts))) {
  // nop
}

mock_server::~mock_server() {
  stop();
}

uint16_t mock_server::start() {
  auto& d = *impl_;
  if (d.st == impl::state::running)
    return d.port;
  if (d.st == impl::state::stopped) {
    d.error = "a stopped mock server cannot be restarted";
    return 0;
  }
  d.error.clear();
  if (auto msg = validate(d.core.opts); !msg.empty()) {
    d.error = msg;
    return 0;
  }
  try {
    for (std::size_t i = 0; i < d.core.opts.threads; ++i)
      d.iocs.push_back(std::make_unique<net::io_context>(1));
    if ((d.core.opts.tls() && !d.init_tls()) || !d.listen()) {
      d.release();
      d.port = 0;
      return 0;
    }
    for (auto& ioc : d.iocs)
      d.work.push_back(net::make_work_guard(*ioc));
    d.start_accepting();
    for (auto& ioc : d.iocs)
      d.threads.emplace_back([&d, &ctx = *ioc] {
        d.run_thread(ctx);
      });
  } catch (const std::exception& e) {
    d.error = std::string{"cannot start the mock server: "} + e.what();
    if (!d.threads.empty()) {
      d.work.clear();
      for (auto& ioc : d.iocs)
        ioc->stop();
      for (auto& t : d.threads)
        t.join();
      d.threads.clear();
    }
    d.release();
    d.port = 0;
    return 0;
  }
  d.st = impl::state::running;
  return d.port;
}

void mock_server::stop() {
  auto& d = *impl_;
  if (d.st != impl::state::running) {
    d.st = impl::state::stopped;
    return;
  }
  d.st = impl::state::stopped;
  std::vector<std::weak_ptr<session_base>> open;
  {
    std::lock_guard<std::mutex> guard{d.core.mtx};
    d.core.stopping = true;
    open.reserve(d.core.sessions.size());
    for (auto& [ptr, weak] : d.core.sessions)
      open.push_back(weak);
  }
  net::post(d.listener->executor(), [&d] {
    d.listener->close();
  });
  for (auto& weak : open)
    if (auto s = weak.lock())
      s->close_async();
  open.clear();
  {
    std::unique_lock<std::mutex> guard{d.core.mtx};
    d.core.cv.wait_for(guard, stop_timeout, [&d] {
      return d.core.sessions.empty();
    });
  }
  d.work.clear();
  for (auto& ioc : d.iocs)
    ioc->stop();
  for (auto& t : d.threads)
    t.join();
  d.threads.clear();
  d.release();
}

uint16_t mock_server::port() const noexcept {
  return impl_->port;
}

std::string mock_server::base_url() const {
  const auto& opts = impl_->core.opts;
  std::string host = opts.host;
  if (host.find(':') != std::string::npos)
    host = "[" + host + "]";
  return std::string{opts.tls() ? "https://" : "http://"} + host + ":"
      + std::to_string(impl_->port) + "/v1";
}

const std::string& mock_server::error() const noexcept {
  return impl_->error;
}

const mock_options& mock_server::options() const noexcept {
  return impl_->core.opts;
}

mock_stats mock_server::stats() const {
  return impl_->core.handler.counters().snapshot();
}

void mock_server::reset_stats() {
  impl_->core.handler.counters().reset();
}

void mock_server::set_outage(fault f) {
  impl_->core.handler.set_outage(f);
}

} // namespace embedrt::mock
