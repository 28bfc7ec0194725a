// UTF-8 decoding for the checks of openai.hpp (`is_valid_utf8`,
// `validate_inputs`); internal to embedrt_protocol.
#pragma once

#include <cstddef>
#include <cstdint>

namespace embedrt::detail {

/// Decodes one code point at `p` (p < end) and advances `p`. Returns -1 for an
/// ill-formed sequence (RFC 3629: no overlongs, no surrogates, <= U+10FFFF,
/// no truncation); `p` then points at the offending lead byte.
inline int32_t decode_utf8(const unsigned char*& p, const unsigned char* end) {
  unsigned char c = *p;
  if (c < 0x80) {
    ++p;
    return c;
  }
  auto avail = static_cast<std::size_t>(end - p);
  auto cont = [](unsigned char x) {
    return (x & 0xC0) == 0x80;
  };
  if (c >= 0xC2 && c <= 0xDF) {
    if (avail < 2 || !cont(p[1]))
      return -1;
    int32_t cp = ((c & 0x1F) << 6) | (p[1] & 0x3F);
    p += 2;
    return cp;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (avail < 3 || !cont(p[1]) || !cont(p[2]))
      return -1;
    if (c == 0xE0 && p[1] < 0xA0) // overlong
      return -1;
    if (c == 0xED && p[1] > 0x9F) // UTF-16 surrogates
      return -1;
    int32_t cp = ((c & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    p += 3;
    return cp;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (avail < 4 || !cont(p[1]) || !cont(p[2]) || !cont(p[3]))
      return -1;
    if (c == 0xF0 && p[1] < 0x90) // overlong
      return -1;
    if (c == 0xF4 && p[1] > 0x8F) // above U+10FFFF
      return -1;
    int32_t cp = ((c & 0x07) << 18) | ((p[1] & 0x3F) << 12)
        | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    p += 4;
    return cp;
  }
  // 0x80-0xC1 (continuation or overlong lead) and 0xF5-0xFF.
  return -1;
}

} // namespace embedrt::detail
