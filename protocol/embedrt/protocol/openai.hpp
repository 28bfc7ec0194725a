// The OpenAI embeddings wire format (POST /v1/embeddings): request and
// response codecs for both the client side (runtime -> upstream) and the
// server side (gateway, built-in mock), error bodies and strict validation.
//
// All functions are pure and thread-safe; failures are `caf::error`s of the
// embedrt category (see errc.hpp): `invalid_input` for a bad request,
// `invalid_response` for a bad upstream response, each with a distinct,
// descriptive detail message.
#pragma once

#include "embedrt/protocol/messages.hpp"
#include "embedrt/protocol/provider.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace embedrt::openai {

/// The `encoding_format` of a request.
enum class encoding : uint8_t {
  float32, ///< "float": JSON arrays of numbers.
  base64,  ///< "base64": little-endian float32, base64-encoded.
};

/// Returns "float" or "base64".
const char* to_string(encoding x);

/// A decoded (server side) or to-be-encoded (client side) request body.
struct embeddings_request {
  std::string model;
  /// The texts; empty when the inputs are token arrays.
  std::vector<std::string> input;
  /// Token-array inputs (`[1,2]` decodes as one, `[[1,2],[3]]` as two); sent
  /// as an array of integer arrays. Exactly one of `input` and `token_input`
  /// is non-empty in a decoded request; when encoding, a non-empty
  /// `token_input` is sent instead of `input`.
  std::vector<std::vector<int32_t>> token_input;
  /// True if `input` was / should be sent as a JSON array (false: a single
  /// string; then `input.size() == 1`).
  bool input_is_array = true;
  /// `dimensions`, if present (must be > 0).
  std::optional<int32_t> dimensions;
  encoding encoding_format = encoding::float32;
  /// `user`, if non-empty.
  std::string user;
};

/// Encodes a request body as compact JSON. Omits `dimensions` and `user` when
/// absent and `encoding_format` when it is float32.
std::string encode_request(const embeddings_request& req);

/// Decodes a request body strictly (server side). Rejects with
/// `invalid_input`: malformed JSON, a non-object body, a missing or non-string
/// `model`, a missing `input`, an `input` that is not a string, an array of
/// strings, an array of token ids or an array of such arrays (OpenAI's four
/// shapes; a token id is an integer in [0, 2^31-1], a token array must not be
/// empty, texts and token arrays do not mix), an empty array, a
/// `dimensions` that is not a positive integer, an unknown `encoding_format`,
/// a non-string `user`. Optional members that are JSON null count as absent.
/// `model` and `user` must be valid UTF-8; input text content is not
/// validated here: call `validate_inputs` for that.
caf::expected<embeddings_request> decode_request(std::string_view body);

/// Validates caller inputs against a provider profile before any network
/// I/O. Rejects with `invalid_input` (detail names the offending index):
/// no inputs, more than `max_inputs`, an empty text (OpenAI's only
/// refusal of a text by its content: white space alone is valid), invalid
/// UTF-8, a NUL character, a text over `max_input_bytes`, estimated
/// tokens over `max_tokens_per_input`, or the sum over
/// `max_tokens_per_request`. Set `check_request_total` to false when the
/// caller's inputs will be split across several upstream requests. If
/// `tokens` is given, it receives the estimated tokens of each input (in
/// order; complete only when no error is returned), so that callers need not
/// estimate again.
caf::error validate_inputs(const std::vector<std::string>& inputs,
                           const provider_profile& profile,
                           bool check_request_total = true,
                           std::vector<int64_t>* tokens = nullptr);

/// The same for token-array inputs: rejects with `invalid_input` a profile
/// that cannot take them (`token_inputs` false), no inputs, more than
/// `max_inputs`, an empty array, a negative id, more ids than
/// `max_tokens_per_input`, or (if `check_request_total`) more than
/// `max_tokens_per_request` in total. `tokens` receives each input's exact
/// count (its number of ids).
caf::error
validate_token_inputs(const std::vector<std::vector<int32_t>>& inputs,
                      const provider_profile& profile,
                      bool check_request_total = true,
                      std::vector<int64_t>* tokens = nullptr);

/// Returns true if `text` is well-formed UTF-8 (no overlongs, surrogates or
/// code points above U+10FFFF).
bool is_valid_utf8(std::string_view text);

/// A decoded (client side) or to-be-encoded (server side) response.
struct embeddings_response {
  std::string model;
  /// One vector per input, ordered by `index`.
  std::vector<std::vector<float>> data;
  token_usage usage;
};

/// Encodes a response body (server side); vectors are base64 little-endian
/// float32 when `enc` is base64, JSON numbers otherwise (shortest form that
/// reads back as the same float; a non-finite value, which JSON cannot
/// express, is written as null).
std::string encode_response(const embeddings_response& resp, encoding enc);

/// Writes the body `encode_response` would, piece by piece, so that a large
/// response is never held whole as text (`embedrt serve` sends the pieces
/// as HTTP chunks). It owns the response and frees each vector once it is
/// written, so the memory held falls as the body goes out.
class response_writer {
 public:
  response_writer(embeddings_response resp, encoding enc);

  /// Appends the next piece to `out`: whole vectors until `out` holds at
  /// least `target` bytes (at least one vector), or the rest of the body.
  /// Returns false once the body is complete (nothing was appended).
  bool next(std::string& out, std::size_t target);

 private:
  embeddings_response resp_;
  encoding enc_;
  /// The next vector to write; data.size() + 1 once the tail is written.
  std::size_t next_ = 0;
};

/// What the client expects of a response; used for strict validation.
struct response_expectation {
  /// Number of inputs sent: exactly this many vectors must come back.
  std::size_t inputs = 0;
  /// If set, every vector must have exactly this dimension.
  std::optional<int32_t> dimensions;
  /// The encoding requested (a base64 request accepts float arrays too,
  /// since some servers ignore `encoding_format`).
  encoding encoding_format = encoding::float32;
};

/// Decodes and validates a response body (client side). Each failure is an
/// `invalid_response` with a distinct detail: malformed JSON, missing or
/// non-array `data`, an item without a valid integer `index`, an index out of
/// range, a duplicate index, a missing index (fewer vectors than inputs), more
/// vectors than inputs, an embedding that is neither an array of numbers nor
/// a valid base64 string (length a multiple of 4 bytes once decoded), an empty
/// vector, inconsistent dimensions, a dimension different from the requested
/// one, and a non-finite value (NaN or infinity). The result's `data` is
/// ordered by index.
caf::expected<embeddings_response>
decode_response(std::string_view body, const response_expectation& expect);

/// The OpenAI error body `{"error":{"message","type","param","code"}}`.
struct api_error {
  std::string message;
  std::string type;
  /// Empty when the body had null.
  std::string param;
  /// Empty when the body had null.
  std::string code;
};

/// Encodes an error body (null for empty param/code).
std::string encode_error(const api_error& err);

/// Decodes an error body; `std::nullopt` if the body is not an OpenAI-shaped
/// error (the caller then uses the raw status). Also understands the shapes
/// of text-embeddings-inference (`{"error":"...","error_type":"..."}`) and
/// vLLM (`{"object":"error","message",...}`); numeric codes become strings.
std::optional<api_error> decode_error(std::string_view body);

/// Base64 helpers for float32 vectors (little-endian, standard alphabet with
/// padding).
std::string encode_base64_floats(const std::vector<float>& values);
/// Returns std::nullopt if `text` is not valid base64 or does not decode to a
/// whole number of float32 values.
std::optional<std::vector<float>> decode_base64_floats(std::string_view text);

} // namespace embedrt::openai
