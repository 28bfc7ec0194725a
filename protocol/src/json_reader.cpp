#include "json_reader.hpp"

#include "decimal.hpp"
#include "embedrt/protocol/openai.hpp"

#include <utility>

namespace embedrt::detail {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, uint32_t cp) {
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

} // namespace

bool to_float_slow(const number_token& t, float& out) {
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

// -- failures -----------------------------------------------------------------

bool json_reader::syntax_error(const char* at, const char* what) {
  error_ = concat("malformed JSON at offset ", at - begin_, ": ", what);
  return false;
}

bool json_reader::fail(std::string detail) {
  error_ = std::move(detail);
  return false;
}

bool json_reader::reject_value(std::string detail) {
  if (!skip_value())
    return false;
  return fail(std::move(detail));
}

// -- lexing -------------------------------------------------------------------

bool json_reader::literal(std::string_view word) {
  if (static_cast<std::size_t>(end_ - p_) < word.size()
      || std::string_view{p_, word.size()} != word)
    return syntax_error(p_, "invalid value");
  p_ += word.size();
  return true;
}

bool json_reader::read_hex4(uint32_t& out) {
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

// The slow path of read_string from the first backslash: builds the text in
// scratch_.
bool json_reader::read_escaped_string(const char* start,
                                      std::string_view& out) {
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
    if (!read_escape(esc))
      return false;
  }
  return syntax_error(start - 1, "unterminated string");
}

// p_ after the backslash at `esc` (not at the end): appends the escaped
// character to scratch_.
bool json_reader::read_escape(const char* esc) {
  switch (*p_++) {
    case '"': scratch_.push_back('"'); break;
    case '\\': scratch_.push_back('\\'); break;
    case '/': scratch_.push_back('/'); break;
    case 'b': scratch_.push_back('\b'); break;
    case 'f': scratch_.push_back('\f'); break;
    case 'n': scratch_.push_back('\n'); break;
    case 'r': scratch_.push_back('\r'); break;
    case 't': scratch_.push_back('\t'); break;
    case 'u': return read_unicode_escape(esc);
    default: return syntax_error(esc, "invalid escape in string");
  }
  return true;
}

// p_ after "\u": a code point, or a surrogate pair as two escapes.
bool json_reader::read_unicode_escape(const char* esc) {
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
  return true;
}

bool json_reader::read_int(const number_token& t, int64_t& out) {
  if (!t.integer)
    return false;
  auto res = std::from_chars(t.begin, t.end, out);
  return res.ec == std::errc{} && res.ptr == t.end;
}

bool json_reader::read_utf8_string_or_null(const char* name, std::string& out) {
  if (cur() == 'n')
    return literal("null");
  if (cur() != '"')
    return reject_value(concat("'", name, "' must be a string"));
  std::string_view text;
  if (!read_string(text))
    return false;
  if (!openai::is_valid_utf8(text))
    return fail(concat("'", name, "' is not valid UTF-8"));
  out.assign(text);
  return true;
}

bool json_reader::read_key(std::string_view& key) {
  if (peek() != '"')
    return syntax_error(
        p_, p_ < end_ ? "expected a string key" : "unexpected end of input");
  return read_string(key) && expect_char(':', "expected ':'");
}

// -- skipping -----------------------------------------------------------------

bool json_reader::skip_value() {
  std::string stack; // '{' or '[' per open container
  for (;;) {
    bool opened = false;
    if (!open_or_skip_scalar(stack, opened))
      return false;
    if (opened)
      continue;
    // A value is complete.
    if (!close_containers(stack))
      return false;
    if (stack.empty())
      return true;
  }
}

bool json_reader::open_or_skip_scalar(std::string& stack, bool& opened) {
  std::string_view ignored;
  switch (char c = peek()) {
    case '{':
    case '[':
      if (open_empty(c == '{' ? '}' : ']'))
        return true;
      stack.push_back(c);
      opened = true;
      return c == '[' || read_key(ignored);
    case '"': return read_string(ignored);
    case 't': return literal("true");
    case 'f': return literal("false");
    case 'n': return literal("null");
    default: {
      if (p_ == end_)
        return syntax_error(p_, "unexpected end of input");
      if (!starts_number(*p_))
        return syntax_error(p_, "invalid value");
      number_token t;
      return read_number(t);
    }
  }
}

bool json_reader::close_containers(std::string& stack) {
  while (!stack.empty()) {
    bool object = stack.back() == '{';
    bool more = false;
    if (!comma_or_close(object ? '}' : ']',
                        object ? "expected ',' or '}'" : "expected ',' or ']'",
                        more))
      return false;
    if (more) {
      std::string_view ignored;
      return !object || read_key(ignored);
    }
    stack.pop_back();
  }
  return true;
}

// -- documents ----------------------------------------------------------------

bool json_reader::at_end() {
  skip_ws();
  if (p_ == end_)
    return true;
  return syntax_error(p_,
                      *p_ == '\0' ? "unexpected NUL byte"
                                  : "unexpected content after the value");
}

bool json_reader::expect_object(const char* not_object) {
  if (peek() == '{')
    return true;
  if (!skip_value() || !at_end())
    return false;
  return fail(not_object);
}

} // namespace embedrt::detail
