// No API key in any output: a distinctive fake key is configured on every
// upstream, every error path is driven at debug log level (401, 403, 429,
// quota, 500, 400, connect failure, TLS failure, invalid and malformed
// responses, timeout, bad input, an upstream that echoes the Authorization
// header back in its error message), and all log output, every reply's
// rendered error, the metrics exposition and the health report are scanned
// for the key and for "Bearer <key>".
#include "embedrt/all.hpp"
#include "embedrt/protocol/metrics.hpp"
#include "integration_fixture.hpp"
#include "mock/mock_server.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/deep_to_string.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <future>
#include <netinet/in.h>
#include <poll.h>
#include <string>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* fake_key = "sk-embedrt-SECRETSCAN-7f3a9c1e5b2d";

/// A hostile upstream on 127.0.0.1: answers every request with 401 and an
/// OpenAI error whose message repeats the request's Authorization and
/// api-key headers (as a careless proxy might), and an x-request-id that
/// contains the key. Serves until destroyed.
class echo_auth_server {
 public:
  echo_auth_server() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(listen(fd_, 16) == 0);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      run();
    });
  }

  ~echo_auth_server() {
    stop_ = true;
    thread_.join();
    close(fd_);
  }

  std::string base_url() const {
    return "http://127.0.0.1:" + std::to_string(port_) + "/v1";
  }

  int requests() const {
    return served_.load();
  }

 private:
  static std::string header(const std::string& req, const std::string& name) {
    // Header names are matched case-insensitively.
    std::string lower = req;
    for (auto& ch : lower)
      ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto pos = lower.find("\r\n" + name + ":");
    if (pos == std::string::npos)
      return {};
    auto start = pos + 3 + name.size();
    auto end = req.find("\r\n", start);
    auto v = req.substr(start, end - start);
    while (!v.empty() && v.front() == ' ')
      v.erase(v.begin());
    return v;
  }

  /// The key the request carried (Authorization without "Bearer ", or
  /// api-key), echoed in the x-request-id of the answer.
  static std::string echoed_key(const std::string& req) {
    auto key = header(req, "authorization");
    if (key.rfind("Bearer ", 0) == 0)
      key.erase(0, 7);
    return key + header(req, "api-key");
  }

  void serve(int c) {
    std::string req;
    char buf[4096];
    // Read the head and the body (Content-Length), bounded in time.
    for (int i = 0; i < 200; ++i) {
      pollfd p{c, POLLIN, 0};
      if (poll(&p, 1, 10) <= 0)
        continue;
      auto n = read(c, buf, sizeof(buf));
      if (n <= 0)
        break;
      req.append(buf, static_cast<std::size_t>(n));
      auto head_end = req.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        auto cl = header(req, "content-length");
        auto want = head_end + 4 + (cl.empty() ? 0 : std::stoul(cl));
        if (req.size() >= want)
          break;
      }
    }
    ++served_;
    std::string body = R"({"error":{"message":"Incorrect API key provided: )"
        + header(req, "authorization") + " / " + header(req, "api-key")
        + R"(","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})";
    std::string resp = "HTTP/1.1 401 Unauthorized\r\nContent-Type: "
                       "application/json\r\nx-ratelimit-remaining-requests: "
                       "42\r\nx-ratelimit-remaining-tokens: 4200\r\n"
                       "x-request-id: echo-"
        + std::to_string(served_.load()) + "-" + echoed_key(req)
        + "\r\nConnection: close\r\nContent-Length: "
        + std::to_string(body.size()) + "\r\n\r\n" + body;
    auto w = write(c, resp.data(), resp.size());
    (void)w;
    close(c);
  }

  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0)
        continue;
      int c = accept(fd_, nullptr, nullptr);
      if (c >= 0)
        serve(c);
    }
  }

  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> served_{0};
  std::thread thread_;
};

/// A port on 127.0.0.1 with nothing listening (bound, then closed).
uint16_t closed_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

/// Every place the key could show up in `text`.
bool leaks(const std::string& text) {
  std::string key = fake_key;
  return text.find(key) != std::string::npos
      || text.find("Bearer " + key) != std::string::npos
      || text.find("SECRETSCAN") != std::string::npos;
}

