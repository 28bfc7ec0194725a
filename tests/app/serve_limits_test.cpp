// End to end: the limits of `embedrt serve`'s front end, through the real
// binary and real sockets (docs/security.md): slow clients get 408 at the
// request timeout, headers up to the limit (16 KiB JWTs) pass and larger get
// 431, every reply carries `x-request-id`, upstream addresses stay out of
// client error messages, and with the file descriptor limit reached by idle
// connections /healthz is still answered and the exhaustion is logged.
#include "embedrt/protocol/openai.hpp"
#include "mock_test_client.hpp"
#include "serve_load_util.hpp"
#include "serve_test_util.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <netinet/in.h>
#include <poll.h>
#include <set>
#include <string>
#include <sys/socket.h>
#include <tuple>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

/// A raw response: its status and its headers (lower-case names).
struct raw_reply {
  int status = 0;
  std::string head;
  std::string body;

  explicit raw_reply(const std::string& bytes) {
    auto end = bytes.find("\r\n\r\n");
    INFO("response: " << bytes);
    REQUIRE(end != std::string::npos);
    REQUIRE(bytes.rfind("HTTP/1.1 ", 0) == 0);
    status = std::stoi(bytes.substr(9, 3));
    head = bytes.substr(0, end + 2);
    std::transform(head.begin(), head.end(), head.begin(), [](char c) {
      return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    });
    body = bytes.substr(end + 4);
  }

  std::string header(const std::string& name) const {
    auto at = head.find("\r\n" + name + ": ");
    if (at == std::string::npos)
      return {};
    at += name.size() + 4;
    return head.substr(at, head.find("\r\n", at) - at);
  }
};

std::string code_of(const std::string& body) {
  auto e = openai::decode_error(body);
  INFO("body: " << body);
  REQUIRE(e);
  return e->code;
}

/// Counts the lines of `text` that contain `needle`.
std::size_t lines_with(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size()))
    ++n;
  return n;
}

/// `embedrt serve` under `prlimit --nofile=N:N` (soft and hard limit, so
/// the command cannot raise it).
struct limited_serve {
  process proc;
  uint16_t port = 0;
  limited_serve(int nofile, std::vector<std::string> args)
      : proc([&] {
          std::vector<std::string> all{"--nofile=" + std::to_string(nofile)
                                           + ":" + std::to_string(nofile),
                                       EMBEDRT_CLI_PATH,
                                       "serve",
                                       "--listen",
                                       "127.0.0.1:0",
                                       "--log-level",
                                       "warn"};
          all.insert(all.end(), args.begin(), args.end());
          return process{"/usr/bin/prlimit", all, clean_env()};
        }()) {
    port = proc.wait_listening();
  }
};

} // namespace

TEST_CASE("serve: a request trickled in, header or body, gets 408 at the "
          "request timeout") {
  mock_proc mock;
  temp_config file{"[serve]\nrequest_timeout_ms = 1000\n"};
  serve_proc serve{{"--upstream", mock.url, "--config", file.path}};
  SECTION("a header trickled in (slowloris)") {
    tcp_conn c{serve.port};
    auto start = steady_clock::now();
    c.send_text("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n");
    int lines = 0;
    while (!c.readable(milliseconds{100}) && lines < 100)
      c.send_text("x-trickle-" + std::to_string(lines++) + ": a\r\n");
    auto took = steady_clock::now() - start;
    raw_reply r{c.read_until_close(milliseconds{5000})};
    CHECK(r.status == 408);
    CHECK(code_of(r.body) == "request_timeout");
    CHECK(r.header("connection") == "close");
    CHECK(r.header("x-request-id").rfind("req-", 0) == 0);
    CHECK(took >= milliseconds{950});
    CHECK(took < milliseconds{3000});
  }
  SECTION("a body shorter than its Content-Length") {
    tcp_conn c{serve.port};
    auto start = steady_clock::now();
    c.send_text("POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n"
                "x-request-id: slow-body-1\r\nContent-Type: "
                "application/json\r\nContent-Length: 100\r\n\r\n{\"model\":");
    REQUIRE(c.readable(milliseconds{5000}));
    auto took = steady_clock::now() - start;
    raw_reply r{c.read_until_close(milliseconds{5000})};
    CHECK(r.status == 408);
    CHECK(code_of(r.body) == "request_timeout");
    CHECK(r.header("x-request-id") == "slow-body-1");
    CHECK(took >= milliseconds{950});
    CHECK(took < milliseconds{3000});
  }
  SECTION("an idle keep-alive connection is not a slow request") {
    // Nothing sent: the idle timeout (60 s) applies, not the request
    // timeout; the connection still serves a request after it.
    http_client client{serve.port};
    REQUIRE(client.request("GET", "/healthz").status == 200);
    tcp_conn idle{serve.port};
    CHECK_FALSE(idle.closed_silently(milliseconds{1500}));
    idle.send_text("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: "
                   "close\r\n\r\n");
    raw_reply r{idle.read_until_close(milliseconds{5000})};
    CHECK(r.status == 200);
  }
}

