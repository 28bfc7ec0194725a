#include "mock_test_client.hpp"

#include "embedrt/protocol/openai.hpp"

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

namespace embedrt::test {

namespace {

failure classify(const beast::error_code& ec) {
  if (ec == beast::error::timeout)
    return failure::timeout;
  if (ec == net::error::connection_reset)
    return failure::reset;
  if (ec == http::error::end_of_stream || ec == http::error::partial_message
      || ec == net::error::eof || ec == ssl::error::stream_truncated)
    return failure::eof;
  if (ec.category() == net::error::get_ssl_category())
    return failure::tls;
  return failure::other;
}

std::string lower(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

http::request<http::string_body> make_request(std::string_view method,
                                              std::string_view target,
                                              std::string_view body,
                                              const header_list& headers) {
  http::request<http::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  req.set(http::field::host, "127.0.0.1");
  if (!body.empty())
    req.set(http::field::content_type, "application/json");
  for (const auto& [name, value] : headers)
    req.set(name, value);
  req.body() = std::string{body};
  req.prepare_payload();
  return req;
}

void fill(http_response& out, const http::response<http::string_body>& res) {
  out.status = static_cast<int>(res.result_int());
  for (const auto& field : res)
    out.headers[lower(field.name_string())] = std::string{field.value()};
  out.body = res.body();
  out.keep_alive = res.keep_alive();
}

} // namespace

const char* to_string(failure x) {
  switch (x) {
    case failure::none: return "none";
    case failure::connect: return "connect";
    case failure::tls: return "tls";
    case failure::timeout: return "timeout";
    case failure::reset: return "reset";
    case failure::eof: return "eof";
    case failure::other: return "other";
  }
  return "?";
}

std::string http_response::header(const std::string& name) const {
  auto i = headers.find(name);
  return i == headers.end() ? std::string{} : i->second;
}

struct http_client::impl {
  impl(uint16_t p, std::optional<tls_options> t) : port(p), tls(std::move(t)) {
    if (tls) {
      ctx.emplace(ssl::context::tls_client);
      ctx->load_verify_file(tls->ca_file);
      ctx->set_verify_mode(ssl::verify_peer);
    }
  }

  beast::tcp_stream& lowest() {
    return tls_stream ? beast::get_lowest_layer(*tls_stream) : *plain;
  }

  /// Runs the io_context until the started operations completed (every
  /// operation carries a timeout, so this is bounded).
  void run() {
    ioc.restart();
    ioc.run();
  }

  template <class F>
  void with_stream(F&& f) {
    if (tls_stream)
      f(*tls_stream);
    else
      f(*plain);
  }

  void close() {
    if (tls_stream)
      beast::get_lowest_layer(*tls_stream).close();
    if (plain)
      plain->close();
    run(); // let cancelled handlers finish
    tls_stream.reset();
    plain.reset();
    buffer.clear();
    open = false;
  }

  failure connect(std::chrono::milliseconds timeout, std::string& msg) {
    close();
    if (tls)
      tls_stream
          = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc, *ctx);
    else
      plain = std::make_unique<beast::tcp_stream>(ioc);
    tcp::endpoint ep{net::ip::make_address("127.0.0.1"), port};
    beast::error_code result;
    lowest().expires_after(timeout);
    lowest().async_connect(ep, [&](beast::error_code ec) {
      result = ec;
    });
    run();
    if (result) {
      msg = result.message();
      return failure::connect;
    }
    ++connects;
    if (tls) {
      SSL_set_tlsext_host_name(tls_stream->native_handle(),
                               tls->server_name.c_str());
      tls_stream->set_verify_callback(
          ssl::host_name_verification(tls->server_name));
      lowest().expires_after(timeout);
      tls_stream->async_handshake(ssl::stream_base::client,
                                  [&](beast::error_code ec) {
                                    result = ec;
                                  });
      run();
      if (result) {
        msg = result.message();
        auto f = classify(result);
        close();
        return f == failure::timeout ? f : failure::tls;
      }
    }
    open = true;
    return failure::none;
  }

  failure write(const http::request<http::string_body>& req,
                std::chrono::milliseconds timeout, std::string& msg) {
    beast::error_code result;
    lowest().expires_after(timeout);
    with_stream([&](auto& s) {
      http::async_write(s, req, [&](beast::error_code ec, std::size_t) {
        result = ec;
      });
    });
    run();
    if (result) {
      msg = result.message();
      auto f = classify(result);
      close();
      return f;
    }
    return failure::none;
  }

  http_response read(std::chrono::milliseconds timeout) {
    http_response out;
    http::response_parser<http::string_body> parser;
    parser.body_limit(512u * 1024 * 1024);
    beast::error_code result;
    std::size_t consumed = 0;
    lowest().expires_after(timeout);
    with_stream([&](auto& s) {
      http::async_read(s, buffer, parser,
                       [&](beast::error_code ec, std::size_t n) {
                         result = ec;
                         consumed = n;
                       });
    });
    run();
    if (result) {
      out.error = classify(result);
      out.error_message = result.message();
      out.partial_bytes = consumed + buffer.size();
      close();
      return out;
    }
    fill(out, parser.get());
    if (!out.keep_alive)
      reopen = true;
    return out;
  }