std::string read_all(std::FILE* f) {
  std::string out;
  std::fflush(f);
  std::rewind(f);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0)
    out.append(buf, n);
  return out;
}

} // namespace

TEST_CASE("no API key in logs, errors, metrics or health on any error path",
          "[metrics][security]") {
  // The scanner itself finds the key (it is not a rubber stamp).
  CHECK(leaks(std::string{"x Bearer "} + fake_key + " y"));
  CHECK_FALSE(leaks("Bearer sk-..."));

  std::FILE* logf = std::tmpfile();
  REQUIRE(logf != nullptr);
  set_log_sink(logf);
  set_log_level(log_level::debug);

  // Upstreams, one model each.
  std::vector<std::unique_ptr<mock::mock_server>> mocks;
  struct path {
    std::string model;
    std::vector<std::string> inputs;
  };
  std::vector<path> paths;
  runtime_config rc;
  rc.retry.max_attempts = 2;
  rc.retry.backoff_base = 1ms;
  rc.retry.backoff_cap = 2ms;
  rc.seed = 3;
  auto add = [&](const std::string& name, const std::string& url,
                 provider_kind kind = provider_kind::openai) {
    upstream_config up;
    up.name = name;
    up.base_url = url;
    up.provider = kind;
    up.api_key = fake_key;
    up.models = {name};
    up.connections = 1;
    up.attempt_timeout = 2000ms;
    rc.upstreams.push_back(up);
  };
  auto add_mock = [&](const std::string& name, mock::mock_options o) {
    mocks.push_back(start_mock(std::move(o)));
    add(name, mocks.back()->base_url());
    paths.push_back({name, {"hello", "world"}}); // baddims needs 2
  };
  add_mock("f401", faulty({mock::fault_kind::status, 401}));
  add_mock("f403", faulty({mock::fault_kind::status, 403}));
  add_mock("f429", faulty({mock::fault_kind::rate_limit, 429}));
  add_mock("fquota", faulty({mock::fault_kind::quota, 429}));
  add_mock("f500", faulty({mock::fault_kind::status, 500}));
  add_mock("fmalformed", faulty({mock::fault_kind::malformed, 0}));
  add_mock("fbaddims", faulty({mock::fault_kind::baddims, 0}));
  add_mock("fnan", faulty({mock::fault_kind::nan, 0}));
  add_mock("freset", faulty({mock::fault_kind::reset, 0}));
  add_mock("fhang", faulty({mock::fault_kind::hang, 0}));
  add_mock("good", {});
  paths.push_back({"good", {"bad [[mock:400]] input"}}); // upstream 400
  paths.push_back({"good", {}});                         // bad input
  paths.push_back({"good", {std::string{"nul\0x", 5}}}); // bad input
  paths.push_back({"good", {""}});                       // bad input
  paths.push_back({"nope", {"x"}});                      // unknown model
  // TLS: a server certificate the client does not trust.
  mock::mock_options tls;
  tls.tls_cert_file = EMBEDRT_TEST_DATA_DIR "/tls/server.pem";
  tls.tls_key_file = EMBEDRT_TEST_DATA_DIR "/tls/server.key";
  mocks.push_back(start_mock(tls));
  add("ftls",
      "https://localhost:" + std::to_string(mocks.back()->port()) + "/v1");
  paths.push_back({"ftls", {"x"}});
  add("fconnect", "http://127.0.0.1:" + std::to_string(closed_port()) + "/v1");
  paths.push_back({"fconnect", {"x"}});
  // Azure sends the key in `api-key` instead of Authorization.
  add("fazure", mocks.front()->base_url(), provider_kind::azure);
  paths.push_back({"fazure", {"x"}});
  echo_auth_server echo;
  add("fecho", echo.base_url());
  paths.push_back({"fecho", {"x"}});
  add("fechoazure", echo.base_url(), provider_kind::azure);
  paths.push_back({"fechoazure", {"x"}});

  std::string outputs;
  {
    caf::actor_system_config cfg;
    register_types(cfg);
    caf::actor_system sys{cfg};
    auto svc = spawn_service(sys, rc);
    REQUIRE(svc);
    client c{sys, *svc};
    std::vector<std::future<caf::expected<embed_result>>> futs;
    for (auto& p : paths) {
      embed_request req;
      req.model = p.model;
      req.inputs = p.inputs;
      req.timeout = p.model == "fhang" ? 500ms : 5000ms;
      futs.push_back(c.embed(std::move(req)));
    }
    int errors = 0;
    for (std::size_t i = 0; i < futs.size(); ++i) {
      auto r = futs[i].get();
      INFO(paths[i].model);
      if (paths[i].model == "good" && !paths[i].inputs.empty()
          && paths[i].inputs[0] == "hello") {
        CHECK(r);
        continue;
      }
      REQUIRE_FALSE(r);
      ++errors;
      outputs += render_error(r.error()) + "\n";
      outputs += caf::to_string(r.error()) + "\n";
      outputs += sys.render(r.error()) + "\n";
      if (paths[i].model == "f401" || paths[i].model == "f403"
          || paths[i].model == "fecho" || paths[i].model == "fechoazure")
        CHECK(error_code(r.error()) == errc::auth_failed);
      if (paths[i].model == "ftls")
        CHECK(error_code(r.error()) == errc::tls_failed);
      if (paths[i].model == "fconnect")
        CHECK(error_code(r.error()) == errc::connection_failed);
      if (paths[i].model == "fquota")
        CHECK(error_code(r.error()) == errc::quota_exceeded);
    }
    CHECK(errors == static_cast<int>(paths.size()) - 1);
    // The hostile upstream did receive the key (else the test proves
    // nothing about it), and its echo was redacted from the error detail.
    CHECK(echo.requests() >= 2);
    INFO(outputs);
    CHECK(outputs.find("Incorrect API key provided: Bearer [redacted] / \"")
          != std::string::npos); // Authorization echoed
    CHECK(outputs.find("Incorrect API key provided:  / [redacted]")
          != std::string::npos); // api-key echoed (Azure)
    auto snap = c.metrics();
    REQUIRE(snap);
    outputs += render_prometheus(*snap);
    // The rate-limit hints of the echo server's answers reach the metrics.
    for (const auto& u : snap->upstreams)
      if (u.name == "fecho") {
        CHECK(u.ratelimit_remaining_requests == 42);
        CHECK(u.ratelimit_remaining_tokens == 4200);
      }
    CHECK(outputs.find("embedrt_ratelimit_remaining_tokens{upstream=\"fecho\"} "
                       "4200\n")
          != std::string::npos);
    auto health = c.health();
    REQUIRE(health);
    outputs += caf::deep_to_string(*health);
    caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
  }
  set_log_sink(nullptr);
  set_log_level(log_level::error);
  auto logs = read_all(logf);
  std::fclose(logf);
  // The logs saw the error paths, with request ids and upstream ids.
  CHECK(logs.find("event=request_failed") != std::string::npos);
  CHECK(logs.find("event=attempt_failed") != std::string::npos);
  CHECK(logs.find("upstream_request_id=mock-") != std::string::npos);
  CHECK(logs.find("upstream_request_id=echo-") != std::string::npos);
  // The upstream's x-request-id echoed the key: redacted like its bodies.
  CHECK(logs.find("-[redacted]") != std::string::npos);
  std::size_t request_lines = 0;
  std::size_t pos = 0;
  while (pos < logs.size()) {
    auto end = logs.find('\n', pos);
    if (end == std::string::npos)
      end = logs.size();
    auto line = logs.substr(pos, end - pos);
    pos = end + 1;
    if (line.find("event=request_") != std::string::npos
        || line.find("event=attempt_") != std::string::npos) {
      ++request_lines;
      INFO(line);
      CHECK(line.find(" request_id=req-") != std::string::npos);
      CHECK(line.find(" upstream_request_id=") != std::string::npos);
    }
  }
  CHECK(request_lines >= paths.size());
  INFO("log bytes: " << logs.size()
                     << ", other output bytes: " << outputs.size());
  CHECK_FALSE(leaks(logs));
  CHECK_FALSE(leaks(outputs));
}
