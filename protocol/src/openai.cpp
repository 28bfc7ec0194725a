#include "embedrt/protocol/openai.hpp"

#include "embedrt/protocol/errc.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

namespace embedrt::openai {

namespace {

// -- JSON writing -------------------------------------------------------------

constexpr char hex_digits[] = "0123456789abcdef";

// Appends `s` as a JSON string literal. Bytes >= 0x80 pass through unchanged:
// callers validate UTF-8 before text reaches an encoder.
void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  const char* run = s.data();
  const char* end = s.data() + s.size();
  for (const char* p = run; p != end; ++p) {
    auto c = static_cast<unsigned char>(*p);
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    out.append(run, p);
    run = p + 1;
    switch (c) {
      case '"': out.append("\\\""); break;
      case '\\': out.append("\\\\"); break;
      case '\n': out.append("\\n"); break;
      case '\r': out.append("\\r"); break;
      case '\t': out.append("\\t"); break;
      case '\b': out.append("\\b"); break;
      case '\f': out.append("\\f"); break;
      default: {
        char buf[6]
            = {'\\', 'u', '0', '0', hex_digits[c >> 4], hex_digits[c & 0xF]};
        out.append(buf, sizeof(buf));
      }
    }
  }
  out.append(run, end);
  out.push_back('"');
}

template <class Int>
void append_int(std::string& out, Int value) {
  char buf[24];
  auto res = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, res.ptr);
}

// Shortest representation that reads back as the same float32. JSON has no
// NaN or infinity; a server never sends them, and if one slips into a vector
// it is written as null, which every strict client rejects.
void append_float(std::string& out, float value) {
  if (!std::isfinite(value)) {
    out.append("null");
    return;
  }
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), value);
  out.append(buf, res.ptr);
}

// -- base64 -------------------------------------------------------------------

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

void append_base64_floats(std::string& out, const std::vector<float>& values) {
  const std::size_t nbytes = values.size() * sizeof(float);
  const auto* src = reinterpret_cast<const unsigned char*>(values.data());
  std::vector<unsigned char> swapped;
  if constexpr (big_endian_host) {
    swapped.resize(nbytes);
    for (std::size_t i = 0; i < values.size(); ++i) {
      uint32_t bits;
      std::memcpy(&bits, &values[i], sizeof(bits));
      bits = byteswap32(bits);
      std::memcpy(swapped.data() + i * 4, &bits, sizeof(bits));
    }
    src = swapped.data();
  }
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

// Decodes padded standard base64 holding little-endian float32 values into
// `out` (resized to fit). Returns false on any invalid character, bad length
// or a byte count that is not a multiple of 4.
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
  const auto& tbl = b64_decode_table.value;
  const std::size_t full_quads = n / 4 - (pad > 0 ? 1 : 0);
  for (std::size_t q = 0; q < full_quads; ++q, src += 4, dst += 3) {
    uint32_t a = tbl[src[0]], b = tbl[src[1]], c = tbl[src[2]], d = tbl[src[3]];
    if ((a | b | c | d) & 0x80)
      return false;
    uint32_t v = (a << 18) | (b << 12) | (c << 6) | d;
    dst[0] = static_cast<unsigned char>(v >> 16);
    dst[1] = static_cast<unsigned char>(v >> 8);
    dst[2] = static_cast<unsigned char>(v);
  }
  if (pad > 0) {
    uint32_t a = tbl[src[0]], b = tbl[src[1]];
    uint32_t c = pad == 1 ? tbl[src[2]] : 0;
    if ((a | b | c) & 0x80)
      return false;
    uint32_t v = (a << 18) | (b << 12) | (c << 6);
    dst[0] = static_cast<unsigned char>(v >> 16);
    if (pad == 1)
      dst[1] = static_cast<unsigned char>(v >> 8);
  }
  if constexpr (big_endian_host) {
    for (auto& f : out) {
      uint32_t bits;
      std::memcpy(&bits, &f, sizeof(bits));
      bits = byteswap32(bits);
      std::memcpy(&f, &bits, sizeof(bits));
    }
  }
  return true;
}

// -- UTF-8 --------------------------------------------------------------------

