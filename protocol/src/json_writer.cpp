#include "embedrt/protocol/json_writer.hpp"

namespace embedrt {

namespace {

constexpr char hex_digits[] = "0123456789abcdef";

// Appends the escape sequence of `c` ('"', '\\' or a control character).
void append_escape(std::string& out, unsigned char c) {
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

} // namespace

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  // Runs of bytes that need no escape are appended in one piece.
  const char* run = s.data();
  const char* end = s.data() + s.size();
  for (const char* p = run; p != end; ++p) {
    auto c = static_cast<unsigned char>(*p);
    if (c >= 0x20 && c != '"' && c != '\\')
      continue;
    out.append(run, p);
    run = p + 1;
    append_escape(out, c);
  }
  out.append(run, end);
  out.push_back('"');
}

} // namespace embedrt
