#include "embedrt/protocol/errc.hpp"
#include "embedrt/protocol/openai.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace embedrt;
using namespace embedrt::openai;
using namespace std::string_literals;

namespace {

// Decodes a request that must be rejected and returns the detail.
std::string rejection(std::string_view body) {
  auto res = decode_request(body);
  REQUIRE_FALSE(res);
  CHECK(error_code(res.error()) == errc::invalid_input);
  return error_detail(res.error());
}

std::string invalid(const std::vector<std::string>& inputs,
                    const provider_profile& profile, bool check_total = true) {
  auto err = validate_inputs(inputs, profile, check_total);
  REQUIRE(err);
  CHECK(error_code(err) == errc::invalid_input);
  return error_detail(err);
}

} // namespace

TEST_CASE("encode_request writes compact JSON and omits defaults",
          "[openai][request]") {
  embeddings_request req;
  req.model = "text-embedding-3-small";
  req.input = {"hello", "world"};
  CHECK(encode_request(req)
        == R"({"model":"text-embedding-3-small","input":["hello","world"]})");
  req.input = {"only"};
  req.input_is_array = false;
  req.encoding_format = encoding::base64;
  req.dimensions = 256;
  req.user = "u-1";
  CHECK(encode_request(req)
        == R"({"model":"text-embedding-3-small","input":"only",)"
           R"("encoding_format":"base64","dimensions":256,"user":"u-1"})");
}

TEST_CASE("encode_request escapes strings", "[openai][request]") {
  embeddings_request req;
  req.model = "m";
  req.input = {"quote\" backslash\\ nl\n tab\t cr\r ctl\x01 nul"s + '\0'
               + " \xC3\xA9"};
  auto body = encode_request(req);
  CHECK(body
        == R"({"model":"m","input":["quote\" backslash\\ nl\n tab\t cr\r )"
           R"(ctl\u0001 nul\u0000 )"
            + "\xC3\xA9"s + R"("]})");
  auto back = decode_request(body);
  REQUIRE(back);
  CHECK(back->input == req.input);
}

TEST_CASE("decode_request reads every field", "[openai][request]") {
  auto res = decode_request(
      R"({"model":"m","input":["a","b"],"encoding_format":"base64",)"
      R"("dimensions":64,"user":"alice","extra":{"ignored":[1,2]}})");
  REQUIRE(res);
  CHECK(res->model == "m");
  CHECK(res->input == std::vector<std::string>{"a", "b"});
  CHECK(res->input_is_array);
  CHECK(res->encoding_format == encoding::base64);
  REQUIRE(res->dimensions);
  CHECK(*res->dimensions == 64);
  CHECK(res->user == "alice");

  auto single = decode_request(R"( {"input":"x","model":"m"} )");
  REQUIRE(single);
  CHECK_FALSE(single->input_is_array);
  CHECK(single->input == std::vector<std::string>{"x"});
  CHECK(single->encoding_format == encoding::float32);
  CHECK_FALSE(single->dimensions);
  CHECK(single->user.empty());

  auto float_fmt = decode_request(
      R"({"input":"x","model":"m","encoding_format":"float"})");
  REQUIRE(float_fmt);
  CHECK(float_fmt->encoding_format == encoding::float32);

  // Null optional members count as absent.
  auto nulls = decode_request(R"({"input":"x","model":"m","dimensions":null,)"
                              R"("encoding_format":null,"user":null})");
  REQUIRE(nulls);
  CHECK_FALSE(nulls->dimensions);
  CHECK(nulls->encoding_format == encoding::float32);
  CHECK(nulls->user.empty());

  // Escapes are decoded, embedded NULs kept for validate_inputs to reject.
  auto esc = decode_request(R"({"model":"m","input":"a\u0000b\u00e9"})");
  REQUIRE(esc);
  CHECK(esc->input.front() == "a\0b\xC3\xA9"s);
}

