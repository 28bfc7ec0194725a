// Writing JSON text by hand: the one string escaper of embedrt, used by the
// OpenAI codecs (openai.hpp) and by the output of `embedrt embed`.
#pragma once

#include <string>
#include <string_view>

namespace embedrt {

/// Appends `s` to `out` as a JSON string literal: `"` and `\` escaped, the
/// control characters below 0x20 as `\n`, `\r`, `\t`, `\b`, `\f` or `\u00xx`
/// (lowercase hex). Bytes >= 0x80 pass through unchanged: callers validate
/// UTF-8 before text reaches an encoder.
void append_json_string(std::string& out, std::string_view s);

} // namespace embedrt
