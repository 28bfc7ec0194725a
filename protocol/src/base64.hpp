// Base64 (standard alphabet, with padding) of little-endian float32 vectors,
// the `encoding_format: "base64"` of the OpenAI embeddings API (internal to
// embedrt_protocol; openai.hpp has the public entry points).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace embedrt::detail {

/// Appends the base64 text of `values` (no quotes).
void append_base64_floats(std::string& out, const std::vector<float>& values);

/// Decodes padded standard base64 holding little-endian float32 values into
/// `out` (resized to fit). Returns false on any invalid character, bad length
/// or a byte count that is not a multiple of 4.
bool decode_base64_into(std::string_view text, std::vector<float>& out);

} // namespace embedrt::detail