TEST_CASE("token-array inputs decode and encode as OpenAI's shapes",
          "[openai][request]") {
  // One input as a flat array of ids.
  auto one = decode_request(R"({"model":"m","input":[17, 0,2147483647]})");
  REQUIRE(one);
  CHECK(one->input.empty());
  CHECK(one->token_input
        == std::vector<std::vector<int32_t>>{{17, 0, 2147483647}});
  // Several inputs as an array of arrays.
  auto many = decode_request(R"({"model":"m","input":[[1,2], [3]]})");
  REQUIRE(many);
  CHECK(many->token_input == std::vector<std::vector<int32_t>>{{1, 2}, {3}});
  // Always encoded as an array of arrays, never as texts.
  embeddings_request req;
  req.model = "m";
  req.token_input = {{9906, 1917}, {13}};
  req.dimensions = 8;
  CHECK(encode_request(req)
        == R"({"model":"m","input":[[9906,1917],[13]],"dimensions":8})");
  auto back = decode_request(encode_request(req));
  REQUIRE(back);
  CHECK(back->token_input == req.token_input);
  CHECK(back->input.empty());
}

TEST_CASE("validate_token_inputs counts each input's ids exactly",
          "[openai][validate]") {
  auto openai = profile_for(provider_kind::openai);
  std::vector<int64_t> tokens{99};
  REQUIRE_FALSE(validate_token_inputs({{1, 2, 3}, {4}}, openai, true, &tokens));
  CHECK(tokens == std::vector<int64_t>{3, 1});
  auto refused = [](const std::vector<std::vector<int32_t>>& in,
                    const provider_profile& p) {
    auto err = validate_token_inputs(in, p);
    REQUIRE(err);
    CHECK(error_code(err) == errc::invalid_input);
    return error_detail(err);
  };
  CHECK(refused({}, openai) == "no inputs: at least one text is required");
  CHECK(refused({{1}, {}}, openai) == "input[1] is an empty token array");
  CHECK(refused({{1, -4}}, openai) == "input[0][1] is a negative token id");
  CHECK(refused({std::vector<int32_t>(8193, 5)}, openai)
        == "input[0] is too long: 8193 tokens > 8192");
  CHECK(refused(std::vector<std::vector<int32_t>>(2049, {1}), openai)
        == "too many inputs: 2049 > 2048 per request");
  // TEI's OpenAI route takes text only.
  CHECK(refused({{1}}, profile_for(provider_kind::tei))
        == "token-array inputs are not supported by a tei upstream: send the "
           "text");
  CHECK_FALSE(
      validate_token_inputs({{1}}, profile_for(provider_kind::generic)));
  CHECK_FALSE(validate_token_inputs({{1}}, profile_for(provider_kind::azure)));
}

TEST_CASE("request round trip", "[openai][request]") {
  embeddings_request req;
  req.model = "model/with \"quotes\"";
  req.input = {"first text", "second \xE2\x82\xAC", "\t third"};
  req.dimensions = 1536;
  req.encoding_format = encoding::base64;
  req.user = "user\\1";
  auto back = decode_request(encode_request(req));
  REQUIRE(back);
  CHECK(back->model == req.model);
  CHECK(back->input == req.input);
  CHECK(back->input_is_array);
  CHECK(back->dimensions == req.dimensions);
  CHECK(back->encoding_format == req.encoding_format);
  CHECK(back->user == req.user);
}

TEST_CASE("decode_request rejects malformed JSON with its offset",
          "[openai][request]") {
  CHECK(rejection(R"({"model":"m","input":"x",})")
        == "malformed JSON at offset 25: expected a string key");
  CHECK(rejection("").rfind("malformed JSON at offset 0: ", 0) == 0);
  CHECK(rejection(R"({"model":"m"} trailing)").rfind("malformed JSON", 0) == 0);
  CHECK(rejection(R"({"model":"m","input":"x"})"s + '\0' + "junk")
        == "malformed JSON at offset 25: unexpected NUL byte");
  CHECK(rejection(R"({"model":"m","input":[NaN]})").rfind("malformed JSON", 0)
        == 0);
  CHECK(rejection(R"({"model":"m","input":"unterminated)")
            .rfind("malformed JSON", 0)
        == 0);
  // Deep nesting is an ordinary error, not a stack overflow.
  std::string deep(100000, '[');
  CHECK(rejection(deep).rfind("malformed JSON", 0) == 0);
}