TEST_CASE("serve: 16 KiB of headers (a large JWT) pass, beyond the limit "
          "gets 431") {
  mock_proc mock;
  std::string jwt(16 * 1024, 'j');
  serve_proc serve{{"--upstream", mock.url, "--auth-token-env", "GW_TOKEN"},
                   clean_env({"GW_TOKEN=" + jwt})};
  http_client client{serve.port};
  auto res = client.embed(embed_body({"large token"}, 8),
                          {{"Authorization", "Bearer " + jwt}});
  CHECK(res.status == 200);
  res = client.request("GET", "/healthz", {},
                       {{"x-big", std::string(16 * 1024, 'b')}});
  CHECK(res.status == 200);
  // The default limit is 32 KiB of request line and headers.
  http_client big{serve.port};
  res = big.request(
      "GET", "/healthz", {},
      {{"x-big", std::string(40 * 1024, 'b')}, {"x-request-id", "too-big-1"}});
  REQUIRE(res.status == 431);
  CHECK(error_of(res).code == "header_too_large");
  CHECK_FALSE(res.keep_alive);
  // The header was not read: the id is the assigned one.
  CHECK(res.header("x-request-id").rfind("req-", 0) == 0);
  // A smaller configured limit.
  temp_config file{"[serve]\nmax_header_bytes = 4096\n"};
  serve_proc small{{"--upstream", mock.url, "--config", file.path}};
  http_client c{small.port};
  CHECK(c.request("GET", "/healthz", {}, {{"x-big", std::string(3000, 'b')}})
            .status
        == 200);
  CHECK(c.request("GET", "/healthz", {}, {{"x-big", std::string(5000, 'b')}})
            .status
        == 431);
}

TEST_CASE("serve: every reply carries x-request-id, errors included") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url, "--auth-token-env", "GW_TOKEN",
                    "--max-body-bytes", "2048"},
                   clean_env({"GW_TOKEN=let-me-in"})};
  header_list auth{{"Authorization", "Bearer let-me-in"}};
  auto with_id = [&](const std::string& id) {
    auto h = auth;
    h.emplace_back("x-request-id", id);
    return h;
  };
  struct probe {
    int status;
    std::string method, target, body;
    bool authorized;
  };
  std::vector<probe> probes{
      {200, "POST", "/v1/embeddings", embed_body({"fine"}, 8), true},
      {200, "GET", "/healthz", "", false},
      {400, "POST", "/v1/embeddings", "{\"model\":", true},
      {401, "POST", "/v1/embeddings", embed_body({"fine"}, 8), false},
      {404, "GET", "/nowhere", "", true},
      {405, "GET", "/v1/embeddings", "", true},
      {413, "POST", "/v1/embeddings", embed_body({std::string(4096, 'x')}),
       true},
  };
  std::set<std::string> assigned;
  for (const auto& p : probes) {
    INFO(p.method << " " << p.target << " -> " << p.status);
    // The client's id comes back...
    http_client client{serve.port};
    auto id = "client-" + std::to_string(p.status) + "-" + p.target;
    auto res = client.request(p.method, p.target, p.body,
                              p.authorized ? with_id(id)
                                           : header_list{{"x-request-id", id}});
    CHECK(res.status == p.status);
    CHECK(res.header("x-request-id") == id);
    // ... and without one, an assigned one, different for every request.
    http_client plain{serve.port};
    res = plain.request(p.method, p.target, p.body,
                        p.authorized ? auth : header_list{});
    CHECK(res.status == p.status);
    auto given = res.header("x-request-id");
    CHECK(given.rfind("req-", 0) == 0);
    CHECK(assigned.insert(given).second);
  }
  // Malformed HTTP (400 bad_http).
  http_client raw{serve.port};
  auto res = raw.raw("NONSENSE\r\n\r\n");
  CHECK(res.status == 400);
  CHECK(res.header("x-request-id").rfind("req-", 0) == 0);
  // An id that is not acceptable (spaces, too long) is replaced.
  http_client odd{serve.port};
  res = odd.request("GET", "/healthz", {},
                    {{"x-request-id", std::string(200, 'i')}});
  CHECK(res.header("x-request-id").rfind("req-", 0) == 0);
  res = odd.request("GET", "/healthz", {}, {{"x-request-id", "a b"}});
  CHECK(res.header("x-request-id").rfind("req-", 0) == 0);
}

