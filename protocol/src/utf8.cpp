#include "utf8.hpp"

#include "embedrt/protocol/openai.hpp"

#include <cstring>

namespace embedrt::openai {

bool is_valid_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    // Fast path: 8 ASCII bytes at a time.
    while (end - p >= 8) {
      uint64_t chunk;
      std::memcpy(&chunk, p, sizeof(chunk));
      if (chunk & 0x8080808080808080ULL)
        break;
      p += 8;
    }
    if (p == end)
      break;
    if (detail::decode_utf8(p, end) < 0)
      return false;
  }
  return true;
}

} // namespace embedrt::openai
