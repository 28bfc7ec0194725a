// The JSON grammar of decode_response's hand-written parser: every RFC 8259
// construct is accepted where a value is ignored, every malformation is
// rejected, float conversion is correctly rounded, and byte-level mutations
// of real bodies are never accepted when RapidJSON finds them malformed.
#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/openai.hpp"

#include <catch2/catch.hpp>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <rapidjson/document.h>
#include <rapidjson/memorystream.h>
#include <string>

using namespace embedrt;
using namespace embedrt::openai;
using namespace std::string_literals;

namespace {

response_expectation expect(std::size_t inputs,
                            encoding enc = encoding::float32) {
  response_expectation e;
  e.inputs = inputs;
  e.encoding_format = enc;
  return e;
}

const std::string one_item = R"("data":[{"index":0,"embedding":[0.5,1]}])";

// A body whose ignored member "x" holds `value`.
std::string with_ignored(const std::string& value) {
  return R"({"x":)" + value + "," + one_item + "}";
}

bool is_valid_json(std::string_view body) {
  rapidjson::Document doc;
  rapidjson::MemoryStream ms(body.data(), body.size());
  doc.ParseStream<rapidjson::kParseIterativeFlag, rapidjson::UTF8<>>(ms);
  return !doc.HasParseError() && ms.Tell() == body.size();
}

// The reference conversion: libstdc++'s correctly rounded from_chars.
float reference_float(const std::string& text) {
  float f = 0;
  auto res = std::from_chars(text.data(), text.data() + text.size(), f);
  if (res.ec == std::errc::result_out_of_range) {
    double d = std::strtod(text.c_str(), nullptr);
    return static_cast<float>(d);
  }
  return f;
}

uint32_t bits_of(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  return b;
}

/// `seed` with one to three random single-character edits (replace, insert,
/// erase) drawn from JSON's own characters and two invalid bytes.
std::string mutate(const std::string& seed, std::mt19937& rng) {
  static constexpr char alphabet[]
      = "{}[]\":,.-+eE0123456789 \\/ntfuabx\x01\x80";
  std::string body = seed;
  int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits; ++e) {
    auto pos = rng() % body.size();
    auto c = alphabet[rng() % (sizeof(alphabet) - 1)];
    switch (rng() % 3) {
      case 0: body[pos] = c; break;
      case 1: body.insert(body.begin() + pos, c); break;
      default:
        if (body.size() > 1)
          body.erase(pos, 1);
    }
  }
  return body;
}

} // namespace

TEST_CASE("ignored members may hold any valid JSON", "[openai][json]") {
  const std::vector<std::string> values
      = {"null",
         "true",
         "false",
         "0",
         "-0",
         "12",
         "-3.25",
         "1e5",
         "1E+5",
         "2e-3",
         "-0.0e0",
         "123456789012345678901234567890",
         R"("")",
         R"("esc \" \\ \/ \b \f \n \r \t \u00e9 \ud83d\ude00")",
         "[]",
         "{}",
         R"([1,[2,[3,{"a":[]}]],{"b":{"c":null}}])",
         " [ 1 , 2 ] ",
         "\t{\n\"k\"\r:\"v\" }",
         R"({"data":"not the data"})",
         R"(")" + std::string(1000, 'z') + R"(")"};
  for (const auto& value : values) {
    INFO(value);
    auto res = decode_response(with_ignored(value), expect(1));
    CHECK(res);
    CHECK(is_valid_json(with_ignored(value)));
  }
  // Deep nesting is skipped without recursion.
  std::string deep = std::string(50000, '[') + std::string(50000, ']');
  CHECK(decode_response(with_ignored(deep), expect(1)));
  // Keys with escapes are unescaped before they are matched.
  auto escaped_key = decode_response(
      R"({"d\u0061ta":[{"ind\u0065x":0,"embedding":[2]}]})", expect(1));
  REQUIRE(escaped_key);
  CHECK(escaped_key->data[0] == std::vector<float>{2});
  // Whitespace everywhere.
  auto spaced = decode_response(
      " {\n \"data\" : [ { \"index\" : 0 , \"embedding\" : [ 1 , 2 ] } ] } \n",
      expect(1));
  REQUIRE(spaced);
  CHECK(spaced->data[0] == std::vector<float>{1, 2});
}