TEST_CASE("decode_request rejects each malformed field with its own detail",
          "[openai][request]") {
  CHECK(rejection("[1,2]") == "request body must be a JSON object");
  CHECK(rejection(R"("text")") == "request body must be a JSON object");
  CHECK(rejection(R"({"input":"x"})") == "'model' is required");
  CHECK(rejection(R"({"model":5,"input":"x"})") == "'model' must be a string");
  CHECK(rejection(R"({"model":"","input":"x"})")
        == "'model' must not be empty");
  CHECK(rejection("{\"model\":\"\xC0\xAF\",\"input\":\"x\"}")
        == "'model' is not valid UTF-8");
  CHECK(rejection(R"({"model":"m"})") == "'input' is required");
  CHECK(rejection(R"({"model":"a","input":"x","model":"b"})")
        == "duplicate key 'model' in request");
  CHECK(rejection(R"({"model":"a","input":"x","input":["y"]})")
        == "duplicate key 'input' in request");
  const std::string not_text
      = "'input' must be a string, an array of strings, an array of token "
        "ids or an array of token-id arrays";
  CHECK(rejection(R"({"model":"m","input":null})") == not_text);
  CHECK(rejection(R"({"model":"m","input":42})") == not_text);
  CHECK(rejection(R"({"model":"m","input":{"text":"x"}})") == not_text);
  CHECK(rejection(R"({"model":"m","input":[]})")
        == "'input' must not be an empty array");
  CHECK(rejection(R"({"model":"m","input":[null]})")
        == not_text + " (input[0] is not a string)");
  CHECK(rejection(R"({"model":"m","input":["a",null]})")
        == "'input' mixes shapes: input[1] is not a string like input[0]");
  CHECK(rejection(R"({"model":"m","input":["a",["b"]]})")
        == "'input' mixes shapes: input[1] is not a string like input[0]");
  CHECK(rejection(R"({"model":"m","input":["a",[1]]})")
        == "'input' mixes shapes: input[1] is not a string like input[0]");
  CHECK(rejection(R"({"model":"m","input":[[1],"a"]})")
        == "'input' mixes shapes: input[1] is not a token-id array like "
           "input[0]");
  CHECK(rejection(R"({"model":"m","input":[1,[2]]})")
        == "'input' mixes shapes: input[1] is not a token id like input[0]");
  CHECK(rejection(R"({"model":"m","input":[[1,2],[]]})")
        == "input[1] is an empty token array");
  CHECK(rejection(R"({"model":"m","input":[[1,"2"]]})")
        == "'input' token arrays hold integers (input[0][1] is not one)");
  for (auto id : {"-1", "1.5", "2147483648", "1e3"}) {
    INFO(id);
    CHECK(rejection(R"({"model":"m","input":[[3,)"s + id + "]]}")
          == "'input' token ids are integers in [0, 2147483647] (element 1 "
             "is not)");
  }
  const char* bad_dims[]
      = {"0", "-1", "1.5", "2.0", "\"8\"", "true", "3000000000", "[8]"};
  for (auto dims : bad_dims) {
    INFO(dims);
    CHECK(rejection(R"({"model":"m","input":"x","dimensions":)"s + dims + "}")
          == "'dimensions' must be a positive integer");
  }
  for (auto fmt : {R"("int8")", R"("FLOAT")", "1", R"("")"}) {
    INFO(fmt);
    CHECK(
        rejection(R"({"model":"m","input":"x","encoding_format":)"s + fmt + "}")
        == "'encoding_format' must be \"float\" or \"base64\"");
  }
  CHECK(rejection(R"({"model":"m","input":"x","user":7})")
        == "'user' must be a string");
  CHECK(rejection("{\"model\":\"m\",\"input\":\"x\",\"user\":\"\xFF\"}")
        == "'user' is not valid UTF-8");
}

