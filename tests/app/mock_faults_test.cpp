#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/hash_embedder.hpp"
#include "embedrt/protocol/openai.hpp"
#include "mock/mock_handler.hpp"
#include "mock/mock_server.hpp"
#include "mock_test_client.hpp"
#include "mock_test_util.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace embedrt;
using namespace embedrt::test;
using embedrt::mock::mock_options;

namespace {

http_response with_fault(http_client& client, const std::string& kind,
                         const std::string& body
                         = embed_body({"one", "two", "three"}, 8)) {
  return client.embed(body, {{"x-mock-fault", kind}});
}

/// Expected hits of a rate over n draws, with a tolerance of 5 standard
/// deviations (a false failure has a probability below 1e-6).
void check_rate(uint64_t hits, std::size_t n, double p) {
  auto mean = static_cast<double>(n) * p;
  auto sd = std::sqrt(static_cast<double>(n) * p * (1.0 - p));
  INFO("hits " << hits << " expected " << mean << " +- " << 5 * sd);
  CHECK(std::fabs(static_cast<double>(hits) - mean) <= 5 * sd + 1);
}

} // namespace

TEST_CASE("injected status errors are OpenAI-shaped") {
  running_mock m;
  http_client client{m.port};
  auto r500 = with_fault(client, "500");
  CHECK(r500.status == 500);
  error_message(r500.body, "server_error");
  auto r503 = with_fault(client, "503");
  CHECK(r503.status == 503);
  error_message(r503.body, "server_error");
  auto r401 = with_fault(client, "401");
  CHECK(r401.status == 401);
  error_message(r401.body, "invalid_request_error");
  CHECK(error_field(r401.body, "code") == "invalid_api_key");
  CHECK(client.connects() == 1); // errors keep the connection alive
  auto stats = m.server.stats();
  CHECK(stats.fault_count("500") == 1);
  CHECK(stats.fault_count("503") == 1);
  CHECK(stats.status_count(503) == 1);
}

TEST_CASE("injected 429 carries retry-after and retry-after-ms") {
  SECTION("default retry-after-ms") {
    running_mock m;
    http_client client{m.port};
    auto res = with_fault(client, "429");
    CHECK(res.status == 429);
    error_message(res.body, "requests");
    CHECK(error_field(res.body, "code") == "rate_limit_exceeded");
    CHECK(res.header("retry-after") == "1");
    CHECK(res.header("retry-after-ms") == "20");
  }
  SECTION("--retry-after-ms 1500") {
    mock_options opts;
    opts.retry_after_ms = 1500;
    running_mock m{opts};
    http_client client{m.port};
    auto res = with_fault(client, "429");
    CHECK(res.status == 429);
    CHECK(res.header("retry-after") == "2");
    CHECK(res.header("retry-after-ms") == "1500");
  }
}

TEST_CASE("injected quota errors are 429 insufficient_quota") {
  running_mock m;
  http_client client{m.port};
  auto res = with_fault(client, "quota");
  CHECK(res.status == 429);
  error_message(res.body, "insufficient_quota");
  CHECK(error_field(res.body, "code") == "insufficient_quota");
  CHECK_FALSE(res.has_header("retry-after"));
  CHECK_FALSE(res.has_header("retry-after-ms"));
  CHECK(m.server.stats().fault_count("quota") == 1);
}

TEST_CASE("a hang reads the request and never answers") {
  running_mock m;
  http_client client{m.port};
  // Bounded by a short client timeout.
  auto res
      = client.embed(embed_body({"x"}, 8), {{"x-mock-fault", "hang"}}, 300ms);
  CHECK(res.error == failure::timeout);
  CHECK(res.status == 0);
  CHECK(m.server.stats().fault_count("hang") == 1);
  CHECK(m.server.stats().status_count(200) == 0);
  // The server is not stuck: a new connection is served.
  http_client other{m.port};
  CHECK(other.embed(embed_body({"x"}, 8)).status == 200);
}

TEST_CASE("a reset aborts the connection mid-response") {
  running_mock m;
  http_client client{m.port};
  auto res = with_fault(client, "reset");
  INFO("error " << to_string(res.error) << ": " << res.error_message);
  CHECK_FALSE(res.ok());
  CHECK((res.error == failure::reset || res.error == failure::eof));
  CHECK(res.status == 0);
  CHECK(m.server.stats().fault_count("reset") == 1);
  // The next request uses a new connection and succeeds.
  CHECK(client.embed(embed_body({"after"}, 8)).status == 200);
  CHECK(client.connects() == 2);
}

