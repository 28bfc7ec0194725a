// Provider profiles: the limits of each kind of OpenAI-compatible upstream and
// a conservative token estimate used to enforce them before any network I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace embedrt {

enum class provider_kind : uint8_t {
  /// api.openai.com and compatible gateways (vLLM, Ollama's /v1).
  openai,
  /// Azure OpenAI: `api-key` header, deployment path, `api-version`.
  azure,
  /// Hugging Face text-embeddings-inference (OpenAI route, small batches).
  tei,
  /// Anything else that speaks the OpenAI embeddings API.
  generic,
};

/// Returns "openai", "azure", "tei" or "generic".
const char* to_string(provider_kind x);

/// Parses a provider name (case-sensitive, as produced by `to_string`).
std::optional<provider_kind> parse_provider(std::string_view name);

/// Limits of one provider kind. All limits are inclusive.
struct provider_profile {
  provider_kind kind = provider_kind::openai;
  /// Max inputs per upstream request (OpenAI: 2048, TEI: 32): the batching
  /// limit of one upstream call.
  std::size_t max_inputs = 2048;
  /// Max inputs in one caller's request, before it is split into upstream
  /// calls (OpenAI refuses more than 2048 with a 400 on `input`).
  std::size_t max_request_inputs = 2048;
  /// Whether the upstream takes token-array inputs (OpenAI's arrays of token
  /// ids). TEI does not: its OpenAI route takes text only, and ids from a
  /// caller's tiktoken mean nothing to its models' tokenizers.
  bool token_inputs = true;
  /// Max estimated tokens per input (OpenAI: 8192).
  std::size_t max_tokens_per_input = 8192;
  /// Max estimated tokens per upstream request (OpenAI: 300,000).
  std::size_t max_tokens_per_request = 300000;
  /// Max bytes of one input text (a hard cap independent of the estimate).
  std::size_t max_input_bytes = 256 * 1024;
  /// Max bytes of one upstream request body.
  std::size_t max_request_bytes = 8 * 1024 * 1024;
};

/// Returns the built-in profile of a provider kind.
provider_profile profile_for(provider_kind kind);

/// A conservative (over-)estimate of the tokens a BPE tokenizer such as
/// cl100k_base produces for `text`: never below the real count for ordinary
/// text, so limits enforced on it are never exceeded upstream. Counts each
/// word piece of up to 4 ASCII letters as one token, each group of up to 3
/// ASCII digits as one token (cl100k splits numbers into groups of 3), each
/// other ASCII character as one token, and each non-ASCII code point as one
/// token (2-byte UTF-8), two tokens (3-byte: CJK and other BMP scripts, which
/// BPE vocabularies often split) or four tokens (4-byte: emoji and rare
/// scripts, usually tokenized byte by byte). Invalid UTF-8 bytes count one
/// token each.
std::size_t estimate_tokens(std::string_view text);

} // namespace embedrt
