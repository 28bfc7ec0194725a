#include "embedrt/protocol/provider.hpp"

#include <catch2/catch.hpp>
#include <string>

using namespace embedrt;

TEST_CASE("provider names round-trip", "[provider]") {
  for (auto kind : {provider_kind::openai, provider_kind::azure,
                    provider_kind::tei, provider_kind::generic}) {
    auto parsed = parse_provider(to_string(kind));
    REQUIRE(parsed);
    CHECK(*parsed == kind);
  }
  CHECK(std::string{to_string(provider_kind::azure)} == "azure");
  CHECK_FALSE(parse_provider("OpenAI"));
  CHECK_FALSE(parse_provider(""));
  CHECK_FALSE(parse_provider("cohere"));
}

TEST_CASE("provider profiles carry the documented limits", "[provider]") {
  auto openai = profile_for(provider_kind::openai);
  CHECK(openai.kind == provider_kind::openai);
  CHECK(openai.max_inputs == 2048);
  CHECK(openai.max_tokens_per_input == 8192);
  CHECK(openai.max_tokens_per_request == 300000);
  auto azure = profile_for(provider_kind::azure);
  CHECK(azure.kind == provider_kind::azure);
  CHECK(azure.max_inputs == 2048);
  CHECK(azure.max_tokens_per_input == 8192);
  CHECK(azure.max_tokens_per_request == 300000);
  auto tei = profile_for(provider_kind::tei);
  CHECK(tei.kind == provider_kind::tei);
  CHECK(tei.max_inputs == 32);
  CHECK(tei.max_tokens_per_input == 512);
  CHECK(tei.max_tokens_per_request == 32 * 512);
  auto generic = profile_for(provider_kind::generic);
  CHECK(generic.kind == provider_kind::generic);
  CHECK(generic.max_inputs == 2048);
  CHECK(generic.max_tokens_per_input == 8192);
  CHECK(generic.max_tokens_per_request == 300000);
  // A caller may send OpenAI's 2,048 inputs to any of them (split into
  // upstream calls of max_inputs); token arrays go to all but TEI.
  for (auto& p : {openai, azure, tei, generic})
    CHECK(p.max_request_inputs == 2048);
  CHECK(openai.token_inputs);
  CHECK(azure.token_inputs);
  CHECK(generic.token_inputs);
  CHECK_FALSE(tei.token_inputs);
  for (auto& p : {openai, azure, tei, generic}) {
    CHECK(p.max_input_bytes > 0);
    CHECK(p.max_request_bytes >= p.max_input_bytes);
  }
}

TEST_CASE("token estimate is never below known cl100k counts", "[provider]") {
  // Counts from tiktoken's cl100k_base encoding.
  struct known {
    const char* text;
    std::size_t tokens;
  };
  const known samples[] = {
      {"hello world", 2},
      {"tiktoken is great!", 6},
      {"The quick brown fox jumps over the lazy dog.", 10},
      {"12345678901234567890", 7}, // digits are grouped by three
      {"a", 1},
      {" ", 1},
  };
  for (const auto& s : samples) {
    INFO(s.text);
    CHECK(estimate_tokens(s.text) >= s.tokens);
  }
}

TEST_CASE("token estimate follows the documented counting rules",
          "[provider]") {
  CHECK(estimate_tokens("") == 0);
  // Letters in pieces of up to 4, each other ASCII character one token.
  CHECK(estimate_tokens("abcd") == 1);
  CHECK(estimate_tokens("abcde") == 2);
  CHECK(estimate_tokens("hello world") == 5); // hell|o, ' ', worl|d
  // Digits in groups of up to 3; a letter/digit switch starts a new piece.
  CHECK(estimate_tokens("123") == 1);
  CHECK(estimate_tokens("1234") == 2);
  CHECK(estimate_tokens("3f9a") == 4);
  CHECK(estimate_tokens("a,b") == 3);
  // Non-ASCII: 2-byte sequences 1, 3-byte 2, 4-byte 4 tokens.
  CHECK(estimate_tokens("\xC3\xA9") == 1);         // é
  CHECK(estimate_tokens("\xE4\xB8\xAD") == 2);     // 中
  CHECK(estimate_tokens("\xF0\x9F\x98\x80") == 4); // 😀
  // Stray or truncated bytes count one token each.
  CHECK(estimate_tokens("\x80") == 1);
  CHECK(estimate_tokens("\xE4\xB8") == 2);
  // Long inputs scale linearly.
  CHECK(estimate_tokens(std::string(4000, 'a')) == 1000);
  CHECK(estimate_tokens(std::string(4000, ' ')) == 4000);
}
