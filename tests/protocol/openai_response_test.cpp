#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/openai.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

using namespace embedrt;
using namespace embedrt::openai;
using namespace std::string_literals;

namespace {

response_expectation expect(std::size_t inputs,
                            std::optional<int32_t> dims = std::nullopt,
                            encoding enc = encoding::float32) {
  response_expectation e;
  e.inputs = inputs;
  e.dimensions = dims;
  e.encoding_format = enc;
  return e;
}

std::string rejection(std::string_view body, const response_expectation& e) {
  auto res = decode_response(body, e);
  REQUIRE_FALSE(res);
  CHECK(error_code(res.error()) == errc::invalid_response);
  return error_detail(res.error());
}

// Wraps data items into a response body.
std::string body_with(const std::string& items) {
  return R"({"object":"list","data":[)" + items
      + R"(],"model":"m","usage":{"prompt_tokens":3,"total_tokens":3}})";
}

std::string b64(std::vector<float> v) {
  return encode_base64_floats(v);
}

bool same_bits(const std::vector<std::vector<float>>& a,
               const std::vector<std::vector<float>>& b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].size() != b[i].size()
        || std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float))
            != 0)
      return false;
  return true;
}

// Values that stress the shortest float formatting and base64 padding.
embeddings_response sample_response() {
  embeddings_response resp;
  resp.model = "text-embedding-3-small";
  resp.data = {
      {0.1f, -0.2f, 0.3f, 1e-8f, -3.4028235e38f, 1.17549435e-38f},
      {1.0f, 0.0f, -0.0f, 123456.789f, 1.4e-45f, 0.33333334f},
      {std::nextafter(1.0f, 2.0f), -1.0f / 3.0f, 2.5e-3f, 65504.0f, 7.0f,
       -1e10f},
  };
  resp.usage.prompt_tokens = 12;
  resp.usage.total_tokens = 12;
  return resp;
}

} // namespace

TEST_CASE("encoding names", "[openai]") {
  CHECK(std::string{to_string(encoding::float32)} == "float");
  CHECK(std::string{to_string(encoding::base64)} == "base64");
}

TEST_CASE("response round trip preserves every float bit",
          "[openai][response]") {
  auto resp = sample_response();
  for (auto enc : {encoding::float32, encoding::base64}) {
    INFO(to_string(enc));
    auto body = encode_response(resp, enc);
    auto back = decode_response(body, expect(3, 6, enc));
    REQUIRE(back);
    CHECK(back->model == resp.model);
    CHECK(back->usage.prompt_tokens == 12);
    CHECK(back->usage.total_tokens == 12);
    CHECK(same_bits(back->data, resp.data));
  }
}

TEST_CASE("response_writer's pieces are encode_response's body",
          "[openai][response]") {
  auto resp = sample_response();
  embeddings_response empty;
  empty.model = "m";
  for (auto enc : {encoding::float32, encoding::base64}) {
    for (const auto& r : {resp, empty}) {
      // target 1: one vector per piece; 64: two or more; huge: all at once.
      for (std::size_t target :
           {std::size_t{1}, std::size_t{64}, std::size_t{1} << 20}) {
        INFO(to_string(enc)
             << ", " << r.data.size() << " vectors, target " << target);
        response_writer w{r, enc};
        std::string body;
        std::size_t pieces = 0;
        for (;;) {
          auto before = body.size();
          if (!w.next(body, target))
            break;
          CHECK(body.size() > before);
          ++pieces;
        }
        CHECK(body == encode_response(r, enc));
        CHECK_FALSE(w.next(body, target));
        if (target == 1)
          CHECK(pieces == std::max<std::size_t>(r.data.size(), 1));
        if (target == std::size_t{1} << 20)
          CHECK(pieces == 1);
      }
    }
  }
}

TEST_CASE("encode_response writes the OpenAI shape", "[openai][response]") {
  embeddings_response resp;
  resp.model = "m";
  resp.data = {{0.5f, -1.0f}};
  resp.usage = {2, 2};
  CHECK(encode_response(resp, encoding::float32)
        == R"({"object":"list","data":[{"object":"embedding","index":0,)"
           R"("embedding":[0.5,-1]}],"model":"m","usage":{"prompt_tokens":2,)"
           R"("total_tokens":2}})");
  // 0.5f = 00 00 00 3F, -1.0f = 00 00 80 BF (little-endian).
  CHECK(encode_response(resp, encoding::base64)
        == R"({"object":"list","data":[{"object":"embedding","index":0,)"
           R"("embedding":"AAAAPwAAgL8="}],"model":"m","usage":)"
           R"({"prompt_tokens":2,"total_tokens":2}})");
  // JSON has no NaN: a non-finite value is written as null, which the
  // decoder rejects.
  resp.data = {{std::numeric_limits<float>::quiet_NaN()}};
  auto body = encode_response(resp, encoding::float32);
  CHECK(body.find("[null]") != std::string::npos);
  CHECK(rejection(body, expect(1)) == "data[0].embedding[0] is not a number");
}

