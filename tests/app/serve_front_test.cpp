// The HTTP front end of `embedrt serve` in-process with a scripted handler:
// late and duplicate replies, replies to closed connections, and the drain.
#include "embedrt/io_runtime.hpp"
#include "mock_test_client.hpp"
#include "serve/front_parse.hpp"
#include "serve/http_front.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::serve;
using namespace embedrt::test;
using std::chrono::milliseconds;
namespace net = boost::asio;

namespace {

/// Responders the handler kept, for the test to answer later.
struct parked {
  std::mutex mtx;
  std::condition_variable cv;
  std::vector<responder> responders;

  void add(responder r) {
    std::lock_guard<std::mutex> guard{mtx};
    responders.push_back(std::move(r));
    cv.notify_all();
  }

  /// Waits until `n` requests are parked.
  bool wait_for(std::size_t n, milliseconds timeout = milliseconds{5000}) {
    std::unique_lock<std::mutex> guard{mtx};
    return cv.wait_for(guard, timeout, [&] {
      return responders.size() >= n;
    });
  }

  responder at(std::size_t i) {
    std::lock_guard<std::mutex> guard{mtx};
    return responders.at(i);
  }
};

front_reply text_reply(int status, std::string body) {
  front_reply r;
  r.status = status;
  r.content_type = "text/plain";
  r.body = std::move(body);
  return r;
}

/// A started front end on one I/O thread whose handler parks every request's
/// responder for the test to answer.
struct parking_front {
  io_runtime io{1};
  parked park;
  http_front front{io.context(), front_options{},
                   [this](front_request, responder respond) {
                     park.add(std::move(respond));
                   }};
  uint16_t port = 0;
  parking_front() {
    port = front.start();
    REQUIRE(port != 0);
  }
};

/// Waits until `pred` holds (bounded).
template <class Pred>
bool eventually(Pred pred, milliseconds timeout = milliseconds{5000}) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(milliseconds{2});
  }
  return true;
}

} // namespace

TEST_CASE("front: replies come from other threads, only the first counts") {
  io_runtime io{2};
  parked park;
  http_front front{io.context(), front_options{},
                   [&](front_request req, responder respond) {
                     if (req.target == "/now") {
                       respond(text_reply(200, "now"));
                       return;
                     }
                     park.add(std::move(respond));
                   }};
  auto port = front.start();
  REQUIRE(port != 0);
  http_client client{port};
  // First request: answered from another thread, then answered again.
  auto first = std::async(std::launch::async, [&] {
    return client.request("GET", "/later");
  });
  REQUIRE(park.wait_for(1));
  auto r0 = park.at(0);
  std::thread{[r0] {
    r0(text_reply(201, "first"));
    r0(text_reply(500, "duplicate"));
  }}.join();
  auto res = first.get();
  CHECK(res.status == 201);
  CHECK(res.body == "first");
  CHECK(res.keep_alive);
  // The same connection carries the next request; a stale reply of the
  // previous one does not answer it.
  auto second = std::async(std::launch::async, [&] {
    return client.request("GET", "/later");
  });
  REQUIRE(park.wait_for(2));
  r0(text_reply(502, "stale"));
  park.at(1)(text_reply(202, "second"));
  res = second.get();
  CHECK(res.status == 202);
  CHECK(res.body == "second");
  CHECK(client.request("GET", "/now").body == "now");
  CHECK(client.connects() == 1);
}

TEST_CASE("front: a reply to a closed connection is dropped") {
  parking_front pf;
  auto& park = pf.park;
  auto& front = pf.front;
  auto port = pf.port;
  {
    http_client client{port};
    REQUIRE(client.send_only("POST", "/v1/embeddings", "{}") == failure::none);
    REQUIRE(park.wait_for(1));
    CHECK(front.connections() == 1);
  }
  // The client is gone; the session notices when it writes the reply.
  park.at(0)(text_reply(200, "nobody listens"));
  CHECK(eventually([&] {
    return front.connections() == 0;
  }));
  // Still serving.
  http_client again{port};
  auto fut = std::async(std::launch::async, [&] {
    return again.request("GET", "/x");
  });
  REQUIRE(park.wait_for(2));
  park.at(1)(text_reply(200, "ok"));
  CHECK(fut.get().status == 200);
}

TEST_CASE("front: its destructor closes every connection and returns once "
          "the I/O threads let go of its state") {
  io_runtime io{2};
  parked park;
  // The handler is part of the front end's state: once it is destroyed, the
  // I/O threads hold nothing of the front end any more.
  auto token = std::make_shared<int>(0);
  std::weak_ptr<int> state_alive = token;
  auto front = std::make_unique<http_front>(
      io.context(), front_options{},
      [&park, token = std::move(token)](front_request, responder respond) {
        park.add(std::move(respond));
      });
  auto port = front->start();
  REQUIRE(port != 0);
  http_client idle{port};
  REQUIRE(idle.connect() == failure::none);
  http_client busy{port};
  REQUIRE(busy.send_only("POST", "/v1/embeddings", "{}") == failure::none);
  REQUIRE(park.wait_for(1));
  auto start = std::chrono::steady_clock::now();
  front.reset();
  // Well under the destructor's 5 s bound: it was told, not timed out.
  CHECK(std::chrono::steady_clock::now() - start < milliseconds{4000});
  CHECK(state_alive.expired());
  CHECK(idle.wait_for_close(milliseconds{2000}));
  CHECK(busy.wait_for_close(milliseconds{2000}));
  // A late answer to a request of a destroyed front end goes nowhere.
  park.at(0)(text_reply(200, "too late"));
}