  net::io_context ioc;
  uint16_t port;
  std::optional<tls_options> tls;
  std::optional<ssl::context> ctx;
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_stream;
  beast::flat_buffer buffer;
  bool open = false;
  /// The server announced `Connection: close`: reconnect before the next
  /// request.
  bool reopen = false;
  int connects = 0;
};

http_client::http_client(uint16_t port, std::optional<tls_options> tls)
    : impl_(std::make_unique<impl>(port, std::move(tls))) {
  // nop
}

http_client::~http_client() {
  impl_->close();
}

failure http_client::connect(std::chrono::milliseconds timeout) {
  std::string msg;
  impl_->reopen = false;
  return impl_->connect(timeout, msg);
}

http_response http_client::request(std::string_view method,
                                   std::string_view target,
                                   std::string_view body,
                                   const header_list& headers,
                                   std::chrono::milliseconds timeout) {
  http_response out;
  if (!impl_->open || impl_->reopen) {
    impl_->reopen = false;
    out.error = impl_->connect(timeout, out.error_message);
    if (!out.ok())
      return out;
  }
  auto req = make_request(method, target, body, headers);
  out.error = impl_->write(req, timeout, out.error_message);
  if (!out.ok())
    return out;
  return impl_->read(timeout);
}

failure http_client::send_only(std::string_view method, std::string_view target,
                               std::string_view body,
                               const header_list& headers,
                               std::chrono::milliseconds timeout) {
  std::string msg;
  if (!impl_->open || impl_->reopen) {
    impl_->reopen = false;
    if (auto f = impl_->connect(timeout, msg); f != failure::none)
      return f;
  }
  return impl_->write(make_request(method, target, body, headers), timeout,
                      msg);
}

failure http_client::send_raw(std::string_view bytes,
                              std::chrono::milliseconds timeout) {
  std::string msg;
  if (!impl_->open || impl_->reopen) {
    impl_->reopen = false;
    if (auto f = impl_->connect(timeout, msg); f != failure::none)
      return f;
  }
  beast::error_code result;
  impl_->lowest().expires_after(timeout);
  impl_->with_stream([&](auto& s) {
    net::async_write(s, net::buffer(bytes.data(), bytes.size()),
                     [&](beast::error_code ec, std::size_t) {
                       result = ec;
                     });
  });
  impl_->run();
  if (result) {
    auto f = classify(result);
    impl_->close();
    return f;
  }
  return failure::none;
}

http_response http_client::raw(std::string_view bytes,
                               std::chrono::milliseconds timeout) {
  http_response out;
  out.error = send_raw(bytes, timeout);
  if (!out.ok())
    return out;
  return impl_->read(timeout);
}

bool http_client::wait_for_close(std::chrono::milliseconds timeout) {
  if (!impl_->open)
    return true;
  std::array<char, 4096> buf;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      return false;
    beast::error_code result;
    impl_->lowest().expires_after(left);
    impl_->with_stream([&](auto& s) {
      s.async_read_some(net::buffer(buf),
                        [&](beast::error_code ec, std::size_t) {
                          result = ec;
                        });
    });
    impl_->run();
    if (result == beast::error::timeout) {
      // tcp_stream closed the socket on timeout: the server did not.
      impl_->close();
      return false;
    }
    if (result) {
      impl_->close();
      return true;
    }
  }
}

bool http_client::is_open() const noexcept {
  return impl_->open;
}

void http_client::close() {
  impl_->close();
}

int http_client::connects() const noexcept {
  return impl_->connects;
}

namespace {

/// One connection of concurrent_requests.
struct concurrent_session : std::enable_shared_from_this<concurrent_session> {
  concurrent_session(net::io_context& ioc, const std::string& body,
                     const header_list& headers, int& status)
      : stream(ioc),
        req(make_request("POST", "/v1/embeddings", body, headers)),
        status(status) {
    // nop
  }

  beast::tcp_stream stream;
  http::request<http::string_body> req;
  http::response<http::string_body> res;
  beast::flat_buffer buffer;
  int& status;
};

} // namespace

std::vector<int> concurrent_requests(uint16_t port, std::size_t n,
                                     std::string body,
                                     const header_list& headers,
                                     std::chrono::milliseconds timeout) {
  net::io_context ioc;
  std::vector<int> statuses(n, 0);
  std::vector<std::shared_ptr<concurrent_session>> sessions;
  tcp::endpoint ep{net::ip::make_address("127.0.0.1"), port};
  std::size_t connected = 0;
  // Phase 1: open every connection, so that all of them are concurrent.
  for (std::size_t i = 0; i < n; ++i) {
    auto s
        = std::make_shared<concurrent_session>(ioc, body, headers, statuses[i]);
    s->stream.expires_after(timeout);
    s->stream.async_connect(ep, [s, &connected](beast::error_code ec) {
      if (!ec)
        ++connected;
    });
    sessions.push_back(std::move(s));
  }
  ioc.run();
  ioc.restart();
  // Phase 2: one request per connection, all in flight at once.
  for (auto& s : sessions) {
    if (!s->stream.socket().is_open())
      continue;
    s->stream.expires_after(timeout);
    http::async_write(
        s->stream, s->req, [s](beast::error_code ec, std::size_t) {
          if (ec)
            return;
          http::async_read(s->stream, s->buffer, s->res,
                           [s](beast::error_code ec, std::size_t) {
                             if (!ec)
                               s->status
                                   = static_cast<int>(s->res.result_int());
                             beast::error_code ignored;
                             s->stream.socket().shutdown(
                                 tcp::socket::shutdown_both, ignored);
                             s->stream.close();
                           });
        });
  }
  ioc.run();
  return statuses;
}

std::string embed_body(const std::vector<std::string>& inputs,
                       std::optional<int> dimensions, bool base64,
                       std::string model) {
  openai::embeddings_request req;
  req.model = std::move(model);
  req.input = inputs;
  req.input_is_array = inputs.size() != 1;
  if (dimensions)
    req.dimensions = *dimensions;
  req.encoding_format
      = base64 ? openai::encoding::base64 : openai::encoding::float32;
  return openai::encode_request(req);
}

} // namespace embedrt::test