// Decodes one code point at `p` (p < end) and advances `p`. Returns -1 for an
// ill-formed sequence (RFC 3629: no overlongs, no surrogates, <= U+10FFFF,
// no truncation); `p` then points at the offending lead byte.
int32_t decode_utf8(const unsigned char*& p, const unsigned char* end) {
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

// Unicode White_Space (plus the ASCII controls a tokenizer ignores).
bool is_space(int32_t cp) {
  switch (cp) {
    case ' ':
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case 0x85:
    case 0xA0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202F:
    case 0x205F:
    case 0x3000: return true;
    default: return cp >= 0x2000 && cp <= 0x200A;
  }
}

// -- JSON reading -------------------------------------------------------------
//
// A strict, single-pass JSON reader on which the request, response and error
// decoders are built, each walking its own schema. It replaced RapidJSON
// after measuring and fuzzing: RapidJSON 1.1 handles strings byte by byte
// through its stack (about 2 ns per byte of a base64 vector), copies every
// number with kParseNumbersAsStringsFlag before it can be converted exactly,
// and its internal stack does arithmetic on a null pointer (UBSan) on the
// first push. Here strings are scanned 8 bytes at a time and viewed in place,
// and numbers are converted straight from the body. The tests use RapidJSON
// as the reference for what is valid JSON.
//
// Grammar: RFC 8259 (no NaN/Infinity, no comments, no trailing commas, one
// value, nothing after it); a \u escape of a lone surrogate is rejected as it
// cannot be UTF-8. Unknown members are validated and skipped with an explicit
// stack, so nesting depth cannot exhaust the call stack. A semantic failure
// (a member of the wrong type) is reported when its value is complete, before
// the rest of the body is read, as a SAX reader would.

// Word-at-a-time scan for the bytes that end the fast path of a string:
// '"', '\\' and control characters (< 0x20).
constexpr uint64_t ones = 0x0101010101010101ULL;
constexpr uint64_t highs = 0x8080808080808080ULL;

inline bool has_special_byte(uint64_t w) {
  auto has_zero = [](uint64_t v) {
    return (v - ones) & ~v & highs;
  };
  auto below_0x20 = (w - ones * 0x20) & ~w & highs;
  return below_0x20 | has_zero(w ^ (ones * '"')) | has_zero(w ^ (ones * '\\'));
}

constexpr double exact_powers_of_ten[]
    = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// A number token as scanned: its text plus the pieces the fast conversion
// needs (significand of at most 19 digits and a decimal exponent).
struct number_token {
  const char* begin = nullptr;
  const char* end = nullptr;
  uint64_t mantissa = 0;
  int32_t exponent = 0;
  bool negative = false;
  bool truncated = false; // more than 19 significant digits
  bool integer = true;    // no fraction and no exponent
};

// Converts to the correctly rounded float32. Fast path (Clinger): a
// significand <= 2^53 and a power of ten <= 10^22 make the double quotient
// or product correctly rounded; rounding that double to float is then exact
// unless it lies exactly halfway between two floats, or in the subnormal
// range, which take the slow path. Returns false for non-finite results.
bool to_float(const number_token& t, float& out) {
  if (!t.truncated && t.mantissa <= (uint64_t{1} << 53) && t.exponent >= -22
      && t.exponent <= 22) {
    auto d = static_cast<double>(t.mantissa);
    if (t.exponent < 0)
      d /= exact_powers_of_ten[-t.exponent];
    else
      d *= exact_powers_of_ten[t.exponent];
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof(bits));
    constexpr uint64_t dropped_mask = (uint64_t{1} << 29) - 1;
    constexpr uint64_t halfway = uint64_t{1} << 28;
    const bool normal_float
        = d >= static_cast<double>(std::numeric_limits<float>::min());
    if (d == 0 || (normal_float && (bits & dropped_mask) != halfway)) {
      auto f = static_cast<float>(d);
      if (!std::isfinite(f))
        return false;
      out = t.negative ? -f : f;
      return true;
    }
  }
  float value = 0;
  auto res = std::from_chars(t.begin, t.end, value);
  if (res.ec == std::errc::result_out_of_range) {
    // libstdc++ reports underflow like overflow: underflow reads as (signed)
    // zero or a subnormal, overflow is not finite.
    double wide = 0;
    auto wres = std::from_chars(t.begin, t.end, wide);
    if (wres.ec != std::errc{} || std::fabs(wide) >= 1.0)
      return false;
    value = static_cast<float>(wide);
  } else if (res.ec != std::errc{} || res.ptr != t.end) {
    return false;
  }
  if (!std::isfinite(value))
    return false;
  out = value;
  return true;
}

// Base of the decoders below: a cursor over a JSON body with strict lexing
// and the detail of the first failure.
class json_reader {
 public:
  explicit json_reader(std::string_view body)
      : begin_(body.data()), p_(body.data()), end_(body.data() + body.size()) {}

 protected:
  // -- failures ---------------------------------------------------------------

  bool syntax_error(const char* at, const char* what) {
    error_ = "malformed JSON at offset ";
    append_int(error_, at - begin_);
    error_ += ": ";
    error_ += what;
    return false;
  }

  bool fail(std::string detail) {
    error_ = std::move(detail);
    return false;
  }

  // A value of the wrong type: malformed JSON wins over the type error.
  bool reject_value(std::string detail) {
    if (!skip_value())
      return false;
    return fail(std::move(detail));
  }

  // -- lexing -----------------------------------------------------------------