TEST_CASE("front: errors of its own — 413 and malformed HTTP") {
  io_runtime io{1};
  front_options opts;
  opts.max_body_bytes = 100;
  std::atomic<int> handled{0};
  http_front front{io.context(), opts, [&](front_request, responder respond) {
                     ++handled;
                     respond(text_reply(200, "ok"));
                   }};
  auto port = front.start();
  REQUIRE(port != 0);
  http_client client{port};
  auto res = client.request("POST", "/v1/embeddings", std::string(500, 'x'));
  CHECK(res.status == 413);
  CHECK_FALSE(res.keep_alive);
  CHECK_THAT(res.body, Catch::Contains("request_too_large"));
  http_client raw{port};
  res = raw.raw("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n");
  CHECK(res.status == 400);
  CHECK_THAT(res.body, Catch::Contains("bad_http"));
  CHECK(handled == 0);
}

TEST_CASE("front: drain closes idle connections, finishes busy ones, then "
          "refuses",
          "[drain]") {
  parking_front pf;
  auto& park = pf.park;
  auto& front = pf.front;
  auto port = pf.port;
  http_client idle{port};
  REQUIRE(idle.connect() == failure::none);
  http_client busy{port};
  auto pending = std::async(std::launch::async, [&] {
    return busy.request("POST", "/v1/embeddings", "{}");
  });
  REQUIRE(park.wait_for(1));
  REQUIRE(eventually([&] {
    return front.connections() == 2;
  }));
  std::promise<void> done;
  front.drain(milliseconds{5000}, [&] {
    done.set_value();
  });
  CHECK(idle.wait_for_close(milliseconds{2000}));
  http_client late{port};
  CHECK(late.connect(milliseconds{1000}) == failure::connect);
  CHECK(front.connections() == 1);
  park.at(0)(text_reply(200, "finished"));
  auto res = pending.get();
  CHECK(res.status == 200);
  CHECK_FALSE(res.keep_alive);
  busy.close();
  CHECK(done.get_future().wait_for(std::chrono::seconds{5})
        == std::future_status::ready);
  CHECK(front.connections() == 0);
}

TEST_CASE("front: at the end of the grace period the rest get 503", "[drain]") {
  parking_front pf;
  auto& park = pf.park;
  auto& front = pf.front;
  auto port = pf.port;
  http_client client{port};
  auto pending = std::async(std::launch::async, [&] {
    return client.request("POST", "/v1/embeddings", "{}");
  });
  REQUIRE(park.wait_for(1));
  std::promise<void> done;
  auto start = std::chrono::steady_clock::now();
  front.drain(milliseconds{100}, [&] {
    done.set_value();
  });
  auto res = pending.get();
  CHECK(res.status == 503);
  CHECK_THAT(res.body, Catch::Contains("shutting_down"));
  CHECK(res.header("retry-after") == "1");
  CHECK(std::chrono::steady_clock::now() - start < milliseconds{3000});
  client.close();
  CHECK(done.get_future().wait_for(std::chrono::seconds{5})
        == std::future_status::ready);
  // The handler's late answer goes nowhere.
  park.at(0)(text_reply(200, "too late"));
}

TEST_CASE("front: drain with no connection is done at once", "[drain]") {
  io_runtime io{1};
  http_front front{io.context(), front_options{},
                   [](front_request, responder respond) {
                     respond(text_reply(200, "ok"));
                   }};
  REQUIRE(front.start() != 0);
  std::promise<void> done;
  front.drain(milliseconds{5000}, [&] {
    done.set_value();
  });
  CHECK(done.get_future().wait_for(std::chrono::seconds{2})
        == std::future_status::ready);
}

namespace {

/// A plain blocking socket to 127.0.0.1:port (-1 on failure), with send and
/// receive timeouts so that nothing here can hang.
int raw_connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// Everything the peer sends until it closes (or the receive timeout).
std::string read_to_eof(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0)
      return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

/// True when the peer closed (EOF or reset) before the receive timeout.
bool closed_by_peer(int fd) {
  char buf[256];
  for (;;) {
    auto n = ::recv(fd, buf, sizeof(buf), 0);
    if (n == 0)
      return true;
    if (n < 0)
      return errno != EAGAIN && errno != EWOULDBLOCK;
  }
}

} // namespace

