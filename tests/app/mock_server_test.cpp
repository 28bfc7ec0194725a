#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/hash_embedder.hpp"
#include "embedrt/protocol/openai.hpp"
#include "embedrt/protocol/provider.hpp"
#include "mock/mock_handler.hpp"
#include "mock/mock_server.hpp"
#include "mock_test_client.hpp"
#include "mock_test_util.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using embedrt::mock::mock_options;
using std::chrono::steady_clock;

namespace {

openai::embeddings_response decode(const http_response& res, std::size_t inputs,
                                   int dims, openai::encoding enc) {
  INFO("status " << res.status << " body " << res.body);
  REQUIRE(res.ok());
  REQUIRE(res.status == 200);
  openai::response_expectation expect;
  expect.inputs = inputs;
  expect.dimensions = dims;
  expect.encoding_format = enc;
  auto decoded = openai::decode_response(res.body, expect);
  if (!decoded)
    FAIL("decode error: " << render_error(decoded.error()));
  return std::move(*decoded);
}

int64_t token_sum(const std::vector<std::string>& texts) {
  int64_t sum = 0;
  for (const auto& t : texts)
    sum += static_cast<int64_t>(estimate_tokens(t));
  return sum;
}

} // namespace

TEST_CASE("mock answers float requests with the exact hash_embed vectors") {
  running_mock m;
  http_client client{m.port};
  std::vector<std::string> texts{"the cat sat on the mat", "hello world",
                                 "naïve café"};
  auto res = client.embed(embed_body(texts, 16));
  auto decoded = decode(res, texts.size(), 16, openai::encoding::float32);
  for (std::size_t i = 0; i < texts.size(); ++i)
    CHECK(decoded.data[i] == hash_embed(texts[i], 16));
  CHECK(decoded.model == "m");
  CHECK(decoded.usage.prompt_tokens == token_sum(texts));
  CHECK(decoded.usage.total_tokens == token_sum(texts));
  CHECK(res.header("content-type") == "application/json");
  CHECK(res.header("x-request-id").rfind("mock-", 0) == 0);
  auto doc = parse_json(res.body);
  REQUIRE(doc["data"][0]["embedding"].IsArray());
  CHECK(std::string{doc["object"].GetString()} == "list");
}

TEST_CASE("mock answers base64 requests with the exact hash_embed vectors") {
  running_mock m;
  http_client client{m.port};
  std::vector<std::string> texts{"alpha", "beta gamma", "delta"};
  auto res = client.embed(embed_body(texts, 64, true));
  auto doc = parse_json(res.body);
  REQUIRE_FALSE(doc.HasParseError());
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto& item = doc["data"][static_cast<rapidjson::SizeType>(i)];
    REQUIRE(item["embedding"].IsString());
    auto floats = openai::decode_base64_floats(item["embedding"].GetString());
    REQUIRE(floats);
    CHECK(*floats == hash_embed(texts[i], 64));
    CHECK(item["index"].GetInt() == static_cast<int>(i));
  }
  auto decoded = decode(res, texts.size(), 64, openai::encoding::base64);
  CHECK(decoded.data[1] == hash_embed("beta gamma", 64));
  CHECK(m.server.stats().base64_requests == 1);
  REQUIRE(client.embed(embed_body(texts, 64)).status == 200); // floats
  CHECK(m.server.stats().base64_requests == 1);
  CHECK(m.server.stats().embedding_requests == 2);
}

TEST_CASE("mock honours the default dimensions, the model option and paths") {
  SECTION("the built-in default is 256") {
    running_mock m;
    http_client client{m.port};
    auto res = client.embed(embed_body({"one string"}));
    auto decoded = decode(res, 1, 256, openai::encoding::float32);
    CHECK(decoded.data[0] == hash_embed("one string", 256));
  }
  SECTION("--dims-default, --model and the /embeddings alias") {
    mock_options opts;
    opts.dims_default = 12;
    opts.model = "mock-model";
    running_mock m{opts};
    http_client client{m.port};
    auto res = client.request(
        "POST", "/embeddings",
        embed_body({"a", "b"}, std::nullopt, false, "asked-model"));
    auto decoded = decode(res, 2, 12, openai::encoding::float32);
    CHECK(decoded.model == "mock-model");
    CHECK(decoded.data[1] == hash_embed("b", 12));
  }
}

