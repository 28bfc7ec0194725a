// Bad input (issue 15, "Bad input table"), as one table through the real
// `embedrt serve` (in front of the real `embedrt mock`) and one through the
// library API (the `client` facade over an in-process service): each case
// gets its typed error, nothing crashes or hangs, and a normal request is
// answered afterwards. Cases covered elsewhere are not repeated here:
// malformed JSON, wrong types, no model, an empty list, "" as a text, a
// negative `dimensions`, "\u0000" and a bad timeout header
// (serve_e2e_test.cpp, "400 for invalid requests"); 2,049 inputs
// (serve_clients_test.cpp); oversized bodies and headers, trickled
// requests, the connection cap (serve_limits_test.cpp); the library's
// empty, invalid UTF-8, NUL and 1 MB texts (tests/actors/
// runtime_integration_test.cpp, "invalid input is rejected before any
// network I/O").
#include "embedrt/all.hpp"
#include "embedrt/protocol/hash_embedder.hpp"
#include "mock/mock_server.hpp"
#include "serve_load_util.hpp"
#include "serve_test_util.hpp"

#include <arpa/inet.h>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/send.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string>
#include <sys/socket.h>
#include <unistd.h>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

std::string post(const std::string& extra_headers, const std::string& body) {
  return "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: "
         "application/json\r\n"
      + extra_headers + "\r\n" + body;
}

} // namespace

TEST_CASE("serve: bad input table — bodies, framings, pipelining, idle "
          "connections: typed errors, no crash or hang") {
  mock_proc mock;
  serve_proc serve{{"--upstream", mock.url}};
  auto normal = [&] {
    http_client c{serve.port};
    auto res = c.embed(embed_body({"still here"}, 8));
    INFO("status " << res.status << ": " << res.body);
    return res.status == 200
        && vectors_of(res, 1, 8)[0] == hash_embed("still here", 8);
  };

  SECTION("bodies: each gets 400 with its code and param") {
    struct bad_body {
      const char* what;
      std::string body;
      const char* param; // "" = none expected
    };
    std::string invalid_utf8 = "{\"model\":\"m\",\"input\":\"bad \xc3\x28\"}";
    std::string raw_nul
        = std::string{"{\"model\":\"m\",\"input\":\"a"} + '\0' + "b\"}";
    std::vector<bad_body> table{
        {"empty body", "", ""},
        {"truncated JSON", R"({"model":"m","inp)", ""},
        {"trailing garbage", R"({"model":"m","input":"a"} x)", ""},
        {"a 1 MB text (over the token limit)",
         embed_body({std::string(1 << 20, 'x')}), "input"},
        {"invalid UTF-8 in a text", invalid_utf8, ""},
        {"a raw NUL byte in a string", raw_nul, ""},
        {"dimensions as a string",
         R"({"model":"m","input":"a","dimensions":"8"})", "dimensions"},
        {"dimensions 0", R"({"model":"m","input":"a","dimensions":0})",
         "dimensions"},
        {"dimensions 2^31",
         R"({"model":"m","input":"a","dimensions":2147483648})", "dimensions"},
        {"dimensions 1e9", R"({"model":"m","input":"a","dimensions":1e9})",
         "dimensions"},
        {"a number as a text", R"({"model":"m","input":[1.5]})", ""},
        {"a token array with a string", R"({"model":"m","input":[[1,"a"]]})",
         ""},
        {"an empty token array", R"({"model":"m","input":[[]]})", ""},
        {"input null", R"({"model":"m","input":null})", ""},
        {"a duplicate key", R"({"model":"m","input":"a","input":"b"})", ""},
        {"deeply nested", std::string(100000, '[') + std::string(100000, ']'),
         ""},
    };
    http_client client{serve.port};
    for (const auto& c : table) {
      INFO(c.what);
      auto res = client.embed(c.body, {}, milliseconds{10000});
      CHECK(res.status == 400);
      if (res.status != 400)
        continue;
      auto e = error_of(res);
      CHECK(e.type == "invalid_request_error");
      CHECK_FALSE(e.message.empty());
      if (*c.param != '\0')
        CHECK(e.param == c.param);
    }
    // Huge but well-formed dimensions reach the upstream, which refuses
    // them (the mock takes at most 4,096): still a 400 naming dimensions.
    auto res = client.embed(R"({"model":"m","input":"a","dimensions":100000})");
    CHECK(res.status == 400);
    CHECK(normal());
  }

  SECTION("request smuggling framings: 400 and the connection closes") {
    auto body = embed_body({"smuggled"}, 8);
    auto cl = "Content-Length: " + std::to_string(body.size()) + "\r\n";
    struct framing {
      const char* what;
      std::string bytes;
    };
    std::vector<framing> table{
        {"Content-Length and Transfer-Encoding",
         post(cl + "Transfer-Encoding: chunked\r\n",
              "0\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")},
        {"two different Content-Length",
         post(cl + "Content-Length: 3\r\n", body)},
        {"Transfer-Encoding that is not chunked",
         post("Transfer-Encoding: gzip\r\n", body)},
        {"chunked, then another coding",
         post("Transfer-Encoding: chunked, gzip\r\n", body)},
        {"a bad chunk size",
         post("Transfer-Encoding: chunked\r\n",
              "zz\r\n" + body + "\r\n0\r\n\r\n")},
        {"a negative Content-Length", post("Content-Length: -1\r\n", body)},
    };
    for (const auto& f : table) {
      INFO(f.what);
      tcp_conn conn{serve.port};
      conn.send_text(f.bytes);
      bool closed = false;
      auto reply = conn.read_all(milliseconds{5000}, closed);
      INFO("reply: " << reply.substr(0, 400));
      // One answer, a 400, and nothing smuggled after it: the connection
      // is closed.
      CHECK(statuses(reply) == std::vector<int>{400});
      CHECK(closed);
    }
    CHECK(normal());
  }

  SECTION("pipelining: requests sent together are answered in order") {
    tcp_conn conn{serve.port};
    std::string bytes;
    for (int i = 0; i < 3; ++i) {
      auto body = embed_body({"pipelined " + std::to_string(i)}, 8);
      bytes += post("Content-Length: " + std::to_string(body.size())
                        + "\r\nx-request-id: pipe-" + std::to_string(i)
                        + (i == 2 ? "\r\nConnection: close\r\n" : "\r\n"),
                    body);
    }
    bytes += "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"; // after the close
    conn.send_text(bytes);
    bool closed = false;
    auto reply = conn.read_all(milliseconds{10000}, closed);
    INFO("reply: " << reply.substr(0, 600));
    CHECK(closed);
    CHECK(statuses(reply) == std::vector<int>{200, 200, 200});
    auto a = reply.find("pipe-0");
    auto b = reply.find("pipe-1");
    auto c = reply.find("pipe-2");
    CHECK((a != std::string::npos && a < b && b < c && c != std::string::npos));
  }

  SECTION("2,000 idle connections: a new client is still answered") {
    std::vector<tcp_conn> idle;
    idle.reserve(2000);
    for (int i = 0; i < 2000; ++i)
      idle.emplace_back(serve.port);
    auto t0 = steady_clock::now();
    CHECK(normal());
    CHECK(steady_clock::now() - t0 < milliseconds{5000});
    http_client probe{serve.port};
    CHECK(probe.request("GET", "/healthz").status == 200);
  }
  // The process is still up.
  CHECK(kill(serve.proc.pid(), 0) == 0);
  CHECK(normal());
}