TEST_CASE("front: connections accepted as the drain begins are closed, and "
          "the drain completes",
          "[drain]") {
  // Regression: a connection accepted after the drain began but before the
  // listener closed deadlocked the front end's I/O thread (the session was
  // closed inline under the front end's lock, and closing takes it again):
  // no reply was written any more, and the process never exited.
  // Connections still in the listen backlog make that window likely.
  for (int round = 0; round < 10; ++round) {
    INFO("round " << round);
    io_runtime io{1};
    http_front front{io.context(), front_options{},
                     [](front_request, responder respond) {
                       respond(text_reply(200, "ok"));
                     }};
    auto port = front.start();
    REQUIRE(port != 0);
    std::vector<int> fds;
    for (int i = 0; i < 64; ++i) {
      int fd = raw_connect(port);
      if (fd >= 0)
        fds.push_back(fd);
    }
    REQUIRE(fds.size() == 64);
    std::promise<void> done;
    front.drain(milliseconds{5000}, [&] {
      done.set_value();
    });
    auto drained = done.get_future().wait_for(std::chrono::seconds{10});
    if (drained != std::future_status::ready) {
      // The I/O thread is stuck; the destructors would wait for it forever.
      FAIL_CHECK("the drain did not complete within 10 s (deadlock)");
      std::fprintf(stderr, "drain deadlocked in round %d\n", round);
      std::_Exit(3);
    }
    // Every connection was closed by the server (accepted ones by the
    // drain, backlog ones when the listener closed); none is left hanging.
    std::size_t closed = 0;
    for (int fd : fds) {
      closed += closed_by_peer(fd) ? 1 : 0;
      ::close(fd);
    }
    CHECK(closed == fds.size());
    CHECK(front.connections() == 0);
  }
}

TEST_CASE("front: a request already sent when the drain begins is answered "
          "with Connection: close",
          "[drain]") {
  io_runtime io{1};
  std::atomic<int> handled{0};
  http_front front{io.context(), front_options{},
                   [&](front_request, responder respond) {
                     ++handled;
                     respond(text_reply(200, "answered"));
                   }};
  auto port = front.start();
  REQUIRE(port != 0);
  int fd = raw_connect(port);
  REQUIRE(fd >= 0);
  REQUIRE(eventually([&] {
    return front.connections() == 1;
  }));
  // Hold the front end's only I/O thread so that the request is still
  // unread in the socket when the drain begins.
  std::promise<void> release;
  std::promise<void> held;
  net::post(io.context(), [&] {
    held.set_value();
    release.get_future().wait();
  });
  held.get_future().wait();
  std::string req = "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
                    "Content-Type: application/json\r\n"
                    "Content-Length: 2\r\n\r\n{}";
  REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL)
          == static_cast<ssize_t>(req.size()));
  std::promise<void> done;
  front.drain(milliseconds{5000}, [&] {
    done.set_value();
  });
  release.set_value();
  auto reply = read_to_eof(fd);
  ::close(fd);
  CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 200"));
  CHECK_THAT(reply, Catch::Contains("Connection: close"));
  CHECK_THAT(reply, Catch::EndsWith("answered"));
  CHECK(handled == 1);
  CHECK(done.get_future().wait_for(std::chrono::seconds{5})
        == std::future_status::ready);
}

TEST_CASE("front: parsing a request — limits, the request id rule") {
  front_options opts;
  opts.max_body_bytes = 100;
  opts.max_header_bytes = 2048;
  auto ok = parse_request("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
                          "Authorization: Bearer t\r\n"
                          "x-embedrt-timeout-ms: 50\r\nx-request-id: abc-1\r\n"
                          "Content-Length: 2\r\n\r\n{}",
                          opts, "req-assigned");
  REQUIRE(ok.request);
  CHECK(ok.request->method == "POST");
  CHECK(ok.request->target == "/v1/embeddings");
  CHECK(ok.request->body == "{}");
  CHECK(ok.request->authorization == "Bearer t");
  CHECK(ok.request->timeout_ms == "50");
  CHECK(ok.request->request_id == "abc-1");
  auto assigned = parse_request("GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                "x-request-id: has space\r\n\r\n",
                                opts, "req-assigned");
  REQUIRE(assigned.request);
  CHECK(assigned.request->request_id == "req-assigned");
  auto big_header = parse_request(
      "GET / HTTP/1.1\r\nx-big: " + std::string(3000, 'b') + "\r\n\r\n", opts,
      "id");
  REQUIRE(big_header.error);
  CHECK(big_header.error->status == 431);
  auto big_body = parse_request(
      "POST / HTTP/1.1\r\nContent-Length: 500\r\n\r\n", opts, "id");
  REQUIRE(big_body.error);
  CHECK(big_body.error->status == 413);
  auto bad = parse_request("NONSENSE\r\n\r\n", opts, "id");
  REQUIRE(bad.error);
  CHECK(bad.error->status == 400);
  auto partial = parse_request("GET / HTTP/1.1\r\nHost:", opts, "id");
  CHECK_FALSE(partial.request);
  CHECK_FALSE(partial.error);
  CHECK(acceptable_request_id(std::string(max_request_id, 'a')));
  CHECK_FALSE(acceptable_request_id(std::string(max_request_id + 1, 'a')));
  CHECK_FALSE(acceptable_request_id(""));
  CHECK_FALSE(acceptable_request_id("tab\there"));
}