TEST_CASE("mock keeps connections alive") {
  running_mock m;
  http_client client{m.port};
  for (int i = 0; i < 5; ++i) {
    auto res = client.embed(embed_body({"text " + std::to_string(i)}, 8));
    REQUIRE(res.status == 200);
    CHECK(res.keep_alive);
  }
  CHECK(client.connects() == 1);
  auto stats = m.server.stats();
  CHECK(stats.connections_accepted == 1);
  CHECK(stats.connections_open == 1);
  CHECK(stats.requests == 5);
  CHECK(stats.embedding_requests == 5);
  CHECK(stats.inputs == 5);
  CHECK(stats.status_count(200) == 5);
}

TEST_CASE("mock serves /stats and resets it") {
  running_mock m;
  http_client client{m.port};
  REQUIRE(client.embed(embed_body({"a", "b", "c"}, 8)).status == 200);
  REQUIRE(client.request("GET", "/nowhere").status == 404);
  auto res = client.request("GET", "/stats");
  REQUIRE(res.status == 200);
  auto doc = parse_json(res.body);
  REQUIRE_FALSE(doc.HasParseError());
  CHECK(doc["connections_accepted"].GetUint64() == 1);
  CHECK(doc["connections_open"].GetUint64() == 1);
  CHECK(doc["requests"].GetUint64() == 2);
  CHECK(doc["embedding_requests"].GetUint64() == 1);
  CHECK(doc["inputs"].GetUint64() == 3);
  CHECK(doc["base64_requests"].GetUint64() == 0);
  CHECK(doc["by_status"]["200"].GetUint64() == 1);
  CHECK(doc["by_status"]["404"].GetUint64() == 1);
  CHECK(doc["faults"].IsObject());
  CHECK(doc["faults"].MemberCount() == 0);
  CHECK(client.request("GET", "/stats/reset").status == 405);
  CHECK(client.request("POST", "/stats").status == 405);
  REQUIRE(client.request("POST", "/stats/reset").status == 200);
  auto after = m.server.stats();
  CHECK(after.connections_accepted == 0);
  CHECK(after.connections_open == 1); // a gauge, not reset
  CHECK(after.requests == 0);
  CHECK(after.by_status.empty());
  // The counters run again after the reset.
  REQUIRE(client.embed(embed_body({"x"}, 8)).status == 200);
  CHECK(m.server.stats().requests == 1);
  m.server.reset_stats();
  CHECK(m.server.stats().requests == 0);
}

TEST_CASE("mock embeds token arrays as their ids written out, counting the "
          "ids") {
  running_mock m;
  http_client client{m.port};
  auto res
      = client.embed(R"({"model":"m","input":[[17,4],[9]],"dimensions":8})");
  auto decoded = decode(res, 2, 8, openai::encoding::float32);
  CHECK(decoded.data[0] == hash_embed("17 4", 8));
  CHECK(decoded.data[1] == hash_embed("9", 8));
  CHECK(decoded.usage.prompt_tokens == 3);
  CHECK(decoded.usage.total_tokens == 3);
}