  void skip_ws() {
    while (p_ < end_
           && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t'))
      ++p_;
  }

  // The byte at p_, or '\0' at the end (a NUL byte in the body is never
  // valid JSON outside strings either).
  char cur() const {
    return p_ < end_ ? *p_ : '\0';
  }

  // Skips whitespace and returns the next byte (see cur()).
  char peek() {
    skip_ws();
    return cur();
  }

  bool expect_char(char c, const char* what) {
    if (peek() != c)
      return syntax_error(p_, p_ < end_ ? what : "unexpected end of input");
    ++p_;
    return true;
  }

  bool literal(std::string_view word) {
    if (static_cast<std::size_t>(end_ - p_) < word.size()
        || std::string_view{p_, word.size()} != word)
      return syntax_error(p_, "invalid value");
    p_ += word.size();
    return true;
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  }

  bool read_hex4(uint32_t& out) {
    if (end_ - p_ < 4)
      return syntax_error(p_, "invalid \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      int h = hex_value(p_[i]);
      if (h < 0)
        return syntax_error(p_, "invalid \\u escape");
      v = (v << 4) | static_cast<uint32_t>(h);
    }
    p_ += 4;
    out = v;
    return true;
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // Reads a string at p_ (which is '"'). Without escapes `out` views the
  // body; otherwise the unescaped text is built in `scratch_`.
  bool read_string(std::string_view& out) {
    const char* start = ++p_;
    // Fast path: 8 bytes at a time until a special byte shows up.
    while (end_ - p_ >= 8) {
      uint64_t w;
      std::memcpy(&w, p_, sizeof(w));
      if (has_special_byte(w))
        break;
      p_ += 8;
    }
    while (p_ < end_) {
      auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        out = std::string_view{start, static_cast<std::size_t>(p_ - start)};
        ++p_;
        return true;
      }
      if (c == '\\')
        return read_escaped_string(start, out);
      if (c < 0x20)
        return syntax_error(p_, "control character in string");
      ++p_;
    }
    return syntax_error(start - 1, "unterminated string");
  }

  bool read_escaped_string(const char* start, std::string_view& out) {
    scratch_.assign(start, p_);
    while (p_ < end_) {
      auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        out = scratch_;
        return true;
      }
      if (c < 0x20)
        return syntax_error(p_, "control character in string");
      if (c != '\\') {
        scratch_.push_back(static_cast<char>(c));
        ++p_;
        continue;
      }
      const char* esc = p_++;
      if (p_ == end_)
        break;
      switch (*p_++) {
        case '"': scratch_.push_back('"'); break;
        case '\\': scratch_.push_back('\\'); break;
        case '/': scratch_.push_back('/'); break;
        case 'b': scratch_.push_back('\b'); break;
        case 'f': scratch_.push_back('\f'); break;
        case 'n': scratch_.push_back('\n'); break;
        case 'r': scratch_.push_back('\r'); break;
        case 't': scratch_.push_back('\t'); break;
        case 'u': {
          uint32_t cp = 0;
          if (!read_hex4(cp))
            return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF)
            return syntax_error(esc, "lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t low = 0;
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u')
              return syntax_error(esc, "unpaired surrogate in \\u escape");
            p_ += 2;
            if (!read_hex4(low))
              return false;
            if (low < 0xDC00 || low > 0xDFFF)
              return syntax_error(esc, "unpaired surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(scratch_, cp);
          break;
        }
        default: return syntax_error(esc, "invalid escape in string");
      }
    }
    return syntax_error(start - 1, "unterminated string");
  }

  // Scans a number at p_ per RFC 8259 and collects its significand and
  // exponent.
  bool read_number(number_token& t) {
    // Locals keep the hot loops in registers.
    const char* p = p_;
    const char* const end = end_;
    t = number_token{};
    t.begin = p;
    if (*p == '-') {
      t.negative = true;
      ++p;
    }
    uint64_t mantissa = 0; // wraps past 19 digits; then `truncated` is set
    const char* digits_begin = p;
    if (p < end && *p == '0') {
      ++p;
    } else if (p < end && *p >= '1' && *p <= '9') {
      while (p < end && is_digit(*p))
        mantissa = mantissa * 10 + static_cast<uint64_t>(*p++ - '0');
    } else {
      return syntax_error(t.begin, "invalid number");
    }
    auto total_digits = p - digits_begin;
    int32_t exponent = 0;
    if (p < end && *p == '.') {
      t.integer = false;
      const char* frac = ++p;
      while (p < end && is_digit(*p))
        mantissa = mantissa * 10 + static_cast<uint64_t>(*p++ - '0');
      if (p == frac) {
        p_ = p;
        return syntax_error(t.begin, "invalid number (missing fraction)");
      }
      total_digits += p - frac;
      exponent
          = -static_cast<int32_t>(std::min<std::ptrdiff_t>(p - frac, 1 << 20));
    }
    if (total_digits > 19) {
      // Leading zeros (and the point) are not significant.
      const char* q = digits_begin;
      while (q < p && (*q == '0' || *q == '.'))
        ++q;
      std::ptrdiff_t significant = 0;
      for (; q < p; ++q)
        significant += *q != '.';
      t.truncated = significant > 19;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
      t.integer = false;
      ++p;
      bool neg = false;
      if (p < end && (*p == '+' || *p == '-'))
        neg = *p++ == '-';
      if (p == end || !is_digit(*p)) {
        p_ = p;
        return syntax_error(t.begin, "invalid number (missing exponent)");
      }
      int32_t e = 0;
      while (p < end && is_digit(*p)) {
        if (e < 100000)
          e = e * 10 + (*p - '0');
        ++p;
      }
      exponent += neg ? -e : e;
    }
    p_ = p;
    t.end = p;
    t.mantissa = mantissa;
    t.exponent = exponent;
    return true;
  }

  static bool is_digit(char c) {
    return c >= '0' && c <= '9';
  }

  static bool starts_number(char c) {
    return c == '-' || is_digit(c);
  }

  bool read_int(const number_token& t, int64_t& out) {
    if (!t.integer)
      return false;
    auto res = std::from_chars(t.begin, t.end, out);
    return res.ec == std::errc{} && res.ptr == t.end;
  }

  // Validates and skips one value of any shape without recursion.
  bool skip_value() {
    std::string stack; // '{' or '[' per open container
    auto key_and_colon = [this] {
      if (peek() != '"')
        return syntax_error(p_,
                            p_ < end_ ? "expected a string key"
                                      : "unexpected end of input");
      std::string_view key;
      return read_string(key) && expect_char(':', "expected ':'");
    };
    for (;;) {
      switch (peek()) {
        case '{':
          ++p_;
          if (peek() == '}') {
            ++p_;
            break;
          }
          stack.push_back('{');
          if (!key_and_colon())
            return false;
          continue;
        case '[':
          ++p_;
          if (peek() == ']') {
            ++p_;
            break;
          }
          stack.push_back('[');
          continue;
        case '"': {
          std::string_view ignored;
          if (!read_string(ignored))
            return false;
          break;
        }
        case 't':
          if (!literal("true"))
            return false;
          break;
        case 'f':
          if (!literal("false"))
            return false;
          break;
        case 'n':
          if (!literal("null"))
            return false;
          break;
        default: {
          if (p_ == end_)
            return syntax_error(p_, "unexpected end of input");
          if (!starts_number(*p_))
            return syntax_error(p_, "invalid value");
          number_token t;
          if (!read_number(t))
            return false;
        }
      }
      // A value is complete: close containers until one continues.
      for (;;) {
        if (stack.empty())
          return true;
        char c = peek();
        if (c == ',') {
          ++p_;
          if (stack.back() == '{' && !key_and_colon())
            return false;
          break;
        }
        if (c == (stack.back() == '{' ? '}' : ']')) {
          ++p_;
          stack.pop_back();
          continue;
        }
        if (p_ == end_)
          return syntax_error(p_, "unexpected end of input");
        return syntax_error(p_,
                            stack.back() == '{' ? "expected ',' or '}'"
                                                : "expected ',' or ']'");
      }
    }
  }

  // Iterates the members of an object at p_ ('{'), calling on_member with
  // p_ at each value; on_member must consume the value.
  template <class F>
  bool for_each_member(F on_member) {
    ++p_;
    if (peek() == '}') {
      ++p_;
      return true;
    }
    for (;;) {
      if (peek() != '"')
        return syntax_error(p_,
                            p_ < end_ ? "expected a string key"
                                      : "unexpected end of input");
      std::string_view key;
      if (!read_string(key))
        return false;
      // The key may live in scratch_, which the value can overwrite.
      key_copy_.assign(key);
      if (!expect_char(':', "expected ':'"))
        return false;
      skip_ws();
      if (!on_member(std::string_view{key_copy_}))
        return false;
      char c = peek();
      if (c == ',') {
        ++p_;
        continue;
      }
      if (c == '}') {
        ++p_;
        return true;
      }
      return syntax_error(
          p_, p_ < end_ ? "expected ',' or '}'" : "unexpected end of input");
    }
  }

  // Iterates the elements of an array at p_ ('['), calling on_element with
  // p_ at each element.
  template <class F>
  bool for_each_element(F on_element) {
    ++p_;
    if (peek() == ']') {
      ++p_;
      return true;
    }
    for (;;) {
      skip_ws();
      if (!on_element())
        return false;
      char c = peek();
      if (c == ',') {
        ++p_;
        continue;
      }
      if (c == ']') {
        ++p_;
        return true;
      }
      return syntax_error(
          p_, p_ < end_ ? "expected ',' or ']'" : "unexpected end of input");
    }
  }

  bool at_end() {
    skip_ws();
    if (p_ == end_)
      return true;
    return syntax_error(p_,
                        *p_ == '\0' ? "unexpected NUL byte"
                                    : "unexpected content after the value");
  }

  // Positions at a top-level object; any other (valid) value fails with
  // `not_object`.
  bool expect_object(const char* not_object) {
    if (peek() == '{')
      return true;
    if (!skip_value() || !at_end())
      return false;
    return fail(not_object);
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  std::string error_;
  std::string scratch_;
  std::string key_copy_;
};

caf::error bad_request(std::string detail) {
  return make_error(errc::invalid_input, std::move(detail));
}

caf::error bad_response(std::string detail) {
  return make_error(errc::invalid_response, std::move(detail));
}

std::string index_prefix(std::size_t i) {
  std::string s = "input[";
  append_int(s, i);
  s += "] ";
  return s;
}

} // namespace

// -- encoding -----------------------------------------------------------------

const char* to_string(encoding x) {
  return x == encoding::base64 ? "base64" : "float";
}

// -- requests -----------------------------------------------------------------

std::string encode_request(const embeddings_request& req) {
  std::size_t size_hint = 64 + req.model.size() + req.user.size();
  for (const auto& s : req.input)
    size_hint += s.size() + 3;
  std::string out;
  out.reserve(size_hint);
  out.append("{\"model\":");
  append_json_string(out, req.model);
  out.append(",\"input\":");
  if (req.input_is_array || req.input.size() != 1) {
    out.push_back('[');
    for (std::size_t i = 0; i < req.input.size(); ++i) {
      if (i > 0)
        out.push_back(',');
      append_json_string(out, req.input[i]);
    }
    out.push_back(']');
  } else {
    append_json_string(out, req.input.front());
  }
  if (req.encoding_format != encoding::float32) {
    out.append(",\"encoding_format\":");
    append_json_string(out, to_string(req.encoding_format));
  }
  if (req.dimensions) {
    out.append(",\"dimensions\":");
    append_int(out, *req.dimensions);
  }
  if (!req.user.empty()) {
    out.append(",\"user\":");
    append_json_string(out, req.user);
  }
  out.push_back('}');
  return out;
}

namespace {

// The request schema (server side).
class request_parser : json_reader {
 public:
  using json_reader::json_reader;