TEST_CASE("a malformed response is a 200 whose body is not JSON") {
  running_mock m;
  http_client client{m.port};
  auto res = with_fault(client, "malformed");
  CHECK(res.status == 200);
  CHECK(parse_json(res.body).HasParseError());
  openai::response_expectation expect;
  expect.inputs = 3;
  auto decoded = openai::decode_response(res.body, expect);
  REQUIRE_FALSE(decoded);
  CHECK(error_code(decoded.error()) == errc::invalid_response);
  CHECK(m.server.stats().fault_count("malformed") == 1);
}

TEST_CASE("baddims returns a vector of another dimension") {
  running_mock m;
  http_client client{m.port};
  SECTION("several inputs: inconsistent dimensions") {
    auto res = with_fault(client, "baddims");
    REQUIRE(res.status == 200);
    auto doc = parse_json(res.body);
    REQUIRE_FALSE(doc.HasParseError());
    const auto& data = doc["data"];
    CHECK(data[0]["embedding"].Size() == 8);
    CHECK(data[1]["embedding"].Size() == 8);
    CHECK(data[2]["embedding"].Size() != 8);
    openai::response_expectation expect;
    expect.inputs = 3;
    auto decoded = openai::decode_response(res.body, expect);
    REQUIRE_FALSE(decoded);
    CHECK(error_code(decoded.error()) == errc::invalid_response);
  }
  SECTION("one input: not the requested dimension") {
    auto res = with_fault(client, "baddims", embed_body({"one"}, 8, true));
    REQUIRE(res.status == 200);
    openai::response_expectation expect;
    expect.inputs = 1;
    expect.dimensions = 8;
    expect.encoding_format = openai::encoding::base64;
    auto decoded = openai::decode_response(res.body, expect);
    REQUIRE_FALSE(decoded);
    CHECK(error_code(decoded.error()) == errc::invalid_response);
  }
}

TEST_CASE("nan puts one NaN into the vectors") {
  running_mock m;
  http_client client{m.port};
  openai::response_expectation expect;
  expect.inputs = 3;
  expect.dimensions = 8;
  SECTION("float encoding: the JSON literal NaN") {
    auto res = with_fault(client, "nan");
    REQUIRE(res.status == 200);
    CHECK(res.body.find("NaN") != std::string::npos);
    auto decoded = openai::decode_response(res.body, expect);
    REQUIRE_FALSE(decoded);
    CHECK(error_code(decoded.error()) == errc::invalid_response);
  }
  SECTION("base64 encoding: the NaN bit pattern") {
    auto res = with_fault(client, "nan",
                          embed_body({"one", "two", "three"}, 8, true));
    REQUIRE(res.status == 200);
    auto doc = parse_json(res.body);
    REQUIRE_FALSE(doc.HasParseError());
    int nans = 0;
    for (rapidjson::SizeType i = 0; i < 3; ++i) {
      auto v = openai::decode_base64_floats(
          doc["data"][i]["embedding"].GetString());
      REQUIRE(v);
      REQUIRE(v->size() == 8);
      for (float x : *v)
        nans += std::isnan(x) ? 1 : 0;
    }
    CHECK(nans == 1);
    expect.encoding_format = openai::encoding::base64;
    auto decoded = openai::decode_response(res.body, expect);
    REQUIRE_FALSE(decoded);
    CHECK(error_code(decoded.error()) == errc::invalid_response);
  }
  CHECK(m.server.stats().fault_count("nan") == 1);
}

TEST_CASE("close answers normally, then closes the connection") {
  running_mock m;
  http_client client{m.port};
  auto res = with_fault(client, "close", embed_body({"bye"}, 8));
  REQUIRE(res.status == 200);
  CHECK_FALSE(res.keep_alive);
  CHECK(res.header("connection") == "close");
  openai::response_expectation expect;
  expect.inputs = 1;
  expect.dimensions = 8;
  auto decoded = openai::decode_response(res.body, expect);
  REQUIRE(decoded);
  CHECK(decoded->data[0] == hash_embed("bye", 8));
  CHECK(client.wait_for_close(3s));
  CHECK(m.server.stats().fault_count("close") == 1);
}

TEST_CASE("an unknown x-mock-fault is a 400") {
  running_mock m;
  http_client client{m.port};
  for (const char* kind : {"explode", "200", "600", ""}) {
    auto res = with_fault(client, kind);
    CHECK(res.status == 400);
    error_message(res.body, "invalid_request_error");
  }
}

