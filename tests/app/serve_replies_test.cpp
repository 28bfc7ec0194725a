#include "embedrt/protocol/errc.hpp"
#include "serve/gateway.hpp"
#include "serve/replies.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

using namespace embedrt;
using namespace embedrt::serve;
using std::chrono::milliseconds;

namespace {

std::string header(const front_reply& r, const std::string& name) {
  for (const auto& [k, v] : r.headers)
    if (k == name)
      return v;
  return {};
}

} // namespace

TEST_CASE("serve: every runtime error maps to its HTTP status") {
  struct row {
    errc code;
    int status;
    const char* wire_code;
    bool retry_after;
  };
  for (const auto& [code, status, wire_code, retry_after] : std::vector<row>{
           {errc::invalid_input, 400, "invalid_input", false},
           {errc::overloaded, 429, "overloaded", true},
           {errc::rate_limited, 429, "rate_limited", true},
           {errc::quota_exceeded, 429, "insufficient_quota", false},
           {errc::breaker_open, 503, "breaker_open", true},
           {errc::upstream_down, 503, "upstream_down", true},
           {errc::cancelled, 503, "cancelled", true},
           {errc::node_down, 503, "node_down", true},
           {errc::deadline_exceeded, 504, "deadline_exceeded", false},
           {errc::auth_failed, 502, "upstream_auth_failed", false},
           {errc::upstream_error, 502, "upstream_error", false},
           {errc::invalid_response, 502, "invalid_response", false},
           {errc::connection_failed, 502, "connection_failed", false},
           {errc::tls_failed, 502, "tls_failed", false},
       }) {
    INFO(to_string(code));
    auto r = reply_for_error(make_error(code, "what happened"));
    CHECK(r.status == status);
    auto e = openai::decode_error(r.body);
    REQUIRE(e);
    CHECK(e->code == wire_code);
    CHECK(e->message == "what happened");
    CHECK_FALSE(e->type.empty());
    CHECK(header(r, "retry-after").empty() == !retry_after);
  }
}

TEST_CASE("serve: invalid input names its parameter, as OpenAI does") {
  struct row {
    const char* detail;
    const char* param;
  };
  for (const auto& [detail, param] : std::vector<row>{
           {"input[3] is empty", "input"},
           {"too many inputs: 2049 > 2048 per request", "input"},
           {"no inputs: at least one text is required", "input"},
           {"inputs 2, 5 rejected by the upstream: bad", "input"},
           {"token-array inputs are not supported by a tei upstream: send "
            "the text",
            "input"},
           {"'input' must not be an empty array", "input"},
           {"'dimensions' must be a positive integer", "dimensions"},
           {"'model' is required", "model"},
           {"api answered 400: dimensions too large", ""},
       }) {
    INFO(detail);
    auto r = reply_for_error(make_error(errc::invalid_input, detail, 400));
    CHECK(r.status == 400);
    auto e = openai::decode_error(r.body);
    REQUIRE(e);
    CHECK(e->type == "invalid_request_error");
    CHECK(e->code == "invalid_input");
    CHECK(e->param == param);
  }
}

TEST_CASE("serve: an unknown model is OpenAI's 404 model_not_found") {
  auto r = reply_for_error(
      make_error(errc::invalid_input,
                 "The model 'x' does not exist: no upstream serves it", 404));
  CHECK(r.status == 404);
  auto e = openai::decode_error(r.body);
  REQUIRE(e);
  CHECK(e->type == "invalid_request_error");
  CHECK(e->code == "model_not_found");
  CHECK(e->param == "model");
}

TEST_CASE("serve: Retry-After rounds the runtime's hint up to seconds") {
  auto r = reply_for_error(
      make_error(errc::breaker_open, "open", 0, milliseconds{2300}));
  CHECK(r.status == 503);
  CHECK(header(r, "retry-after") == "3");
  CHECK(header(r, "retry-after-ms") == "2300");
  r = reply_for_error(make_error(errc::overloaded, "full", 0, milliseconds{0}));
  CHECK(header(r, "retry-after") == "1");
  CHECK(header(r, "retry-after-ms").empty());
  r = reply_for_error(
      make_error(errc::rate_limited, "slow down", 0, milliseconds{20}));
  CHECK(header(r, "retry-after") == "1");
  CHECK(header(r, "retry-after-ms") == "20");
}