  caf::expected<embeddings_request> run() {
    if (!parse_document())
      return bad_request(std::move(error_));
    return std::move(result_);
  }

 private:
  bool parse_document() {
    if (!expect_object("request body must be a JSON object"))
      return false;
    bool seen_model = false, seen_input = false, seen_dims = false,
         seen_format = false, seen_user = false;
    auto once = [this](bool& seen, std::string_view key) {
      if (seen)
        return fail("duplicate key '" + std::string{key} + "' in request");
      seen = true;
      return true;
    };
    auto ok = for_each_member([&](std::string_view key) {
      if (key == "model")
        return once(seen_model, key) && parse_model();
      if (key == "input")
        return once(seen_input, key) && parse_input();
      if (key == "dimensions")
        return once(seen_dims, key) && parse_dimensions();
      if (key == "encoding_format")
        return once(seen_format, key) && parse_encoding_format();
      if (key == "user")
        return once(seen_user, key) && parse_user();
      return skip_value();
    });
    if (!ok || !at_end())
      return false;
    if (!seen_model)
      return fail("'model' is required");
    if (!seen_input)
      return fail("'input' is required");
    return true;
  }

  bool parse_model() {
    std::string_view model;
    if (cur() != '"')
      return reject_value("'model' must be a string");
    if (!read_string(model))
      return false;
    if (model.empty())
      return fail("'model' must not be empty");
    if (!is_valid_utf8(model))
      return fail("'model' is not valid UTF-8");
    result_.model.assign(model);
    return true;
  }