TEST_CASE("malformed JSON anywhere is rejected", "[openai][json]") {
  const char* values[] = {"",
                          "[1,]",
                          R"({"a":1,})",
                          R"({"a"})",
                          "{1:2}",
                          "01",
                          "1.",
                          ".5",
                          "1e",
                          "1e+",
                          "-",
                          "+1",
                          "tru",
                          "nul",
                          "falsey",
                          "NaN",
                          "Infinity",
                          "-Infinity",
                          R"("\x")",
                          R"("\u12")",
                          R"("\u12G4")",
                          R"("\ud800")",
                          R"("\ud800\u0041")",
                          "'single'",
                          "[1 2]",
                          R"({"a":1 "b":2})",
                          R"("unterminated)",
                          "[",
                          "{",
                          R"({"a":)",
                          R"({"a")",
                          "[1,",
                          "]",
                          "}",
                          ",",
                          ":",
                          "[}",
                          "{]",
                          "\"tab\there\"",
                          "\"nl\nhere\"",
                          "/* comment */ 1",
                          "0x10",
                          "1.5.2",
                          "--1",
                          "1e5.5",
                          "[01]"};
  for (auto value : values) {
    INFO(value);
    auto body = with_ignored(value);
    REQUIRE_FALSE(is_valid_json(body));
    auto res = decode_response(body, expect(1));
    REQUIRE_FALSE(res);
    CHECK(error_code(res.error()) == errc::invalid_response);
    CHECK(error_detail(res.error()).rfind("malformed JSON at offset ", 0) == 0);
  }
  // A lone low surrogate is grammatical JSON but no text: RapidJSON lets it
  // through, this parser does not (it could not be valid UTF-8).
  auto lone = decode_response(with_ignored(R"("\udc00")"), expect(1));
  REQUIRE_FALSE(lone);
  CHECK(error_detail(lone.error())
        == "malformed JSON at offset 6: lone low surrogate in \\u escape");
  // Truncation at every byte of a valid body.
  auto full = encode_response({"m", {{0.25f, -1.5e-7f}, {3.0f, 4.0f}}, {1, 1}},
                              encoding::float32);
  for (std::size_t n = 0; n < full.size(); ++n) {
    INFO(n);
    auto res = decode_response(std::string_view{full}.substr(0, n), expect(2));
    REQUIRE_FALSE(res);
    CHECK(error_code(res.error()) == errc::invalid_response);
  }
  CHECK(decode_response(full, expect(2)));
}

TEST_CASE("malformed JSON offsets point at the problem", "[openai][json]") {
  auto detail = [](std::string_view body) {
    auto res = decode_response(body, expect(1));
    REQUIRE_FALSE(res);
    return error_detail(res.error());
  };
  CHECK(detail(R"({"data":[)")
        == "malformed JSON at offset 9: unexpected end "
           "of input");
  CHECK(detail(R"({"data" [])") == "malformed JSON at offset 8: expected ':'");
  CHECK(detail(R"({"data":[{"index":0,"embedding":[1,]}]})")
        == "malformed JSON at offset 35: invalid value");
  CHECK(detail(R"({"x":"\q"})")
        == "malformed JSON at offset 6: invalid escape in string");
  CHECK(detail(R"({"x":1} {})")
        == "malformed JSON at offset 8: unexpected content after the value");
}

TEST_CASE("base64 strings may contain escaped slashes", "[openai][json]") {
  // Find a vector whose encoding contains '/', as some JSON writers escape it.
  std::vector<float> v;
  std::string encoded;
  for (uint32_t bits = 0x3F800000; encoded.find('/') == std::string::npos;
       ++bits) {
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    v = {f, 1.0f};
    encoded = encode_base64_floats(v);
  }
  std::string escaped;
  for (char c : encoded) {
    if (c == '/')
      escaped += "\\/";
    else
      escaped += c;
  }
  auto res = decode_response(R"({"data":[{"index":0,"embedding":")" + escaped
                                 + R"("}]})",
                             expect(1, encoding::base64));
  REQUIRE(res);
  CHECK(res->data[0] == v);
}

