// The HTTP server pieces shared by the built-in upstream and the serve front
// end: the listener's errors, its accept loop and its close, and what a
// failed request read means.
#include "httpd/listener.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/http/error.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <memory>
#include <thread>

using namespace embedrt::httpd;
namespace net = boost::asio;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

/// An io_context run by one thread for the length of a test.
struct io_thread {
  net::io_context ioc;
  net::executor_work_guard<net::io_context::executor_type> work
      = net::make_work_guard(ioc);
  std::thread thread{[this] {
    ioc.run();
  }};

  ~io_thread() {
    work.reset();
    ioc.stop();
    thread.join();
  }
};

/// Connects a blocking socket of its own to 127.0.0.1:port.
boost::system::error_code connect_to(uint16_t port) {
  net::io_context ioc;
  tcp::socket s{ioc};
  boost::system::error_code ec;
  s.connect({net::ip::make_address("127.0.0.1"), port}, ec);
  return ec;
}

} // namespace

TEST_CASE("httpd: a failed read is too large, malformed, or gone") {
  CHECK(read_failure_of(http::error::body_limit) == read_failure::too_large);
  CHECK(read_failure_of(http::error::bad_target) == read_failure::malformed);
  CHECK(read_failure_of(http::error::bad_content_length)
        == read_failure::malformed);
  CHECK(read_failure_of(http::error::end_of_stream) == read_failure::gone);
  CHECK(read_failure_of(http::error::partial_message) == read_failure::gone);
  CHECK(read_failure_of(net::error::eof) == read_failure::gone);
  CHECK(read_failure_of(net::error::connection_reset) == read_failure::gone);
  CHECK(read_failure_of(boost::beast::error::timeout) == read_failure::gone);
}

TEST_CASE("httpd: listen reports why it cannot listen") {
  io_thread io;
  SECTION("a host that is not an IP literal") {
    listener l{io.ioc.get_executor()};
    CHECK(l.listen("localhost", 0) == 0);
    CHECK(l.error() == "invalid host 'localhost'");
  }
  SECTION("a port in use") {
    listener first{io.ioc.get_executor()};
    auto port = first.listen("127.0.0.1", 0);
    REQUIRE(port != 0);
    CHECK(first.error().empty());
    listener second{io.ioc.get_executor()};
    CHECK(second.listen("127.0.0.1", port) == 0);
    CHECK_THAT(second.error(),
               Catch::StartsWith("cannot bind 127.0.0.1:" + std::to_string(port)
                                 + ": "));
  }
}

TEST_CASE("httpd: the listener hands every connection over until closed") {
  io_thread io;
  // Owned by its pending operations (the keep-alive), as in the front end.
  auto l = std::make_shared<listener>(io.ioc.get_executor());
  auto port = l->listen("127.0.0.1", 0);
  REQUIRE(port != 0);
  auto accepted = std::make_shared<std::promise<tcp::endpoint>>();
  auto fut = accepted->get_future();
  l->start(
      [ex = io.ioc.get_executor()]() -> listener::executor_type {
        return ex;
      },
      [accepted](tcp::socket s) {
        accepted->set_value(s.remote_endpoint());
      },
      l);
  net::io_context client_ctx;
  tcp::socket client{client_ctx};
  client.connect({net::ip::make_address("127.0.0.1"), port});
  REQUIRE(fut.wait_for(std::chrono::seconds{5}) == std::future_status::ready);
  CHECK(fut.get() == client.local_endpoint());
  std::promise<void> closed;
  net::post(l->executor(), [&] {
    l->close();
    closed.set_value();
  });
  closed.get_future().wait();
  CHECK(connect_to(port) == net::error::connection_refused);
}