  bool parse_input() {
    static constexpr const char* not_text
        = "'input' must be a string or an array of strings";
    static constexpr const char* tokens
        = "'input' token arrays are not supported: send text";
    if (cur() == '"') {
      std::string_view text;
      if (!read_string(text))
        return false;
      result_.input_is_array = false;
      result_.input.emplace_back(text);
      return true;
    }
    if (cur() != '[')
      return reject_value(not_text);
    result_.input_is_array = true;
    auto ok = for_each_element([this] {
      if (cur() == '"') {
        std::string_view text;
        if (!read_string(text))
          return false;
        result_.input.emplace_back(text);
        return true;
      }
      // [1, 2] and [[1, 2], [3]] are OpenAI's token arrays.
      if (starts_number(cur()) || nested_token_array())
        return reject_value(tokens);
      std::string detail = not_text;
      detail += " (input[";
      append_int(detail, result_.input.size());
      detail += "] is not a string)";
      return reject_value(std::move(detail));
    });
    if (ok && result_.input.empty())
      return fail("'input' must not be an empty array");
    return ok;
  }

  // True if p_ is at an array whose first element is a number.
  bool nested_token_array() {
    if (cur() != '[')
      return false;
    const char* saved = p_;
    ++p_;
    bool number = starts_number(peek());
    p_ = saved;
    return number;
  }

  bool parse_dimensions() {
    static constexpr const char* detail
        = "'dimensions' must be a positive integer";
    if (cur() == 'n')
      return literal("null"); // null counts as absent
    if (!starts_number(cur()))
      return reject_value(detail);
    number_token t;
    int64_t value = 0;
    if (!read_number(t))
      return false;
    if (!read_int(t, value) || value <= 0
        || value > std::numeric_limits<int32_t>::max())
      return fail(detail);
    result_.dimensions = static_cast<int32_t>(value);
    return true;
  }

  bool parse_encoding_format() {
    static constexpr const char* detail
        = "'encoding_format' must be \"float\" or \"base64\"";
    if (cur() == 'n')
      return literal("null"); // null counts as absent
    if (cur() != '"')
      return reject_value(detail);
    std::string_view name;
    if (!read_string(name))
      return false;
    if (name == "float")
      result_.encoding_format = encoding::float32;
    else if (name == "base64")
      result_.encoding_format = encoding::base64;
    else
      return fail(detail);
    return true;
  }

  bool parse_user() {
    if (cur() == 'n')
      return literal("null"); // null counts as absent
    if (cur() != '"')
      return reject_value("'user' must be a string");
    std::string_view user;
    if (!read_string(user))
      return false;
    if (!is_valid_utf8(user))
      return fail("'user' is not valid UTF-8");
    result_.user.assign(user);
    return true;
  }

  embeddings_request result_;
};

} // namespace

caf::expected<embeddings_request> decode_request(std::string_view body) {
  return request_parser{body}.run();
}

// -- validation ---------------------------------------------------------------

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
    if (decode_utf8(p, end) < 0)
      return false;
  }
  return true;
}

