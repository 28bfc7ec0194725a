#include "embedrt/protocol/provider.hpp"

namespace embedrt {

const char* to_string(provider_kind x) {
  switch (x) {
    case provider_kind::openai: return "openai";
    case provider_kind::azure: return "azure";
    case provider_kind::tei: return "tei";
    case provider_kind::generic: return "generic";
  }
  return "unknown";
}

std::optional<provider_kind> parse_provider(std::string_view name) {
  if (name == "openai")
    return provider_kind::openai;
  if (name == "azure")
    return provider_kind::azure;
  if (name == "tei")
    return provider_kind::tei;
  if (name == "generic")
    return provider_kind::generic;
  return std::nullopt;
}

provider_profile profile_for(provider_kind kind) {
  provider_profile result;
  result.kind = kind;
  switch (kind) {
    case provider_kind::openai:
    case provider_kind::azure:
      // OpenAI's documented limits for /v1/embeddings: at most 2048 inputs
      // per request, 8192 tokens per input (text-embedding-3-*, ada-002) and
      // 300,000 tokens summed over all inputs of one request. Azure OpenAI
      // serves the same models behind the same API and enforces the same
      // limits for current API versions.
      result.max_inputs = 2048;
      result.max_tokens_per_input = 8192;
      result.max_tokens_per_request = 300000;
      break;
    case provider_kind::tei:
      // text-embeddings-inference defaults: --max-client-batch-size 32 and
      // --max-input-length 512 (the context of the BERT-style models it
      // usually serves). A request can therefore carry at most 32 * 512
      // tokens. Deployments that raise these flags can use `generic`.
      result.max_inputs = 32;
      result.max_tokens_per_input = 512;
      result.max_tokens_per_request = 32 * 512;
      // Its /v1/embeddings `input` is a string or an array of strings.
      result.token_inputs = false;
      break;
    case provider_kind::generic:
      // Unknown OpenAI-compatible servers (vLLM, Ollama, LiteLLM, ...): assume
      // OpenAI's limits, which such servers are built to accept. Token arrays
      // are passed on (vLLM takes them); a server that refuses them (Ollama)
      // answers 400 and the reply names the inputs.
      result.max_inputs = 2048;
      result.max_tokens_per_input = 8192;
      result.max_tokens_per_request = 300000;
      break;
  }
  return result;
}

namespace {

enum class char_class : uint8_t { letter, digit, other_ascii, non_ascii };

// One 256-entry table keeps the hot loop free of branches on ranges.
struct class_table {
  char_class cls[256];
  constexpr class_table() : cls() {
    for (int i = 0; i < 256; ++i) {
      if ((i >= 'a' && i <= 'z') || (i >= 'A' && i <= 'Z'))
        cls[i] = char_class::letter;
      else if (i >= '0' && i <= '9')
        cls[i] = char_class::digit;
      else if (i < 0x80)
        cls[i] = char_class::other_ascii;
      else
        cls[i] = char_class::non_ascii;
    }
  }
};

constexpr class_table classes;

} // namespace

std::size_t estimate_tokens(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  std::size_t tokens = 0;
  while (p < end) {
    switch (classes.cls[*p]) {
      case char_class::letter: {
        const auto* start = p;
        while (p < end && classes.cls[*p] == char_class::letter)
          ++p;
        tokens += (static_cast<std::size_t>(p - start) + 3) / 4;
        break;
      }
      case char_class::digit: {
        const auto* start = p;
        while (p < end && classes.cls[*p] == char_class::digit)
          ++p;
        tokens += (static_cast<std::size_t>(p - start) + 2) / 3;
        break;
      }
      case char_class::other_ascii:
        ++tokens;
        ++p;
        break;
      case char_class::non_ascii: {
        // The lead byte gives the sequence length; continuation bytes that
        // follow are consumed with it. Stray or truncated bytes count one
        // token each (byte-level BPE never needs more than one per byte).
        unsigned char lead = *p++;
        std::size_t len = lead >= 0xF0 ? 4
            : lead >= 0xE0             ? 3
            : lead >= 0xC0             ? 2
                                       : 1;
        std::size_t taken = 1;
        while (taken < len && p < end && (*p & 0xC0) == 0x80) {
          ++p;
          ++taken;
        }
        if (taken != len || len == 1)
          tokens += taken;
        else
          tokens += len == 2 ? 1 : len == 3 ? 2 : 4;
        break;
      }
    }
  }
  return tokens;
}

} // namespace embedrt