TEST_CASE("rate-based faults hit with their rates, reproducibly") {
  mock_options opts;
  opts.seed = 7;
  opts.faults = *mock::parse_fault_spec(
                     "500:0.1,429:0.05,malformed:0.02,baddims:0.02,close:0.03")
                     .value;
  running_mock m{opts};
  http_client client{m.port};
  constexpr std::size_t n = 1000;
  std::map<std::string, uint64_t> seen;
  std::string sequence;
  for (std::size_t i = 0; i < n; ++i) {
    auto res = client.embed(embed_body({"a", "b"}, 8));
    REQUIRE(res.ok());
    std::string kind;
    if (res.status == 500) {
      kind = "500";
    } else if (res.status == 429) {
      kind = "429";
    } else if (res.status == 200 && !res.keep_alive) {
      kind = "close";
    } else if (res.status == 200 && parse_json(res.body).HasParseError()) {
      kind = "malformed";
    } else if (res.status == 200) {
      auto doc = parse_json(res.body);
      if (doc["data"][1]["embedding"].Size() != 8)
        kind = "baddims";
    } else {
      FAIL("unexpected status " << res.status);
    }
    if (!kind.empty())
      ++seen[kind];
    sequence += kind.empty() ? "." : kind.substr(0, 1);
  }
  check_rate(seen["500"], n, 0.1);
  check_rate(seen["429"], n, 0.05);
  check_rate(seen["malformed"], n, 0.02);
  check_rate(seen["baddims"], n, 0.02);
  check_rate(seen["close"], n, 0.03);
  // The server counted exactly what the client saw.
  auto stats = m.server.stats();
  for (const auto& [kind, hits] : seen)
    CHECK(stats.fault_count(kind) == hits);
  CHECK(stats.requests == n);
  CHECK(client.connects() == static_cast<int>(seen["close"]) + 1);
  // Same seed, same sequence.
  running_mock again{opts};
  http_client client2{again.port};
  std::string sequence2;
  for (std::size_t i = 0; i < 100; ++i) {
    auto res = client2.embed(embed_body({"a", "b"}, 8));
    REQUIRE(res.ok());
    std::string kind = res.status == 500                           ? "5"
        : res.status == 429                                        ? "4"
        : !res.keep_alive                                          ? "c"
        : parse_json(res.body).HasParseError()                     ? "m"
        : parse_json(res.body)["data"][1]["embedding"].Size() != 8 ? "b"
                                                                   : ".";
    sequence2 += kind;
  }
  CHECK(sequence2 == sequence.substr(0, 100));
}

TEST_CASE("rate-based hang, reset and nan faults hit with their rates") {
  // Through the handler directly (a hang over a socket would need a
  // timeout per request); the server turns these replies into I/O as the
  // per-kind tests above show.
  mock_options opts;
  opts.seed = 11;
  opts.faults = *mock::parse_fault_spec(
                     "hang:0.02,reset:0.02,nan:0.005,quota:0.01,503:0.05")
                     .value;
  mock::mock_handler handler{opts};
  constexpr std::size_t n = 20000;
  auto body = embed_body({"a"}, 4);
  mock::mock_reply reply;
  std::map<std::string, uint64_t> seen;
  for (std::size_t i = 0; i < n; ++i) {
    handler.handle({"POST", "/v1/embeddings", body, {}, {}}, reply);
    if (reply.what == mock::mock_reply::action::hang)
      ++seen["hang"];
    else if (reply.what == mock::mock_reply::action::reset)
      ++seen["reset"];
    else if (reply.status == 503)
      ++seen["503"];
    else if (reply.status == 429)
      ++seen["quota"];
    else if (reply.body.find("NaN") != std::string::npos)
      ++seen["nan"];
  }
  check_rate(seen["hang"], n, 0.02);
  check_rate(seen["reset"], n, 0.02);
  check_rate(seen["nan"], n, 0.005);
  check_rate(seen["quota"], n, 0.01);
  check_rate(seen["503"], n, 0.05);
  auto stats = handler.counters().snapshot();
  for (const auto& [kind, hits] : seen)
    CHECK(stats.fault_count(kind) == hits);
  // hang and reset send no status.
  CHECK(stats.status_count(200)
        == n - seen["hang"] - seen["reset"] - seen["503"] - seen["quota"]);
}