TEST_CASE("serve: a result becomes an OpenAI embeddings response") {
  embed_result res;
  res.model = "m";
  res.embeddings = {{0.5f, -0.25f}, {1.0f, 0.0f}};
  res.usage.prompt_tokens = 3;
  res.usage.total_tokens = 3;
  res.request_id = "req-1";
  for (auto enc : {openai::encoding::float32, openai::encoding::base64}) {
    auto copy = res;
    auto r = reply_for_result(std::move(copy), enc);
    CHECK(r.status == 200);
    CHECK(header(r, "x-request-id") == "req-1");
    openai::response_expectation expect;
    expect.inputs = 2;
    expect.encoding_format = enc;
    auto decoded = openai::decode_response(r.body, expect);
    REQUIRE(decoded);
    CHECK(decoded->data == res.embeddings);
    CHECK(decoded->model == "m");
    CHECK(decoded->usage.total_tokens == 3);
  }
}

TEST_CASE("serve: token comparison") {
  CHECK(token_matches("secret", "secret"));
  CHECK_FALSE(token_matches("secreT", "secret"));
  CHECK_FALSE(token_matches("secre", "secret"));
  CHECK_FALSE(token_matches("secrets", "secret"));
  CHECK_FALSE(token_matches("", "secret"));
  CHECK_FALSE(token_matches("", ""));
  CHECK_FALSE(token_matches("secretsecret", "secret"));
}

TEST_CASE("serve: client messages leave out upstream addresses and echoed "
          "bodies") {
  CHECK(client_message("openai: cannot connect to api.openai.com:443: "
                       "Connection refused")
        == "openai: cannot connect to [upstream]: Connection refused");
  CHECK(client_message("timed out after 200 ms reading (10.0.0.7:8080)")
        == "timed out after 200 ms reading ([upstream])");
  CHECK(client_message("a closed the connection ([::1]:9000)")
        == "a closed the connection ([upstream])");
  CHECK(client_message("see https://host.example:8443/v1/embeddings, then")
        == "see [upstream], then");
  CHECK(
      client_message(
          R"(tei answered 422: Failed to deserialize {"inputs":["secret text"],"x":{"y":1}} at column 3)")
      == "tei answered 422: Failed to deserialize [body omitted] at column 3");
  CHECK(client_message(R"(cut short: ["a", "b)")
        == "cut short: [body omitted]");
  // What is not an address or a body stays.
  for (const char* kept :
       {"input 3 rejected by the upstream: [[mock:400]] is not allowed",
        "deadline of 200 ms exceeded at 12:30", "'dimensions' must be > 0",
        "error: 500", "{not json}"})
    CHECK(client_message(kept) == kept);
  auto longer = client_message(std::string(2000, 'x'));
  CHECK(longer.size() == max_client_message);
  CHECK(longer.substr(longer.size() - 3) == "...");
  // A cut never splits a UTF-8 character.
  auto utf8 = client_message(std::string(1, 'a') + [] {
    std::string s;
    for (int i = 0; i < 400; ++i)
      s += "\xc3\xa9";
    return s;
  }());
  CHECK(openai::is_valid_utf8(utf8));
}

TEST_CASE("serve: upstream_detail full passes the runtime's detail through") {
  auto err = make_error(errc::connection_failed,
                        "openai: cannot connect to 10.1.2.3:443: refused");
  CHECK(openai::decode_error(reply_for_error(err).body)->message
        == "openai: cannot connect to [upstream]: refused");
  CHECK(openai::decode_error(reply_for_error(err, upstream_detail::full).body)
            ->message
        == "openai: cannot connect to 10.1.2.3:443: refused");
}