TEST_CASE("serve: 429, 5xx and 504 from the upstream's side carry "
          "x-request-id too") {
  mock_proc limited{{"--fault", "429:1", "--retry-after-ms", "30"}};
  mock_proc failing{{"--fault", "500:1"}};
  mock_proc slow{{"--latency-ms", "3000"}};
  for (auto& [url, status, extra] :
       std::vector<std::tuple<std::string, int, header_list>>{
           {limited.url, 429, {}},
           {failing.url, 502, {}},
           {slow.url, 504, {{"x-embedrt-timeout-ms", "200"}}}}) {
    INFO("status " << status);
    // After the first request's retries the breaker may be open: 503.
    auto expected = [status = status](int got) {
      return got == status || (status != 504 && got == 503);
    };
    serve_proc gw{{"--upstream", url}};
    http_client client{gw.port};
    auto h = extra;
    h.emplace_back("x-request-id", "upstream-" + std::to_string(status));
    auto r = client.embed(embed_body({"x"}, 8), h, milliseconds{10000});
    CHECK(r.status == status);
    CHECK(r.header("x-request-id") == "upstream-" + std::to_string(status));
    r = client.embed(embed_body({"x"}, 8), extra, milliseconds{10000});
    CHECK(expected(r.status));
    CHECK(r.header("x-request-id").rfind("req-", 0) == 0);
  }
}

TEST_CASE("serve: client error messages leave out the upstream's address "
          "unless upstream_error_detail = full") {
  // An upstream that refuses connections: the runtime's detail names its
  // address.
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  auto port = std::to_string(ntohs(addr.sin_port));
  auto url = "http://127.0.0.1:" + port + "/v1";
  for (bool full : {false, true}) {
    INFO("upstream_error_detail = " << (full ? "full" : "message"));
    temp_config file{std::string{"[serve]\nupstream_error_detail = "}
                     + (full ? "full" : "message") + "\n"};
    serve_proc gw{{"--upstream", url, "--config", file.path}};
    http_client client{gw.port};
    auto res = client.embed(embed_body({"anyone"}, 8), {}, milliseconds{10000});
    REQUIRE(res.status == 502);
    auto e = error_of(res);
    CHECK(e.code == "connection_failed");
    if (full) {
      CHECK_THAT(e.message, Catch::Contains("127.0.0.1:" + port));
    } else {
      CHECK_THAT(e.message, !Catch::Contains(port));
      CHECK_THAT(e.message, Catch::Contains("[upstream]"));
    }
  }
  close(fd);
}

TEST_CASE("serve: with the file descriptor limit low, idle connections give "
          "their place and /healthz is answered") {
  // 128 descriptors: the front end takes at most 64 client connections.
  limited_serve serve{128, {}};
  std::vector<std::unique_ptr<tcp_conn>> idle;
  for (int i = 0; i < 150; ++i)
    idle.push_back(std::make_unique<tcp_conn>(serve.port));
  http_client client{serve.port};
  auto res = client.request("GET", "/healthz", {}, {}, milliseconds{5000});
  CHECK(res.status == 200);
  // The oldest idle connections were closed to make room: at most the
  // limit is open.
  std::size_t closed = 0;
  for (auto& c : idle)
    if (c->closed_silently(milliseconds{closed < 150 - 64 ? 2000 : 50}))
      ++closed;
  CHECK(closed >= 150 - 64);
  serve.proc.signal(SIGTERM);
  CHECK(serve.proc.wait_exit(milliseconds{10000}) == 0);
  CHECK_THAT(serve.proc.stderr_text(),
             Catch::Contains("event=connection_limit reason=evicted_idle"));
}

TEST_CASE("serve: running out of file descriptors is logged once per "
          "interval and /healthz is still answered") {
  // max_connections above what 128 descriptors allow: accept() fails with
  // EMFILE; an idle connection gives its place each time.
#ifdef EMBEDRT_UBSAN_VPTR
  // UBSan's vptr check probes an object's vtable through a pipe; with no
  // descriptor left it reports valid objects as "invalid vptr" (seen in
  // Boost's error_category and std::thread) and halts the server.
  // Suppressions do not apply to it. Run in the plain and TSan builds.
  WARN("skipped under UBSan: its vptr check needs a free descriptor");
  return;
#endif
  temp_config file{"[serve]\nmax_connections = 1000\n"};
  auto start = steady_clock::now();
  limited_serve serve{128, {"--config", file.path}};
  std::vector<std::unique_ptr<tcp_conn>> idle;
  for (int i = 0; i < 150; ++i)
    idle.push_back(std::make_unique<tcp_conn>(serve.port));
  http_client client{serve.port};
  auto res = client.request("GET", "/healthz", {}, {}, milliseconds{5000});
  CHECK(res.status == 200);
  idle.clear();
  serve.proc.signal(SIGTERM);
  CHECK(serve.proc.wait_exit(milliseconds{10000}) == 0);
  auto took = steady_clock::now() - start;
  auto err = serve.proc.stderr_text();
  INFO("stderr: " << err);
  auto lines = lines_with(err, "event=connection_limit reason=accept_failed");
  CHECK(lines >= 1);
  // One line per 10 s interval at most (with the count of refusals).
  CHECK(lines <= 1 + static_cast<std::size_t>(took / std::chrono::seconds{10}));
  CHECK_THAT(err, Catch::Contains("Too many open files"));
}