caf::error validate_inputs(const std::vector<std::string>& inputs,
                           const provider_profile& profile,
                           bool check_request_total) {
  if (inputs.empty())
    return bad_request("no inputs: at least one text is required");
  if (inputs.size() > profile.max_inputs) {
    std::string detail = "too many inputs: ";
    append_int(detail, inputs.size());
    detail += " > ";
    append_int(detail, profile.max_inputs);
    detail += " per request";
    return bad_request(std::move(detail));
  }
  std::size_t total_tokens = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto& text = inputs[i];
    if (text.size() > profile.max_input_bytes) {
      auto detail = index_prefix(i);
      detail += "is too large: ";
      append_int(detail, text.size());
      detail += " bytes > ";
      append_int(detail, profile.max_input_bytes);
      return bad_request(std::move(detail));
    }
    const auto* begin = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = begin + text.size();
    bool has_content = false;
    for (const auto* p = begin; p < end;) {
      const auto* at = p;
      auto cp = decode_utf8(p, end);
      if (cp < 0) {
        auto detail = index_prefix(i);
        detail += "is not valid UTF-8 (at byte ";
        append_int(detail, at - begin);
        detail += ')';
        return bad_request(std::move(detail));
      }
      if (cp == 0) {
        auto detail = index_prefix(i);
        detail += "contains a NUL character (at byte ";
        append_int(detail, at - begin);
        detail += ')';
        return bad_request(std::move(detail));
      }
      if (!has_content && !is_space(cp))
        has_content = true;
    }
    if (!has_content)
      return bad_request(index_prefix(i) + "is empty or whitespace only");
    auto tokens = estimate_tokens(text);
    if (tokens > profile.max_tokens_per_input) {
      auto detail = index_prefix(i);
      detail += "is too long: about ";
      append_int(detail, tokens);
      detail += " tokens > ";
      append_int(detail, profile.max_tokens_per_input);
      return bad_request(std::move(detail));
    }
    total_tokens += tokens;
  }
  if (check_request_total && total_tokens > profile.max_tokens_per_request) {
    std::string detail = "inputs too long in total: about ";
    append_int(detail, total_tokens);
    detail += " tokens > ";
    append_int(detail, profile.max_tokens_per_request);
    detail += " per request";
    return bad_request(std::move(detail));
  }
  return {};
}

// -- responses ----------------------------------------------------------------

std::string encode_response(const embeddings_response& resp, encoding enc) {
  std::size_t values = 0;
  for (const auto& v : resp.data)
    values += v.size();
  std::string out;
  out.reserve(128 + resp.model.size() + resp.data.size() * 48
              + (enc == encoding::base64 ? values * 6 : values * 14));
  out.append("{\"object\":\"list\",\"data\":[");
  for (std::size_t i = 0; i < resp.data.size(); ++i) {
    if (i > 0)
      out.push_back(',');
    out.append("{\"object\":\"embedding\",\"index\":");
    append_int(out, i);
    out.append(",\"embedding\":");
    const auto& vec = resp.data[i];
    if (enc == encoding::base64) {
      out.push_back('"');
      append_base64_floats(out, vec);
      out.push_back('"');
    } else {
      out.push_back('[');
      for (std::size_t j = 0; j < vec.size(); ++j) {
        if (j > 0)
          out.push_back(',');
        append_float(out, vec[j]);
      }
      out.push_back(']');
    }
    out.push_back('}');
  }
  out.append("],\"model\":");
  append_json_string(out, resp.model);
  out.append(",\"usage\":{\"prompt_tokens\":");
  append_int(out, resp.usage.prompt_tokens);
  out.append(",\"total_tokens\":");
  append_int(out, resp.usage.total_tokens);
  out.append("}}");
  return out;
}

namespace {

// The response schema. Vectors are written straight into their slot: one
// allocation per vector.
class response_parser : json_reader {
 public:
  response_parser(std::string_view body, const response_expectation& expect)
      : json_reader(body), expect_(expect) {
    // Every item takes more than 16 bytes: never allocate slots for more
    // items than the body can hold (they grow on demand up to `inputs`).
    auto initial = std::min(expect.inputs, body.size() / 16 + 1);
    slots_.resize(initial);
    filled_.resize(initial, false);
    if (expect.dimensions && *expect.dimensions > 0)
      reserve_ = static_cast<std::size_t>(*expect.dimensions);
  }

  caf::expected<embeddings_response> run() {
    if (!parse_document())
      return bad_response(std::move(error_));
    embeddings_response result;
    result.model = std::move(model_);
    result.data = std::move(slots_);
    result.usage = usage_;
    return result;
  }

 private:
  std::string item_prefix() const {
    std::string s = "data[";
    append_int(s, count_);
    s += ']';
    return s;
  }

  bool fail_not_finite(std::size_t j) {
    auto detail = item_prefix();
    detail += ".embedding[";
    append_int(detail, j);
    detail += "] is not a finite float32";
    return fail(std::move(detail));
  }

  // -- the response schema ----------------------------------------------------