TEST_CASE("is_valid_utf8 accepts well-formed and rejects ill-formed text",
          "[openai][utf8]") {
  CHECK(is_valid_utf8(""));
  CHECK(is_valid_utf8("plain ASCII text that is longer than eight bytes"));
  CHECK(is_valid_utf8("\xC3\xA9"));                     // U+00E9
  CHECK(is_valid_utf8("\xE2\x82\xAC"));                 // U+20AC
  CHECK(is_valid_utf8("\xED\x9F\xBF"));                 // U+D7FF
  CHECK(is_valid_utf8("\xEE\x80\x80"));                 // U+E000
  CHECK(is_valid_utf8("\xF0\x90\x80\x80"));             // U+10000
  CHECK(is_valid_utf8("\xF4\x8F\xBF\xBF"));             // U+10FFFF
  CHECK(is_valid_utf8("abcdefgh\xC3\xA9ijklmnop\x7F")); // mixed fast path
  CHECK(is_valid_utf8("nul \0 is valid UTF-8"s));

  CHECK_FALSE(is_valid_utf8("\x80"));             // lone continuation
  CHECK_FALSE(is_valid_utf8("\xC0\xAF"));         // overlong '/'
  CHECK_FALSE(is_valid_utf8("\xC1\xBF"));         // overlong
  CHECK_FALSE(is_valid_utf8("\xE0\x80\xAF"));     // overlong 3-byte
  CHECK_FALSE(is_valid_utf8("\xF0\x80\x80\xAF")); // overlong 4-byte
  CHECK_FALSE(is_valid_utf8("\xED\xA0\x80"));     // U+D800 surrogate
  CHECK_FALSE(is_valid_utf8("\xED\xBF\xBF"));     // U+DFFF surrogate
  CHECK_FALSE(is_valid_utf8("\xF4\x90\x80\x80")); // U+110000
  CHECK_FALSE(is_valid_utf8("\xF5\x80\x80\x80")); // invalid lead
  CHECK_FALSE(is_valid_utf8("\xFF"));
  CHECK_FALSE(is_valid_utf8("\xC3"));         // truncated 2-byte
  CHECK_FALSE(is_valid_utf8("\xE2\x82"));     // truncated 3-byte
  CHECK_FALSE(is_valid_utf8("\xF0\x9F\x98")); // truncated 4-byte
  CHECK_FALSE(is_valid_utf8("\xE2\x28\xA1")); // bad continuation
  CHECK_FALSE(is_valid_utf8("12345678\xC3")); // after fast path
}

TEST_CASE("validate_inputs accepts valid inputs", "[openai][validate]") {
  auto profile = profile_for(provider_kind::openai);
  CHECK_FALSE(validate_inputs({"hello"}, profile));
  CHECK_FALSE(validate_inputs(
      {"  padded  ", "\xE4\xB8\xAD\xE6\x96\x87", "\xF0\x9F\x98\x80 emoji"},
      profile));
  CHECK_FALSE(validate_inputs(std::vector<std::string>(2048, "x"), profile));
}

TEST_CASE("validate_inputs accepts white space alone, as OpenAI does",
          "[openai][validate]") {
  // LangChain JS turns "\n" into " "; OpenAI and the upstreams embed it.
  auto profile = profile_for(provider_kind::openai);
  std::vector<int64_t> tokens;
  // ASCII and Unicode spaces: NBSP, EN QUAD..HAIR SPACE, IDEOGRAPHIC SPACE,
  // NNBSP.
  CHECK_FALSE(validate_inputs(
      {" ", "\n", " \t\r\n\v\f",
       "\xC2\xA0\xE2\x80\x80\xE2\x80\x8A\xE3\x80\x80\xE2\x80\xAF"},
      profile, true, &tokens));
  REQUIRE(tokens.size() == 4);
  CHECK(tokens[0] == 1);
  CHECK(tokens[2] == 6);
}