TEST_CASE("library API: bad input table — typed errors, the service keeps "
          "serving") {
  caf::actor_system_config cfg;
  register_types(cfg);
  set_log_level(log_level::error);
  caf::actor_system sys{cfg};
  mock::mock_server srv{mock::mock_options{}};
  REQUIRE(srv.start() != 0);
  runtime_config rc;
  upstream_config up;
  up.name = "mock";
  up.base_url = srv.base_url();
  up.models = {"m"};
  rc.upstreams.push_back(up);
  rc.default_timeout = std::chrono::milliseconds{10000};
  auto svc = spawn_service(sys, rc);
  REQUIRE(svc);
  client c{sys, *svc};
  auto request = [](std::vector<std::string> texts) {
    embed_request req;
    req.model = "m";
    req.inputs = std::move(texts);
    req.dimensions = 8;
    return req;
  };
  struct bad {
    const char* what;
    embed_request req;
    errc code;
    int32_t status; // 0: any
  };
  std::vector<bad> table;
  {
    auto r = request({"a"});
    r.dimensions = 100000; // refused by the upstream (at most 4,096)
    table.push_back({"huge dimensions", r, errc::invalid_input, 0});
  }
  {
    auto r = request({"a"});
    r.dimensions = std::numeric_limits<int32_t>::min();
    table.push_back({"most negative dimensions", r, errc::invalid_input, 0});
  }
  {
    auto r = request(std::vector<std::string>(2049, "x"));
    table.push_back({"2,049 inputs", r, errc::invalid_input, 0});
  }
  {
    auto r = request({"a"});
    r.token_inputs = {{1, 2}};
    table.push_back({"texts and token arrays", r, errc::invalid_input, 0});
  }
  {
    auto r = request({});
    r.token_inputs = {{}};
    table.push_back({"an empty token array", r, errc::invalid_input, 0});
  }
  {
    auto r = request({"a"});
    r.model = "no-such-model";
    table.push_back({"an unknown model", r, errc::invalid_input, 404});
  }
  {
    auto r = request({std::string(4 << 20, 'y')});
    table.push_back({"a 4 MB text", r, errc::invalid_input, 0});
  }
  for (auto& b : table) {
    INFO(b.what);
    auto r = c.embed(b.req).get();
    REQUIRE_FALSE(r);
    CHECK(error_code(r.error()) == b.code);
    if (b.status != 0)
      CHECK(error_http_status(r.error()) == b.status);
  }
  auto ok = c.embed(request({"fine"})).get();
  REQUIRE(ok);
  CHECK(ok->embeddings[0] == hash_embed("fine", 8));
  caf::anon_send_exit(*svc, caf::exit_reason::user_shutdown);
}