  bool parse_document() {
    if (!expect_object("response body must be a JSON object"))
      return false;
    bool seen_data = false, seen_model = false, seen_usage = false;
    auto once = [this](bool& seen, const char* name) {
      if (seen)
        return fail(std::string{"duplicate key "} + name + " in response");
      seen = true;
      return true;
    };
    auto ok = for_each_member([&](std::string_view key) {
      if (key == "data")
        return once(seen_data, "'data'") && parse_data();
      if (key == "model")
        return once(seen_model, "'model'") && parse_model();
      if (key == "usage")
        return once(seen_usage, "'usage'") && parse_usage();
      return skip_value();
    });
    if (!ok || !at_end())
      return false;
    if (!seen_data)
      return fail("response has no 'data' array");
    if (count_ < expect_.inputs) {
      for (std::size_t i = 0; i < expect_.inputs; ++i) {
        if (i >= filled_.size() || !filled_[i]) {
          std::string detail = "missing embedding for index ";
          append_int(detail, i);
          detail += " (";
          append_int(detail, count_);
          detail += " of ";
          append_int(detail, expect_.inputs);
          detail += " returned)";
          return fail(std::move(detail));
        }
      }
    }
    return true;
  }

  bool parse_model() {
    if (cur() == 'n')
      return literal("null");
    if (cur() != '"')
      return reject_value("'model' must be a string");
    std::string_view model;
    if (!read_string(model))
      return false;
    if (!is_valid_utf8(model))
      return fail("'model' is not valid UTF-8");
    model_.assign(model);
    return true;
  }

  bool parse_usage() {
    if (cur() == 'n')
      return literal("null");
    if (cur() != '{')
      return reject_value("'usage' must be an object");
    return for_each_member([this](std::string_view key) {
      int64_t* field = key == "prompt_tokens" ? &usage_.prompt_tokens
          : key == "total_tokens"             ? &usage_.total_tokens
                                              : nullptr;
      if (field == nullptr)
        return skip_value();
      auto detail
          = "'usage." + std::string{key} + "' must be a non-negative integer";
      if (!starts_number(cur()))
        return reject_value(std::move(detail));
      number_token t;
      int64_t value = 0;
      if (!read_number(t))
        return false;
      if (!read_int(t, value) || value < 0)
        return fail(std::move(detail));
      *field = value;
      return true;
    });
  }

  bool parse_data() {
    if (cur() != '[')
      return reject_value("'data' must be an array");
    return for_each_element([this] {
      if (cur() != '{')
        return reject_value(item_prefix() + " must be an object");
      if (count_ >= expect_.inputs) {
        std::string detail = "more embeddings than inputs (more than ";
        append_int(detail, expect_.inputs);
        detail += ')';
        return fail(std::move(detail));
      }
      return parse_item();
    });
  }

  bool parse_item() {
    bool has_index = false;
    bool has_embedding = false;
    int64_t index = 0;
    current_.clear();
    current_.reserve(reserve_);
    auto ok = for_each_member([&](std::string_view key) {
      if (key == "index") {
        if (has_index)
          return fail(item_prefix() + " has a duplicate 'index'");
        has_index = true;
        if (!starts_number(cur()))
          return reject_value(item_prefix() + ".index is not a valid integer");
        number_token t;
        if (!read_number(t))
          return false;
        if (!read_int(t, index))
          return fail(item_prefix() + ".index is not a valid integer");
        return true;
      }
      if (key == "embedding") {
        if (has_embedding)
          return fail(item_prefix() + " has a duplicate 'embedding'");
        has_embedding = true;
        if (cur() == '[')
          return parse_float_vector();
        if (cur() == '"')
          return parse_base64_vector();
        return reject_value(item_prefix()
                            + ".embedding must be an array of numbers or a "
                              "base64 string");
      }
      return skip_value();
    });
    return ok && finish_item(has_index, has_embedding, index);
  }

  bool parse_float_vector() {
    return for_each_element([this] {
      if (!starts_number(cur())) {
        auto detail = item_prefix();
        detail += ".embedding[";
        append_int(detail, current_.size());
        detail += "] is not a number";
        return reject_value(std::move(detail));
      }
      number_token t;
      float value = 0;
      if (!read_number(t))
        return false;
      if (!to_float(t, value))
        return fail_not_finite(current_.size());
      current_.push_back(value);
      return true;
    });
  }

  bool parse_base64_vector() {
    std::string_view text;
    if (!read_string(text))
      return false;
    if (expect_.encoding_format != encoding::base64)
      return fail(item_prefix()
                  + ".embedding is a base64 string but float was requested");
    if (!decode_base64_into(text, current_))
      return fail(item_prefix()
                  + ".embedding is not valid base64 float32 data");
    for (std::size_t j = 0; j < current_.size(); ++j)
      if (!std::isfinite(current_[j]))
        return fail_not_finite(j);
    return true;
  }