TEST_CASE("a base64 request accepts a float response", "[openai][response]") {
  auto resp = sample_response();
  auto back = decode_response(encode_response(resp, encoding::float32),
                              expect(3, std::nullopt, encoding::base64));
  REQUIRE(back);
  CHECK(same_bits(back->data, resp.data));
}

TEST_CASE("a float request rejects a base64 response", "[openai][response]") {
  auto body = encode_response(sample_response(), encoding::base64);
  CHECK(rejection(body, expect(3))
        == "data[0].embedding is a base64 string but float was requested");
}

TEST_CASE("decode_response orders vectors by index", "[openai][response]") {
  auto body = body_with(R"({"index":2,"embedding":[3,3]},)"
                        R"({"embedding":[1,1],"index":0,"object":"embedding"},)"
                        R"({"index":1,"extra":{"a":[1,{"b":null}]},)"
                        R"("embedding":[2,2]})");
  auto back = decode_response(body, expect(3, 2));
  REQUIRE(back);
  REQUIRE(back->data.size() == 3);
  CHECK(back->data[0] == std::vector<float>{1, 1});
  CHECK(back->data[1] == std::vector<float>{2, 2});
  CHECK(back->data[2] == std::vector<float>{3, 3});
  CHECK(back->model == "m");
  CHECK(back->usage.prompt_tokens == 3);
}

TEST_CASE("decode_response tolerates absent optional members",
          "[openai][response]") {
  auto back = decode_response(R"({"data":[{"index":0,"embedding":[1e-50,)"
                              R"(2.5E+2,-0]}],"model":null,"usage":null})",
                              expect(1));
  REQUIRE(back);
  CHECK(back->model.empty());
  CHECK(back->usage.total_tokens == 0);
  REQUIRE(back->data.size() == 1);
  CHECK(back->data[0][0] == 0.0f); // underflow reads as zero
  CHECK(back->data[0][1] == 250.0f);
  CHECK(std::signbit(back->data[0][2]));
  auto empty = decode_response(R"({"data":[]})", expect(0));
  REQUIRE(empty);
  CHECK(empty->data.empty());
}

