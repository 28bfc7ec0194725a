// A strict, single-pass JSON reader on which the request, response and error
// decoders of openai.hpp are built, each walking its own schema (internal to
// embedrt_protocol).
//
// It replaced RapidJSON after measuring and fuzzing: RapidJSON 1.1 handles
// strings byte by byte through its stack (about 2 ns per byte of a base64
// vector), copies every number with kParseNumbersAsStringsFlag before it can
// be converted exactly, and its internal stack does arithmetic on a null
// pointer (UBSan) on the first push. Here strings are scanned 8 bytes at a
// time and viewed in place, and numbers are converted straight from the body.
// The tests use RapidJSON as the reference for what is valid JSON.
//
// Grammar: RFC 8259 (no NaN/Infinity, no comments, no trailing commas, one
// value, nothing after it); a \u escape of a lone surrogate is rejected as it
// cannot be UTF-8. Unknown members are validated and skipped with an explicit
// stack, so nesting depth cannot exhaust the call stack. A semantic failure
// (a member of the wrong type) is reported when its value is complete, before
// the rest of the body is read, as a SAX reader would.
//
// The per-byte and per-number paths (strings, numbers, iteration) are inline
// here; the rest is in json_reader.cpp.
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

namespace embedrt::detail {

/// A number token as scanned: its text plus the pieces the fast conversion
/// needs (significand of at most 19 digits and a decimal exponent).
struct number_token {
  const char* begin = nullptr;
  const char* end = nullptr;
  uint64_t mantissa = 0;
  int32_t exponent = 0;
  bool negative = false;
  bool truncated = false; // more than 19 significant digits
  bool integer = true;    // no fraction and no exponent
};

/// Converts to the correctly rounded float32. Returns false for non-finite
/// results (`out` is then unchanged).
inline bool to_float(const number_token& t, float& out);

/// Base of the decoders: a cursor over a JSON body with strict lexing and
/// the detail of the first failure. Decoders derive from it and walk their
/// schema with `for_each_member`, `for_each_element` and the `read_*`
/// functions, skipping what they do not know with `skip_value`.
class json_reader {
 public:
  explicit json_reader(std::string_view body)
      : begin_(body.data()), p_(body.data()), end_(body.data() + body.size()) {}

 protected:
  // -- failures (each returns false) ------------------------------------------

  /// "malformed JSON at offset N: WHAT".
  bool syntax_error(const char* at, const char* what);

  bool fail(std::string detail);

  /// A value of the wrong type: malformed JSON wins over the type error.
  bool reject_value(std::string detail);

  // -- lexing -----------------------------------------------------------------