TEST_CASE("mock rejects bad requests with OpenAI-shaped errors") {
  mock_options opts;
  opts.max_body_bytes = 4096;
  running_mock m{opts};
  http_client client{m.port};
  SECTION("unknown path") {
    auto res = client.request("POST", "/v1/other", "{}");
    CHECK(res.status == 404);
    CHECK_THAT(error_message(res.body, "invalid_request_error"),
               Catch::Contains("/v1/other"));
  }
  SECTION("wrong method") {
    auto res = client.request("GET", "/v1/embeddings");
    CHECK(res.status == 405);
    CHECK(res.header("allow") == "POST");
    error_message(res.body, "invalid_request_error");
  }
  SECTION("malformed JSON") {
    auto res = client.embed("{\"model\":\"m\",\"input\":[");
    CHECK(res.status == 400);
    error_message(res.body, "invalid_request_error");
    CHECK(res.keep_alive);
  }
  SECTION("wrong types") {
    auto res = client.embed(R"({"model":"m","input":[true]})");
    CHECK(res.status == 400);
    error_message(res.body, "invalid_request_error");
    res = client.embed(R"({"model":"m","input":[1,"2"]})");
    CHECK(res.status == 400);
    error_message(res.body, "invalid_request_error");
  }
  SECTION("an empty text (white space alone is embedded)") {
    auto res = client.embed(embed_body({"ok", "   "}, 8));
    CHECK(res.status == 200);
    res = client.embed(embed_body({"ok", ""}));
    CHECK(res.status == 400);
    CHECK_THAT(error_message(res.body, "invalid_request_error"),
               Catch::Contains("1"));
    CHECK(error_field(res.body, "param") == "input");
  }
  SECTION("dimensions above the maximum") {
    auto res = client.embed(embed_body({"ok"}, 100000));
    CHECK(res.status == 400);
    error_message(res.body, "invalid_request_error");
    CHECK(error_field(res.body, "param") == "dimensions");
  }
  SECTION("a body over max-body-bytes gets 413, then the server closes") {
    auto res = client.embed(embed_body({std::string(8000, 'a')}));
    CHECK(res.status == 413);
    error_message(res.body, "invalid_request_error");
    CHECK_FALSE(res.keep_alive);
    CHECK(client.wait_for_close(3s));
  }
  SECTION("malformed HTTP gets 400, then the server closes") {
    auto res = client.raw("THIS IS NOT HTTP\r\n\r\n");
    CHECK(res.status == 400);
    error_message(res.body, "invalid_request_error");
    CHECK(client.wait_for_close(3s));
  }
  // Every error carries a request id, and the connection stays usable for
  // keep-alive errors.
  auto ok = client.embed(embed_body({"still fine"}, 8));
  CHECK(ok.status == 200);
}

TEST_CASE("mock reads bodies sent in pieces and honours 100-continue") {
  running_mock m;
  http_client client{m.port};
  auto body = embed_body({"split body"}, 8);
  auto head = "POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              "Content-Type: application/json\r\nContent-Length: "
      + std::to_string(body.size()) + "\r\n";
  SECTION("header and body in separate writes") {
    REQUIRE(client.send_raw(head + "\r\n" + body.substr(0, 10))
            == failure::none);
    auto res = client.raw(body.substr(10));
    auto decoded = decode(res, 1, 8, openai::encoding::float32);
    CHECK(decoded.data[0] == hash_embed("split body", 8));
  }
  SECTION("Expect: 100-continue") {
    auto interim = client.raw(head + "Expect: 100-continue\r\n\r\n");
    REQUIRE(interim.ok());
    CHECK(interim.status == 100);
    auto res = client.raw(body);
    auto decoded = decode(res, 1, 8, openai::encoding::float32);
    CHECK(decoded.data[0] == hash_embed("split body", 8));
  }
  // The connection stays usable.
  CHECK(client.embed(embed_body({"next"}, 8)).status == 200);
  CHECK(client.connects() == 1);
}

