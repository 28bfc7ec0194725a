#include "httpd/listener.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <utility>

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace embedrt::httpd {

read_failure read_failure_of(const beast::error_code& ec) {
  if (ec == http::error::body_limit)
    return read_failure::too_large;
  // A malformed request, as opposed to a closed, timed out or failed
  // connection (which Beast reports in other categories, or as a message cut
  // short).
  static const auto& http_category
      = http::make_error_code(http::error::bad_target).category();
  if (ec.category() == http_category && ec != http::error::end_of_stream
      && ec != http::error::partial_message)
    return read_failure::malformed;
  return read_failure::gone;
}

bool expects_continue(const http::fields& header) {
  return beast::iequals(header[http::field::expect], "100-continue");
}

listener::listener(executor_type ex)
    : executor_(std::move(ex)), acceptor_(executor_), retry_(executor_) {
  // nop
}

uint16_t listener::listen(const std::string& host, uint16_t port) {
  error_.clear();
  beast::error_code ec;
  auto addr = net::ip::make_address(host, ec);
  if (ec) {
    error_ = "invalid host '" + host + "'";
    return 0;
  }
  tcp::endpoint ep{addr, port};
  auto fail = [&](const char* what) -> uint16_t {
    error_ = std::string{what} + " " + host + ":" + std::to_string(port) + ": "
        + ec.message();
    beast::error_code ignored;
    acceptor_.close(ignored);
    return 0;
  };
  if (acceptor_.open(ep.protocol(), ec))
    return fail("cannot open a socket for");
  if (acceptor_.set_option(net::socket_base::reuse_address(true), ec))
    return fail("cannot set SO_REUSEADDR for");
  if (acceptor_.bind(ep, ec))
    return fail("cannot bind");
  if (acceptor_.listen(net::socket_base::max_listen_connections, ec))
    return fail("cannot listen on");
  auto bound = acceptor_.local_endpoint(ec).port();
  if (ec)
    return fail("cannot read the local port of");
  return bound;
}

const std::string& listener::error() const noexcept {
  return error_;
}

void listener::start(executor_source next, socket_handler on_socket,
                     std::shared_ptr<void> keep_alive) {
  next_ = std::move(next);
  on_socket_ = std::move(on_socket);
  net::post(executor_, [this, keep = std::move(keep_alive)]() mutable {
    do_accept(std::move(keep));
  });
}

void listener::on_accept_error(error_handler h) {
  on_error_ = std::move(h);
}

void listener::close() {
  beast::error_code ec;
  acceptor_.close(ec);
  retry_.cancel();
}

void listener::do_accept(std::shared_ptr<void> keep_alive) {
  acceptor_.async_accept(next_(),
                         [this, keep = std::move(keep_alive)](
                             beast::error_code ec, tcp::socket s) mutable {
                           on_accept(ec, std::move(s), std::move(keep));
                         });
}

void listener::on_accept(beast::error_code ec, tcp::socket s,
                         std::shared_ptr<void> keep_alive) {
  if (ec == net::error::operation_aborted || !acceptor_.is_open())
    return;
  if (ec) {
    if (on_error_)
      on_error_(ec);
    // E.g. EMFILE: try again shortly instead of spinning.
    retry_.expires_after(accept_retry_delay);
    retry_.async_wait(
        [this, keep = std::move(keep_alive)](beast::error_code ec) mutable {
          if (!ec && acceptor_.is_open())
            do_accept(std::move(keep));
        });
    return;
  }
  beast::error_code ignored;
  s.set_option(tcp::no_delay(true), ignored);
  on_socket_(std::move(s));
  do_accept(std::move(keep_alive));
}

} // namespace embedrt::httpd