TEST_CASE("decode_response rejects each failure with its own detail",
          "[openai][response]") {
  auto e2 = expect(2);
  auto ok0 = R"({"index":0,"embedding":[1,2]})"s;
  auto ok1 = R"({"index":1,"embedding":[3,4]})"s;
  SECTION("malformed JSON") {
    CHECK(rejection(R"({"data":[)", e2).rfind("malformed JSON at offset 9: ", 0)
          == 0);
    CHECK(rejection(body_with(ok0 + "," + ok1) + "x", e2)
              .rfind("malformed JSON at offset ", 0)
          == 0);
    CHECK(rejection(body_with(ok0 + "," + ok1) + '\0', e2)
              .find("unexpected NUL byte")
          != std::string::npos);
    // NaN and Infinity literals are not JSON.
    CHECK(rejection(body_with(R"({"index":0,"embedding":[NaN,1]},)" + ok1), e2)
              .rfind("malformed JSON", 0)
          == 0);
    CHECK(rejection(body_with(R"({"index":0,"embedding":[Infinity,1]},)" + ok1),
                    e2)
              .rfind("malformed JSON", 0)
          == 0);
    // Deeply nested ignored members are skipped without recursion.
    CHECK(rejection(R"({"x":)" + std::string(200000, '['), e2)
              .rfind("malformed JSON", 0)
          == 0);
    auto nested = R"({"x":)" + std::string(100000, '[')
        + std::string(100000, ']') + "}";
    CHECK(rejection(nested, e2) == "response has no 'data' array");
  }
  SECTION("shape") {
    CHECK(rejection("[]", e2) == "response body must be a JSON object");
    CHECK(rejection(R"({"model":"m"})", e2) == "response has no 'data' array");
    CHECK(rejection(R"({"data":{"0":[1]}})", e2) == "'data' must be an array");
    CHECK(rejection(R"({"data":null})", e2) == "'data' must be an array");
    CHECK(rejection(R"({"data":[],"data":[]})", e2)
          == "duplicate key 'data' in response");
    CHECK(rejection(body_with("[1,2]," + ok1), e2)
          == "data[0] must be an object");
    CHECK(rejection(R"({"data":[],"model":5})", e2)
          == "'model' must be a string");
    CHECK(rejection(R"({"data":[],"usage":[1]})", e2)
          == "'usage' must be an object");
    CHECK(rejection(R"({"data":[],"usage":{"prompt_tokens":-1}})", e2)
          == "'usage.prompt_tokens' must be a non-negative integer");
    CHECK(rejection(R"({"data":[],"usage":{"total_tokens":"7"}})", e2)
          == "'usage.total_tokens' must be a non-negative integer");
  }
  SECTION("indexes") {
    CHECK(rejection(body_with(R"({"embedding":[1,2]},)" + ok1), e2)
          == "data[0] has no 'index'");
    CHECK(rejection(body_with(R"({"index":"0","embedding":[1,2]})"), e2)
          == "data[0].index is not a valid integer");
    CHECK(rejection(body_with(R"({"index":0.5,"embedding":[1,2]})"), e2)
          == "data[0].index is not a valid integer");
    CHECK(rejection(body_with(R"({"index":1e0,"embedding":[1,2]})"), e2)
          == "data[0].index is not a valid integer");
    CHECK(rejection(body_with(ok0 + R"(,{"index":2,"embedding":[1,2]})"), e2)
          == "data[1].index 2 is out of range (2 inputs)");
    CHECK(rejection(body_with(R"({"index":-1,"embedding":[1,2]})"), e2)
          == "data[0].index -1 is out of range (2 inputs)");
    CHECK(rejection(body_with(ok0 + "," + ok0), e2)
          == "duplicate index 0 in data");
    CHECK(rejection(body_with(ok1), e2)
          == "missing embedding for index 0 (1 of 2 returned)");
    CHECK(rejection(body_with(ok0 + "," + ok1 + "," + ok1), e2)
          == "more embeddings than inputs (more than 2)");
    CHECK(rejection(body_with(R"({"index":0,"index":0,"embedding":[1,2]})"), e2)
          == "data[0] has a duplicate 'index'");
  }
  SECTION("vectors") {
    CHECK(rejection(body_with(R"({"index":0})"), e2)
          == "data[0] has no 'embedding'");
    CHECK(rejection(body_with(R"({"index":0,"embedding":[1],"embedding":[1]})"),
                    e2)
          == "data[0] has a duplicate 'embedding'");
    CHECK(rejection(body_with(R"({"index":0,"embedding":{"x":1}})"), e2)
          == "data[0].embedding must be an array of numbers or a base64 "
             "string");
    CHECK(rejection(body_with(R"({"index":0,"embedding":null})"), e2)
          == "data[0].embedding must be an array of numbers or a base64 "
             "string");
    CHECK(rejection(body_with(R"({"index":0,"embedding":[1,"2"]})"), e2)
          == "data[0].embedding[1] is not a number");
    CHECK(rejection(body_with(R"({"index":0,"embedding":[1,[2]]})"), e2)
          == "data[0].embedding[1] is not a number");
    CHECK(rejection(body_with(R"({"index":0,"embedding":[]})"), e2)
          == "data[0].embedding is empty");
    CHECK(rejection(body_with(ok0 + R"(,{"index":1,"embedding":[1,2,3]})"), e2)
          == "data[1].embedding has 3 dimensions, the first embedding has 2");
    CHECK(rejection(body_with(ok0 + "," + ok1), expect(2, 3))
          == "data[0].embedding has 2 dimensions, 3 requested");
    // 1e39 is a finite double but overflows float32.
    CHECK(rejection(body_with(R"({"index":0,"embedding":[1,-1e39]})"), e2)
          == "data[0].embedding[1] is not a finite float32");
  }
  SECTION("base64 vectors") {
    auto eb = expect(1, std::nullopt, encoding::base64);
    auto item = [](const std::string& s) {
      return body_with(R"({"index":0,"embedding":")" + s + R"("})");
    };
    CHECK(rejection(item("AAAAPw"), eb) // unpadded
          == "data[0].embedding is not valid base64 float32 data");
    CHECK(rejection(item("AAAA"), eb) // 3 bytes: not whole floats
          == "data[0].embedding is not valid base64 float32 data");
    CHECK(rejection(item("AAA*PwAA"), eb)
          == "data[0].embedding is not valid base64 float32 data");
    CHECK(rejection(item(""), eb) == "data[0].embedding is empty");
    CHECK(
        rejection(item(b64({1.0f, std::numeric_limits<float>::infinity()})), eb)
        == "data[0].embedding[1] is not a finite float32");
    CHECK(rejection(item(b64({std::numeric_limits<float>::quiet_NaN()})), eb)
          == "data[0].embedding[0] is not a finite float32");
    CHECK(rejection(item(b64({1.0f, 2.0f})), expect(1, 3, encoding::base64))
          == "data[0].embedding has 2 dimensions, 3 requested");
  }
}