TEST_CASE("an outage switched on over HTTP fails every request until healed") {
  running_mock m;
  http_client client{m.port};
  REQUIRE(client.embed(embed_body({"a"}, 8)).status == 200);
  auto on = client.request("POST", "/outage", "503");
  REQUIRE(on.status == 200);
  CHECK(on.body == R"({"outage":"503"})");
  for (int i = 0; i < 3; ++i)
    CHECK(client.embed(embed_body({"b"}, 8)).status == 503);
  // A per-request fault header still wins.
  CHECK(client.embed(embed_body({"c"}, 8), {{"x-mock-fault", "none"}}).status
        == 200);
  CHECK(client.request("GET", "/outage").body == R"({"outage":"503"})");
  CHECK(client.request("POST", "/outage", "bogus").status == 400);
  CHECK(client.request("DELETE", "/outage").status == 405);
  REQUIRE(client.request("POST", "/outage", "none").status == 200);
  CHECK(client.embed(embed_body({"d"}, 8)).status == 200);
  // The in-process switch does the same.
  m.server.set_outage(mock::fault{mock::fault_kind::status, 500});
  CHECK(client.embed(embed_body({"e"}, 8)).status == 500);
  m.server.set_outage(mock::fault{});
  CHECK(client.embed(embed_body({"f"}, 8)).status == 200);
  CHECK(m.server.stats().fault_count("503") == 3);
  CHECK(m.server.stats().fault_count("500") == 1);
}

TEST_CASE("the latency switched over HTTP applies to every request until "
          "set back to the default") {
  running_mock m;
  http_client client{m.port};
  CHECK(client.request("GET", "/latency").body == R"({"latency":"default"})");
  auto set = client.request("POST", "/latency", "fixed:60");
  REQUIRE(set.status == 200);
  CHECK(set.body == R"({"latency":"fixed:60"})");
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(client.embed(embed_body({"slow"}, 8)).status == 200);
  CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds{60});
  CHECK(client.request("POST", "/latency", "lognormal:5:1").status == 400);
  CHECK(client.request("PUT", "/latency", "5").status == 405);
  REQUIRE(client.request("POST", "/latency", "default").status == 200);
  CHECK(client.request("GET", "/latency").body == R"({"latency":"default"})");
  // Tokens of the requests answered with vectors: their usage.
  CHECK(m.server.stats().tokens > 0);
}

TEST_CASE("mock answers OpenAI's max_tokens_per_request error over its "
          "token limit") {
  mock::mock_options opts;
  opts.max_tokens_per_request = 50;
  running_mock m{opts};
  http_client client{m.port};
  std::vector<std::string> texts(10,
                                 "some words that make about ten tokens ok");
  auto res = client.embed(embed_body(texts, 8));
  CHECK(res.status == 400);
  CHECK(error_field(res.body, "code") == "max_tokens_per_request");
  CHECK(error_message(res.body, "max_tokens_per_request")
            .find("tokens per request")
        != std::string::npos);
  texts.resize(2);
  CHECK(client.embed(embed_body(texts, 8)).status == 200);
}

TEST_CASE("mock rejects a request over the OpenAI input limit") {
  running_mock m;
  http_client client{m.port};
  std::vector<std::string> texts(2049, "t");
  auto res = client.embed(embed_body(texts, 8));
  CHECK(res.status == 400);
  error_message(res.body, "invalid_request_error");
  texts.pop_back();
  auto ok = client.embed(embed_body(texts, 8));
  CHECK(ok.status == 200);
  CHECK(m.server.stats().inputs == 2048);
}

TEST_CASE("the mock:400 marker fails the request naming the index") {
  running_mock m;
  http_client client{m.port};
  auto res = client.embed(embed_body({"a", "b", "c", "d [[mock:400]] e"}, 8));
  CHECK(res.status == 400);
  CHECK(error_message(res.body, "invalid_request_error")
        == "input[3] is rejected by the mock");
  CHECK(error_field(res.body, "param") == "input");
  // Without the bad input the same batch succeeds.
  CHECK(client.embed(embed_body({"a", "b", "c"}, 8)).status == 200);
}