TEST_CASE("validate_inputs hands out each input's token estimate",
          "[openai][validate]") {
  auto profile = profile_for(provider_kind::openai);
  std::vector<std::string> inputs{"hello", std::string(4000, 'a'),
                                  "\xE4\xB8\xAD\xE6\x96\x87 text"};
  std::vector<int64_t> tokens{99}; // replaced, not appended to
  REQUIRE_FALSE(validate_inputs(inputs, profile, true, &tokens));
  REQUIRE(tokens.size() == inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    INFO("input " << i);
    CHECK(tokens[i] == static_cast<int64_t>(estimate_tokens(inputs[i])));
    CHECK(tokens[i] > 0);
  }
}

TEST_CASE("validate_inputs rejects each failure naming the input",
          "[openai][validate]") {
  auto profile = profile_for(provider_kind::openai);
  CHECK(invalid({}, profile) == "no inputs: at least one text is required");
  CHECK(invalid(std::vector<std::string>(2049, "x"), profile)
        == "too many inputs: 2049 > 2048 per request");
  CHECK(invalid({"ok", "ok", "ok", ""}, profile) == "input[3] is empty");
  CHECK(invalid({"ok", "bad \xC0\xAF"}, profile)
        == "input[1] is not valid UTF-8 (at byte 4)");
  CHECK(invalid({"\xED\xA0\x80"}, profile)
        == "input[0] is not valid UTF-8 (at byte 0)");
  CHECK(invalid({"\xF4\x90\x80\x80"}, profile)
        == "input[0] is not valid UTF-8 (at byte 0)");
  CHECK(invalid({"truncated \xE2\x82"}, profile)
        == "input[0] is not valid UTF-8 (at byte 10)");
  CHECK(invalid({"ok", "ok", "a\0b"s}, profile)
        == "input[2] contains a NUL character (at byte 1)");
  CHECK(invalid({"\0"s}, profile)
        == "input[0] contains a NUL character (at byte 0)");
  std::string big(profile.max_input_bytes + 1, 'a');
  CHECK(invalid({"ok", big}, profile)
        == "input[1] is too large: " + std::to_string(big.size()) + " bytes > "
            + std::to_string(profile.max_input_bytes));
  // A 1 MB text is refused by its size.
  CHECK(invalid({std::string(1 << 20, 'a')}, profile).find("is too large")
        != std::string::npos);
  // 8193 groups of three digits estimate to 8193 tokens.
  std::string long_text(3 * 8193, '7');
  CHECK(invalid({long_text}, profile)
        == "input[0] is too long: about 8193 tokens > 8192");
  std::string at_limit(3 * 8192, '7');
  CHECK_FALSE(validate_inputs({at_limit}, profile));
  // 37 inputs at the per-input limit exceed 300,000 tokens in total.
  std::vector<std::string> many(37, at_limit);
  CHECK(invalid(many, profile)
        == "inputs too long in total: about 303104 tokens > 300000 per "
           "request");
  CHECK_FALSE(validate_inputs(many, profile, false));
}

TEST_CASE("validate_inputs applies the provider's own limits",
          "[openai][validate]") {
  auto tei = profile_for(provider_kind::tei);
  CHECK_FALSE(validate_inputs(std::vector<std::string>(32, "x"), tei));
  CHECK(invalid(std::vector<std::string>(33, "x"), tei)
        == "too many inputs: 33 > 32 per request");
  CHECK(invalid({std::string(3 * 513, '1')}, tei)
        == "input[0] is too long: about 513 tokens > 512");
}