TEST_CASE("float conversion is correctly rounded", "[openai][json]") {
  std::mt19937 rng{20240601}; // fixed seed: deterministic
  std::uniform_int_distribution<uint32_t> any_bits;
  std::vector<std::string> texts;
  auto add = [&](const char* fmt, double value) {
    char buf[512];
    std::snprintf(buf, sizeof(buf), fmt, value);
    texts.emplace_back(buf);
  };
  for (int i = 0; i < 20000; ++i) {
    uint32_t b = any_bits(rng);
    float f;
    std::memcpy(&f, &b, sizeof(f));
    if (!std::isfinite(f))
      continue;
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof(buf), f);
    texts.emplace_back(buf, res.ptr);
    add("%.9g", f);
    add("%.6g", f);
    // Near and exactly at the midpoint to the next float: the fast path
    // must defer exact ties to the slow path.
    float next = std::nextafter(f, std::numeric_limits<float>::infinity());
    if (std::isfinite(next)) {
      double mid = (static_cast<double>(f) + static_cast<double>(next)) / 2;
      add("%.16g", mid);
      add("%.17g", mid);
      add("%.200g", mid); // the exact decimal expansion
    }
  }
  // Typical embedding values.
  std::normal_distribution<float> normal{0.0f, 0.05f};
  for (int i = 0; i < 20000; ++i) {
    float f = normal(rng);
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof(buf), f);
    texts.emplace_back(buf, res.ptr);
    add("%.8f", f);
  }
  for (auto extra : {"16777217", "0.1", "1e-45", "7e-46", "1.4e-45",
                     "3.4028235e38", "3.4028235677973366e38", "0e0",
                     "-0.000000000000000000000000000000000000000000001",
                     "1.00000000000000000000000000000000000001"})
    texts.emplace_back(extra);
  // Finite reference values only (the decoder rejects the others).
  std::vector<std::string> finite;
  std::vector<float> expected;
  for (auto& t : texts) {
    auto f = reference_float(t);
    if (std::isfinite(f)) {
      finite.push_back(t);
      expected.push_back(f);
    }
  }
  std::string body = R"({"data":[{"index":0,"embedding":[)";
  for (std::size_t i = 0; i < finite.size(); ++i) {
    if (i > 0)
      body += ',';
    body += finite[i];
  }
  body += "]}]}";
  auto res = decode_response(body, expect(1));
  REQUIRE(res);
  const auto& got = res->data[0];
  REQUIRE(got.size() == expected.size());
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (bits_of(got[i]) != bits_of(expected[i])) {
      if (++mismatches <= 5)
        FAIL_CHECK(finite[i] << " -> " << got[i] << ", expected "
                             << expected[i]);
    }
  }
  CHECK(mismatches == 0);
}

TEST_CASE("mutated bodies are never accepted when malformed",
          "[openai][json]") {
  embeddings_response resp{"text-embedding-3-small",
                           {{0.125f, -2.5e-5f, 3.0f}, {1e-3f, 0.0f, -7.75f}},
                           {5, 5}};
  std::vector<std::string> seeds = {
      encode_response(resp, encoding::float32),
      encode_response(resp, encoding::base64),
      R"({"x":{"a":[1,-0.5e+3,"s\"\\\/\u00e9",true,false,null]},)"
      R"("data":[{"index":1,"embedding":[1.5,2]},{"embedding":[3,4],"index":0}],)"
      R"("usage":{"prompt_tokens":2,"total_tokens":2},"model":"m\u00e9"})"};
  std::mt19937 rng{7}; // fixed seed: deterministic
  std::size_t accepted = 0, rejected = 0;
  for (const auto& seed : seeds) {
    for (int round = 0; round < 4000; ++round) {
      std::string body = mutate(seed, rng);
      auto exp
          = expect(2, seed == seeds[1] ? encoding::base64 : encoding::float32);
      auto res = decode_response(body, exp);
      bool valid = is_valid_json(body);
      if (res) {
        ++accepted;
        INFO(body);
        CHECK(valid);
        CHECK(res->data.size() == 2);
      } else {
        ++rejected;
        CHECK(error_code(res.error()) == errc::invalid_response);
        if (!valid) {
          // Malformed JSON may still be reported as a type error when the
          // type error comes first, but never accepted.
          CHECK_FALSE(error_detail(res.error()).empty());
        }
      }
    }
  }
  CHECK(accepted > 0);
  CHECK(rejected > 0);
}

TEST_CASE("mutated requests and error bodies are never accepted when malformed",
          "[openai][json]") {
  embeddings_request req;
  req.model = "text-embedding-3-small";
  req.input = {"first \"quoted\" text", "second\ttext \xC3\xA9"};
  req.dimensions = 64;
  req.encoding_format = encoding::base64;
  req.user = "u-1";
  std::vector<std::string> seeds = {
      encode_request(req),
      R"({"model":"m","input":"x\u00e9\ud83d\ude00","extra":[{"a":null},1e3]})",
      encode_error(
          {"Rate limit reached", "requests", "", "rate_limit_exceeded"}),
      R"({"error":"Input validation error","error_type":"Validation"})",
      R"({"object":"error","message":"too long","type":"BadRequestError",)"
      R"("param":null,"code":400})"};
  std::mt19937 rng{11}; // fixed seed: deterministic
  std::size_t accepted = 0, rejected = 0;
  for (const auto& seed : seeds) {
    for (int round = 0; round < 3000; ++round) {
      std::string body = mutate(seed, rng);
      INFO(body);
      bool valid = is_valid_json(body);
      auto request = decode_request(body);
      if (request) {
        CHECK(valid);
        CHECK_FALSE(request->model.empty());
        CHECK_FALSE(request->input.empty());
      } else {
        CHECK(error_code(request.error()) == errc::invalid_input);
      }
      auto error = decode_error(body);
      if (error)
        CHECK(valid);
      (request || error ? accepted : rejected) += 1;
    }
  }
  CHECK(accepted > 0);
  CHECK(rejected > 0);
}