TEST_CASE("mock delays responses by the requested latency") {
  SECTION("x-mock-latency-ms header") {
    running_mock m;
    http_client client{m.port};
    REQUIRE(client.embed(embed_body({"warm-up"}, 8)).status == 200);
    auto t0 = steady_clock::now();
    auto res
        = client.embed(embed_body({"slow"}, 8), {{"x-mock-latency-ms", "150"}});
    auto elapsed = steady_clock::now() - t0;
    CHECK(res.status == 200);
    CHECK(elapsed >= 150ms);
    CHECK(elapsed < 5s);
    auto bad = client.embed(embed_body({"slow"}, 8),
                            {{"x-mock-latency-ms", "soon"}});
    CHECK(bad.status == 400);
  }
  SECTION("[[mock:delay-ms=N]] in an input") {
    running_mock m;
    http_client client{m.port};
    REQUIRE(client.embed(embed_body({"warm-up"}, 8)).status == 200);
    auto t0 = steady_clock::now();
    auto res = client.embed(embed_body({"a", "b [[mock:delay-ms=150]]"}, 8));
    auto elapsed = steady_clock::now() - t0;
    CHECK(res.status == 200);
    CHECK(elapsed >= 150ms);
    CHECK(elapsed < 5s);
    for (const char* bad : {"x [[mock:delay-ms=soon]]",
                            "x [[mock:delay-ms=-1]]", "x [[mock:delay-ms=5"}) {
      INFO(bad);
      auto r = client.embed(embed_body({"fine", bad}, 8));
      CHECK(r.status == 400);
      CHECK(
          error_message(r.body, "invalid_request_error").rfind("input[1]: ", 0)
          == 0);
    }
  }
  SECTION("--latency-ms") {
    mock_options opts;
    opts.latency.kind = mock::latency_model::shape::fixed;
    opts.latency.fixed_ms = 100;
    running_mock m{opts};
    http_client client{m.port};
    auto t0 = steady_clock::now();
    REQUIRE(client.embed(embed_body({"slow"}, 8)).status == 200);
    CHECK(steady_clock::now() - t0 >= 100ms);
    // The header overrides the model, also downwards.
    t0 = steady_clock::now();
    REQUIRE(client.embed(embed_body({"fast"}, 8), {{"x-mock-latency-ms", "0"}})
                .status
            == 200);
    CHECK(steady_clock::now() - t0 < 100ms);
  }
}

TEST_CASE("the lognormal latency model has the configured median and p99") {
  mock_options opts;
  opts.latency.kind = mock::latency_model::shape::lognormal;
  opts.latency.median_ms = 50;
  opts.latency.p99_ms = 200;
  opts.seed = 42;
  auto draw = [&opts](std::size_t n) {
    mock::mock_handler handler{opts};
    std::vector<double> ms;
    auto body = embed_body({"x"}, 4);
    mock::mock_reply reply;
    for (std::size_t i = 0; i < n; ++i) {
      mock::mock_request req{"POST", "/v1/embeddings", body, {}, {}};
      handler.handle(req, reply);
      REQUIRE(reply.status == 200);
      ms.push_back(
          std::chrono::duration<double, std::milli>(reply.delay).count());
    }
    return ms;
  };
  auto ms = draw(20000);
  CHECK(ms == draw(20000)); // seeded: reproducible
  std::sort(ms.begin(), ms.end());
  CHECK(ms[ms.size() / 2] == Approx(50).epsilon(0.05));
  CHECK(ms[ms.size() * 99 / 100] == Approx(200).epsilon(0.1));
}

TEST_CASE("mock serves HTTPS with the given certificate") {
  mock_options opts;
  opts.tls_cert_file = tls_file("server.pem");
  opts.tls_key_file = tls_file("server.key");
  running_mock m{opts};
  CHECK(m.server.base_url()
        == "https://127.0.0.1:" + std::to_string(m.port) + "/v1");
  SECTION("a client trusting the test CA") {
    http_client client{m.port, tls_options{tls_file("ca.pem"), "localhost"}};
    for (int i = 0; i < 3; ++i) {
      auto res = client.embed(embed_body({"secure", "text"}, 8, true));
      auto decoded = decode(res, 2, 8, openai::encoding::base64);
      CHECK(decoded.data[0] == hash_embed("secure", 8));
    }
    CHECK(client.connects() == 1);
    auto res = client.embed(embed_body({"x"}, 8), {{"x-mock-fault", "503"}});
    CHECK(res.status == 503);
  }
  SECTION("a client trusting another CA fails the handshake") {
    http_client client{m.port, tls_options{tls_file("other.pem"), "localhost"}};
    auto res = client.embed(embed_body({"x"}, 8));
    CHECK(res.error == failure::tls);
  }
  SECTION("a client expecting another host name fails the handshake") {
    http_client client{m.port, tls_options{tls_file("ca.pem"), "example.com"}};
    auto res = client.embed(embed_body({"x"}, 8));
    CHECK(res.error == failure::tls);
  }
}