  void skip_ws() {
    while (p_ < end_
           && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t'))
      ++p_;
  }

  /// The byte at p_, or '\0' at the end (a NUL byte in the body is never
  /// valid JSON outside strings either).
  char cur() const {
    return p_ < end_ ? *p_ : '\0';
  }

  /// Skips whitespace and returns the next byte (see cur()).
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

  /// Reads `word` (true, false, null) at p_.
  bool literal(std::string_view word);

  /// Reads a string at p_ (which is '"'). Without escapes `out` views the
  /// body; otherwise the unescaped text is built in `scratch_`.
  bool read_string(std::string_view& out);

  /// Scans a number at p_ per RFC 8259 and collects its significand and
  /// exponent.
  bool read_number(number_token& t);

  static bool is_digit(char c) {
    return c >= '0' && c <= '9';
  }

  static bool starts_number(char c) {
    return c == '-' || is_digit(c);
  }

  /// Converts an integer token (no fraction, no exponent) that fits.
  static bool read_int(const number_token& t, int64_t& out);

  /// Reads a member `name` that must be a string of valid UTF-8 into `out`;
  /// null leaves `out` as it is.
  bool read_utf8_string_or_null(const char* name, std::string& out);

  /// Validates and skips one value of any shape without recursion.
  bool skip_value();

  /// Iterates the members of an object at p_ ('{'), calling on_member with
  /// p_ at each value; on_member must consume the value.
  template <class F>
  bool for_each_member(F on_member);

  /// Iterates the elements of an array at p_ ('['), calling on_element with
  /// p_ at each element.
  template <class F>
  bool for_each_element(F on_element);

  /// Only whitespace may follow the value.
  bool at_end();

  /// Positions at a top-level object; any other (valid) value fails with
  /// `not_object`.
  bool expect_object(const char* not_object);

  const char* begin_;
  const char* p_;
  const char* end_;
  std::string error_;

 private:
  bool read_escaped_string(const char* start, std::string_view& out);
  bool read_escape(const char* esc);
  bool read_unicode_escape(const char* esc);
  bool read_hex4(uint32_t& out);

  /// Reads an object key and the ':' after it (p_ at the key, whitespace
  /// allowed).
  bool read_key(std::string_view& key);

  /// At '{' or '[': consumes it, and `close` too if the container is empty
  /// (then true).
  bool open_empty(char close) {
    ++p_;
    if (peek() != close)
      return false;
    ++p_;
    return true;
  }

  /// After a member or element: ',' (then `more`) or `close` must follow.
  bool comma_or_close(char close, const char* expected, bool& more) {
    char c = peek();
    if (c == ',' || c == close) {
      ++p_;
      more = c == ',';
      return true;
    }
    return syntax_error(p_, p_ < end_ ? expected : "unexpected end of input");
  }

  /// skip_value: skips a scalar or opens a container (then `opened`).
  bool open_or_skip_scalar(std::string& stack, bool& opened);
  /// skip_value: after a complete value, closes containers until one
  /// continues with ',' or none is left open.
  bool close_containers(std::string& stack);

  static bool scan_integer_part(const char*& p, const char* end,
                                uint64_t& mantissa);
  static bool scan_fraction(const char*& p, const char* end, uint64_t& mantissa,
                            int32_t& exponent);
  static bool scan_exponent(const char*& p, const char* end, int32_t& exponent);
  static bool more_than_19_significant(const char* digits_begin,
                                       const char* end);

  std::string scratch_;
  std::string key_copy_;
};

// -- inline definitions: the per-byte and per-number paths --------------------

constexpr double exact_powers_of_ten[]
    = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

// Fast path (Clinger): a significand <= 2^53 and a power of ten <= 10^22
// make the double quotient or product correctly rounded; rounding that
// double to float is then exact unless it lies exactly halfway between two
// floats, or in the subnormal range, which take the slow path.
inline bool to_float_fast(const number_token& t, float& out) {
  if (t.truncated || t.mantissa > (uint64_t{1} << 53) || t.exponent < -22
      || t.exponent > 22)
    return false;
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
  if (d != 0 && (!normal_float || (bits & dropped_mask) == halfway))
    return false;
  auto f = static_cast<float>(d);
  out = t.negative ? -f : f;
  return true;
}

// The slow path: std::from_chars on the token's text.
bool to_float_slow(const number_token& t, float& out);

inline bool to_float(const number_token& t, float& out) {
  float f = 0;
  if (!to_float_fast(t, f))
    return to_float_slow(t, out);
  if (!std::isfinite(f))
    return false;
  out = f;
  return true;
}

// Word-at-a-time scan for the bytes that end the fast path of a string:
// '"', '\\' and control characters (< 0x20).
inline bool has_special_byte(uint64_t w) {
  constexpr uint64_t ones = 0x0101010101010101ULL;
  constexpr uint64_t highs = 0x8080808080808080ULL;
  auto has_zero = [](uint64_t v) {
    return (v - ones) & ~v & highs;
  };
  auto below_0x20 = (w - ones * 0x20) & ~w & highs;
  return below_0x20 | has_zero(w ^ (ones * '"')) | has_zero(w ^ (ones * '\\'));
}

inline bool json_reader::read_string(std::string_view& out) {
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

// The scan_* helpers work on locals so that the hot loops stay in registers.

inline bool json_reader::scan_integer_part(const char*& p, const char* end,
                                           uint64_t& mantissa) {
  if (p < end && *p == '0') {
    ++p;
    return true;
  }
  if (p < end && *p >= '1' && *p <= '9') {
    while (p < end && is_digit(*p))
      mantissa = mantissa * 10 + static_cast<uint64_t>(*p++ - '0');
    return true;
  }
  return false;
}

// At '.': reads the digits after it; `exponent` becomes minus their count.
inline bool json_reader::scan_fraction(const char*& p, const char* end,
                                       uint64_t& mantissa, int32_t& exponent) {
  const char* frac = ++p;
  while (p < end && is_digit(*p))
    mantissa = mantissa * 10 + static_cast<uint64_t>(*p++ - '0');
  if (p == frac)
    return false;
  exponent = -static_cast<int32_t>(std::min<std::ptrdiff_t>(p - frac, 1 << 20));
  return true;
}

// At 'e' or 'E': adds the (saturated) exponent to `exponent`.
inline bool json_reader::scan_exponent(const char*& p, const char* end,
                                       int32_t& exponent) {
  ++p;
  bool neg = false;
  if (p < end && (*p == '+' || *p == '-'))
    neg = *p++ == '-';
  if (p == end || !is_digit(*p))
    return false;
  int32_t e = 0;
  while (p < end && is_digit(*p)) {
    if (e < 100000)
      e = e * 10 + (*p - '0');
    ++p;
  }
  exponent += neg ? -e : e;
  return true;
}

// True if the digits in [digits_begin, end) (a '.' among them) hold more
// than 19 significant ones; leading zeros (and the point) do not count.
inline bool json_reader::more_than_19_significant(const char* digits_begin,
                                                  const char* end) {
  if (end - digits_begin <= 19)
    return false;
  const char* q = digits_begin;
  while (q < end && (*q == '0' || *q == '.'))
    ++q;
  std::ptrdiff_t significant = 0;
  for (; q < end; ++q)
    significant += *q != '.';
  return significant > 19;
}

inline bool json_reader::read_number(number_token& t) {
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
  if (!scan_integer_part(p, end, mantissa))
    return syntax_error(t.begin, "invalid number");
  int32_t exponent = 0;
  if (p < end && *p == '.') {
    t.integer = false;
    if (!scan_fraction(p, end, mantissa, exponent)) {
      p_ = p;
      return syntax_error(t.begin, "invalid number (missing fraction)");
    }
  }
  t.truncated = more_than_19_significant(digits_begin, p);
  if (p < end && (*p == 'e' || *p == 'E')) {
    t.integer = false;
    if (!scan_exponent(p, end, exponent)) {
      p_ = p;
      return syntax_error(t.begin, "invalid number (missing exponent)");
    }
  }
  p_ = p;
  t.end = p;
  t.mantissa = mantissa;
  t.exponent = exponent;
  return true;
}

template <class F>
bool json_reader::for_each_member(F on_member) {
  if (open_empty('}'))
    return true;
  for (bool more = true; more;) {
    std::string_view key;
    if (!read_key(key))
      return false;
    // The key may live in scratch_, which the value can overwrite.
    key_copy_.assign(key);
    skip_ws();
    if (!on_member(std::string_view{key_copy_})
        || !comma_or_close('}', "expected ',' or '}'", more))
      return false;
  }
  return true;
}

template <class F>
bool json_reader::for_each_element(F on_element) {
  if (open_empty(']'))
    return true;
  for (bool more = true; more;) {
    skip_ws();
    if (!on_element() || !comma_or_close(']', "expected ',' or ']'", more))
      return false;
  }
  return true;
}

} // namespace embedrt::detail