  bool finish_item(bool has_index, bool has_embedding, int64_t index) {
    if (!has_embedding)
      return fail(item_prefix() + " has no 'embedding'");
    if (!has_index)
      return fail(item_prefix() + " has no 'index'");
    if (current_.empty())
      return fail(item_prefix() + ".embedding is empty");
    if (expect_.dimensions
        && current_.size() != static_cast<std::size_t>(*expect_.dimensions)) {
      auto detail = item_prefix();
      detail += ".embedding has ";
      append_int(detail, current_.size());
      detail += " dimensions, ";
      append_int(detail, *expect_.dimensions);
      detail += " requested";
      return fail(std::move(detail));
    }
    if (first_dims_ == 0) {
      first_dims_ = current_.size();
      reserve_ = first_dims_;
    } else if (current_.size() != first_dims_) {
      auto detail = item_prefix();
      detail += ".embedding has ";
      append_int(detail, current_.size());
      detail += " dimensions, the first embedding has ";
      append_int(detail, first_dims_);
      return fail(std::move(detail));
    }
    if (index < 0 || static_cast<uint64_t>(index) >= expect_.inputs) {
      auto detail = item_prefix();
      detail += ".index ";
      append_int(detail, index);
      detail += " is out of range (";
      append_int(detail, expect_.inputs);
      detail += " inputs)";
      return fail(std::move(detail));
    }
    auto idx = static_cast<std::size_t>(index);
    if (idx >= slots_.size()) {
      slots_.resize(idx + 1);
      filled_.resize(idx + 1, false);
    }
    if (filled_[idx]) {
      std::string detail = "duplicate index ";
      append_int(detail, index);
      detail += " in data";
      return fail(std::move(detail));
    }
    slots_[idx] = std::move(current_);
    current_ = std::vector<float>{};
    filled_[idx] = true;
    ++count_;
    return true;
  }

  const response_expectation& expect_;
  // Results.
  std::vector<std::vector<float>> slots_;
  std::vector<bool> filled_;
  std::vector<float> current_;
  std::size_t count_ = 0;
  std::size_t first_dims_ = 0;
  std::size_t reserve_ = 0;
  std::string model_;
  token_usage usage_;
};

} // namespace

caf::expected<embeddings_response>
decode_response(std::string_view body, const response_expectation& expect) {
  return response_parser{body, expect}.run();
}

// -- errors -------------------------------------------------------------------

std::string encode_error(const api_error& err) {
  std::string out;
  out.reserve(64 + err.message.size() + err.type.size() + err.param.size()
              + err.code.size());
  out.append("{\"error\":{\"message\":");
  append_json_string(out, err.message);
  out.append(",\"type\":");
  append_json_string(out, err.type);
  out.append(",\"param\":");
  if (err.param.empty())
    out.append("null");
  else
    append_json_string(out, err.param);
  out.append(",\"code\":");
  if (err.code.empty())
    out.append("null");
  else
    append_json_string(out, err.code);
  out.append("}}");
  return out;
}

namespace {

// The error shapes: OpenAI/Azure {"error":{"message","type","param","code"}},
// text-embeddings-inference {"error":"...","error_type":"..."} and vLLM
// {"object":"error","message","type","param","code"}.
class error_parser : json_reader {
 public:
  using json_reader::json_reader;

  std::optional<api_error> run() {
    if (!expect_object("not an object"))
      return std::nullopt;
    fields nested, top;
    loose error_text, error_type, object;
    bool error_is_object = false;
    auto ok = for_each_member([&](std::string_view key) {
      if (key == "error") {
        if (cur() == '{') {
          error_is_object = true;
          return for_each_member([&](std::string_view k) {
            return read_field(nested, k);
          });
        }
        return read_loose(error_text);
      }
      if (key == "error_type")
        return read_loose(error_type);
      if (key == "object")
        return read_loose(object);
      return read_field(top, key);
    });
    if (!ok || !at_end())
      return std::nullopt;
    if (error_is_object)
      return nested.to_error();
    if (error_text.is_string) {
      if (!error_type.valid)
        return std::nullopt;
      return api_error{error_text.value, error_type.value, {}, {}};
    }
    if (!error_text.present && object.is_string && object.value == "error")
      return top.to_error();
    return std::nullopt;
  }

 private:
  // An optional member that is a string, an integer (some servers send
  // numeric codes) or null.
  struct loose {
    std::string value;
    bool present = false;
    bool is_string = false;
    bool valid = true;
  };

  struct fields {
    loose message, type, param, code;

    std::optional<api_error> to_error() const {
      if (!message.is_string || !type.valid || !param.valid || !code.valid)
        return std::nullopt;
      return api_error{message.value, type.value, param.value, code.value};
    }
  };

  bool read_field(fields& f, std::string_view key) {
    if (key == "message")
      return read_loose(f.message);
    if (key == "type")
      return read_loose(f.type);
    if (key == "param")
      return read_loose(f.param);
    if (key == "code")
      return read_loose(f.code);
    return skip_value();
  }

  bool read_loose(loose& out) {
    out = loose{};
    out.present = true;
    if (cur() == '"') {
      std::string_view text;
      if (!read_string(text))
        return false;
      out.value.assign(text);
      out.is_string = true;
      return true;
    }
    if (cur() == 'n')
      return literal("null");
    if (starts_number(cur())) {
      number_token t;
      if (!read_number(t))
        return false;
      out.valid = t.integer && !t.truncated;
      out.value.assign(t.begin, t.end);
      return true;
    }
    out.valid = false;
    return skip_value();
  }
};

} // namespace

std::optional<api_error> decode_error(std::string_view body) {
  return error_parser{body}.run();
}

// -- base64 floats ------------------------------------------------------------

std::string encode_base64_floats(const std::vector<float>& values) {
  std::string out;
  append_base64_floats(out, values);
  return out;
}

std::optional<std::vector<float>> decode_base64_floats(std::string_view text) {
  std::vector<float> out;
  if (!decode_base64_into(text, out))
    return std::nullopt;
  return out;
}

} // namespace embedrt::openai
