#include "base64.hpp"

#include "embedrt/protocol/openai.hpp"

#include <cstdint>
#include <cstring>

namespace embedrt::detail {

namespace {

constexpr char b64_alphabet[]
    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr unsigned char b64_invalid = 0xFF;

struct b64_table {
  unsigned char value[256];
  constexpr b64_table() : value() {
    for (auto& v : value)
      v = b64_invalid;
    for (unsigned char i = 0; i < 64; ++i)
      value[static_cast<unsigned char>(b64_alphabet[i])] = i;
  }
};

constexpr b64_table b64_decode_table;

constexpr bool big_endian_host = __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__;

uint32_t byteswap32(uint32_t x) {
  return __builtin_bswap32(x);
}

// The little-endian bytes of `values` (on a big-endian host, swapped into
// `swapped`).
const unsigned char* little_endian_bytes(const std::vector<float>& values,
                                         std::vector<unsigned char>& swapped) {
  const auto* src = reinterpret_cast<const unsigned char*>(values.data());
  if constexpr (big_endian_host) {
    swapped.resize(values.size() * sizeof(float));
    for (std::size_t i = 0; i < values.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &values[i], sizeof(bits));
      bits = byteswap32(bits);
      std::memcpy(swapped.data() + i * 4, &bits, sizeof(bits));
    }
    src = swapped.data();
  }
  return src;
}

// Turns little-endian float32 values read as bytes into host order.
void to_host_order(std::vector<float>& values) {
  if constexpr (big_endian_host) {
    for (auto& f : values) {
      uint32_t bits;
      std::memcpy(&bits, &f, sizeof(bits));
      bits = byteswap32(bits);
      std::memcpy(&f, &bits, sizeof(bits));
    }
  }
}

// Decodes the `full_quads` unpadded groups of 4 characters at `src` into
// 3 bytes each at `dst`; advances both. False on an invalid character.
bool decode_quads(const unsigned char*& src, unsigned char*& dst,
                  std::size_t full_quads) {
  const auto& tbl = b64_decode_table.value;
  for (std::size_t q = 0; q < full_quads; ++q, src += 4, dst += 3) {
    uint32_t a = tbl[src[0]], b = tbl[src[1]], c = tbl[src[2]], d = tbl[src[3]];
    if ((a | b | c | d) & 0x80)
      return false;
    uint32_t v = (a << 18) | (b << 12) | (c << 6) | d;
    dst[0] = static_cast<unsigned char>(v >> 16);
    dst[1] = static_cast<unsigned char>(v >> 8);
    dst[2] = static_cast<unsigned char>(v);
  }
  return true;
}

// Decodes the last group of 4 characters, which ends in `pad` (1 or 2) '='.
bool decode_padded_quad(const unsigned char* src, unsigned char* dst,
                        std::size_t pad) {
  const auto& tbl = b64_decode_table.value;
  uint32_t a = tbl[src[0]], b = tbl[src[1]];
  uint32_t c = pad == 1 ? tbl[src[2]] : 0;
  if ((a | b | c) & 0x80)
    return false;
  uint32_t v = (a << 18) | (b << 12) | (c << 6);
  dst[0] = static_cast<unsigned char>(v >> 16);
  if (pad == 1)
    dst[1] = static_cast<unsigned char>(v >> 8);
  return true;
}

} // namespace

void append_base64_floats(std::string& out, const std::vector<float>& values) {
  const std::size_t nbytes = values.size() * sizeof(float);
  std::vector<unsigned char> swapped;
  const auto* src = little_endian_bytes(values, swapped);
  const std::size_t old_size = out.size();
  out.resize(old_size + (nbytes + 2) / 3 * 4);
  char* dst = out.data() + old_size;
  std::size_t i = 0;
  for (; i + 3 <= nbytes; i += 3) {
    uint32_t v = (uint32_t{src[i]} << 16) | (uint32_t{src[i + 1]} << 8)
        | uint32_t{src[i + 2]};
    *dst++ = b64_alphabet[(v >> 18) & 0x3F];
    *dst++ = b64_alphabet[(v >> 12) & 0x3F];
    *dst++ = b64_alphabet[(v >> 6) & 0x3F];
    *dst++ = b64_alphabet[v & 0x3F];
  }
  if (std::size_t rest = nbytes - i; rest > 0) {
    uint32_t v = uint32_t{src[i]} << 16;
    if (rest == 2)
      v |= uint32_t{src[i + 1]} << 8;
    *dst++ = b64_alphabet[(v >> 18) & 0x3F];
    *dst++ = b64_alphabet[(v >> 12) & 0x3F];
    *dst++ = rest == 2 ? b64_alphabet[(v >> 6) & 0x3F] : '=';
    *dst++ = '=';
  }
}

bool decode_base64_into(std::string_view text, std::vector<float>& out) {
  const std::size_t n = text.size();
  if (n % 4 != 0)
    return false;
  if (n == 0) {
    out.clear();
    return true;
  }
  const auto* src = reinterpret_cast<const unsigned char*>(text.data());
  std::size_t pad = 0;
  if (src[n - 1] == '=')
    pad = src[n - 2] == '=' ? 2 : 1;
  const std::size_t nbytes = n / 4 * 3 - pad;
  if (nbytes % sizeof(float) != 0)
    return false;
  out.resize(nbytes / sizeof(float));
  auto* dst = reinterpret_cast<unsigned char*>(out.data());
  if (!decode_quads(src, dst, n / 4 - (pad > 0 ? 1 : 0)))
    return false;
  if (pad > 0 && !decode_padded_quad(src, dst, pad))
    return false;
  to_host_order(out);
  return true;
}

} // namespace embedrt::detail

namespace embedrt::openai {

std::string encode_base64_floats(const std::vector<float>& values) {
  std::string out;
  detail::append_base64_floats(out, values);
  return out;
}

std::optional<std::vector<float>> decode_base64_floats(std::string_view text) {
  std::vector<float> out;
  if (!detail::decode_base64_into(text, out))
    return std::nullopt;
  return out;
}

} // namespace embedrt::openai