TEST_CASE("mock serves 1000 concurrent connections") {
  mock_options opts;
  opts.threads = 2;
  running_mock m{opts};
  auto statuses = concurrent_requests(m.port, 1000, embed_body({"many"}, 8));
  CHECK(std::count(statuses.begin(), statuses.end(), 200) == 1000);
  auto stats = m.server.stats();
  CHECK(stats.connections_accepted == 1000);
  CHECK(stats.requests == 1000);
  CHECK(stats.status_count(200) == 1000);
}

TEST_CASE("stop closes idle, busy and hanging connections") {
  mock::mock_server server{mock_options{}};
  auto port = server.start();
  REQUIRE(port != 0);
  std::vector<std::unique_ptr<http_client>> hanging;
  std::vector<std::unique_ptr<http_client>> idle;
  std::vector<std::unique_ptr<http_client>> slow;
  for (int i = 0; i < 20; ++i) {
    hanging.push_back(std::make_unique<http_client>(port));
    REQUIRE(hanging.back()->send_only("POST", "/v1/embeddings",
                                      embed_body({"h"}, 8),
                                      {{"x-mock-fault", "hang"}})
            == failure::none);
    idle.push_back(std::make_unique<http_client>(port));
    REQUIRE(idle.back()->connect() == failure::none);
    slow.push_back(std::make_unique<http_client>(port));
    REQUIRE(slow.back()->send_only("POST", "/v1/embeddings",
                                   embed_body({"s"}, 8),
                                   {{"x-mock-latency-ms", "60000"}})
            == failure::none);
  }
  // A request on a fresh connection proves the server has processed the
  // earlier ones (one I/O thread handles events in order).
  http_client probe{port};
  REQUIRE(probe.embed(embed_body({"p"}, 8)).status == 200);
  auto stats = server.stats();
  CHECK(stats.connections_open == 61);
  CHECK(stats.fault_count("hang") == 20);
  auto t0 = steady_clock::now();
  server.stop();
  CHECK(steady_clock::now() - t0 < 2s);
  CHECK(server.stats().connections_open == 0);
  for (auto* group : {&hanging, &idle, &slow})
    for (auto& c : *group)
      CHECK(c->wait_for_close(2s));
  // Nothing listens any more.
  http_client late{port};
  CHECK(late.connect(500ms) == failure::connect);
  server.stop(); // idempotent
}

TEST_CASE("mock start reports failures") {
  running_mock first;
  SECTION("port in use") {
    mock_options opts;
    opts.port = first.port;
    mock::mock_server second{opts};
    CHECK(second.start() == 0);
    CHECK_THAT(second.error(), Catch::Contains("bind"));
  }
  SECTION("missing TLS files") {
    mock_options opts;
    opts.tls_cert_file = tls_file("does-not-exist.pem");
    opts.tls_key_file = tls_file("server.key");
    mock::mock_server server{opts};
    CHECK(server.start() == 0);
    CHECK_THAT(server.error(), Catch::Contains("does-not-exist.pem"));
  }
  SECTION("invalid options") {
    mock_options opts;
    opts.threads = 0;
    mock::mock_server server{opts};
    CHECK(server.start() == 0);
    CHECK_THAT(server.error(), Catch::Contains("threads"));
  }
  SECTION("a stopped server does not restart") {
    mock::mock_server server{mock_options{}};
    REQUIRE(server.start() != 0);
    CHECK(server.start() == server.port()); // already running
    server.stop();
    CHECK(server.start() == 0);
    CHECK_FALSE(server.error().empty());
  }
  CHECK(first.server.base_url()
        == "http://127.0.0.1:" + std::to_string(first.port) + "/v1");
}