TEST_CASE("base64 float helpers", "[openai][base64]") {
  CHECK(encode_base64_floats({}).empty());
  CHECK(encode_base64_floats({1.0f}) == "AACAPw==");
  CHECK(encode_base64_floats({1.0f, 2.0f}) == "AACAPwAAAEA=");
  CHECK(encode_base64_floats({1.0f, 2.0f, 3.0f}) == "AACAPwAAAEAAAEBA");
  for (std::size_t n = 0; n < 9; ++n) {
    std::vector<float> v;
    for (std::size_t i = 0; i < n; ++i)
      v.push_back(static_cast<float>(i) * 0.37f - 1.0f);
    auto back = decode_base64_floats(encode_base64_floats(v));
    REQUIRE(back);
    CHECK(*back == v);
  }
  auto one = decode_base64_floats("AACAPw==");
  REQUIRE(one);
  CHECK(*one == std::vector<float>{1.0f});
  CHECK_FALSE(decode_base64_floats("AACAPw"));   // missing padding
  CHECK_FALSE(decode_base64_floats("AACAPw="));  // bad length
  CHECK_FALSE(decode_base64_floats("AACA"));     // 3 bytes
  CHECK_FALSE(decode_base64_floats("AA=APw==")); // '=' inside
  CHECK_FALSE(decode_base64_floats("AACA Pw=")); // whitespace
  CHECK_FALSE(decode_base64_floats("AACAP-==")); // URL-safe alphabet
  CHECK_FALSE(decode_base64_floats("A==="));
  auto empty = decode_base64_floats("");
  REQUIRE(empty);
  CHECK(empty->empty());
}

TEST_CASE("error bodies", "[openai][error]") {
  api_error err{"Rate limit reached", "requests", "", "rate_limit_exceeded"};
  auto body = encode_error(err);
  CHECK(body
        == R"({"error":{"message":"Rate limit reached","type":"requests",)"
           R"("param":null,"code":"rate_limit_exceeded"}})");
  auto back = decode_error(body);
  REQUIRE(back);
  CHECK(back->message == err.message);
  CHECK(back->type == err.type);
  CHECK(back->param.empty());
  CHECK(back->code == err.code);

  api_error full{"bad \"input\"", "invalid_request_error", "input", ""};
  auto full_back = decode_error(encode_error(full));
  REQUIRE(full_back);
  CHECK(full_back->message == full.message);
  CHECK(full_back->param == "input");
  CHECK(full_back->code.empty());

  // OpenAI's real quota error.
  auto quota = decode_error(
      R"({"error":{"message":"You exceeded your current quota.",)"
      R"("type":"insufficient_quota","param":null,"code":"insufficient_quota"}})");
  REQUIRE(quota);
  CHECK(quota->code == "insufficient_quota");
  // Numeric codes and missing optional members.
  auto numeric = decode_error(R"({"error":{"message":"x","code":429}})");
  REQUIRE(numeric);
  CHECK(numeric->code == "429");
  CHECK(numeric->type.empty());
  // text-embeddings-inference and vLLM shapes.
  auto tei = decode_error(R"({"error":"Input validation error",)"
                          R"("error_type":"Validation"})");
  REQUIRE(tei);
  CHECK(tei->message == "Input validation error");
  CHECK(tei->type == "Validation");
  auto vllm
      = decode_error(R"({"object":"error","message":"too long",)"
                     R"("type":"BadRequestError","param":null,"code":400})");
  REQUIRE(vllm);
  CHECK(vllm->message == "too long");
  CHECK(vllm->type == "BadRequestError");
  CHECK(vllm->code == "400");
}

TEST_CASE("decode_error rejects bodies that are not errors",
          "[openai][error]") {
  CHECK_FALSE(decode_error(""));
  CHECK_FALSE(decode_error("Bad Gateway"));
  CHECK_FALSE(decode_error("<html>502</html>"));
  CHECK_FALSE(decode_error("[]"));
  CHECK_FALSE(decode_error(R"({"data":[]})"));
  CHECK_FALSE(decode_error(R"({"error":null})"));
  CHECK_FALSE(decode_error(R"({"error":{"type":"x"}})"));
  CHECK_FALSE(decode_error(R"({"error":{"message":5}})"));
  CHECK_FALSE(decode_error(R"({"error":{"message":"x","code":{"a":1}}})"));
  CHECK_FALSE(decode_error(R"({"object":"list","message":"x"})"));
  CHECK_FALSE(decode_error(R"({"error":{"message":"x"}} trailing)"));
}
