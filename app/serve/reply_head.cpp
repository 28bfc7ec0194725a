#include "serve/reply_head.hpp"

#include <ctime>

namespace embedrt::serve {

const std::string& http_date() {
  thread_local std::time_t cached_t = -1;
  thread_local std::string cached;
  auto t = std::time(nullptr);
  if (t != cached_t) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    auto n = std::strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    cached.assign(buf, n);
    cached_t = t;
  }
  return cached;
}

void write_reply_head(
    const boost::beast::http::response<boost::beast::http::string_body>& res,
    std::string& out) {
  auto add = [&out](boost::beast::string_view s) {
    out.append(s.data(), s.size());
  };
  out.clear();
  out += res.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  out += std::to_string(res.result_int());
  out += ' ';
  add(res.reason());
  out += "\r\n";
  for (const auto& field : res) {
    add(field.name_string());
    out += ": ";
    add(field.value());
    out += "\r\n";
  }
  out += "\r\n";
}

} // namespace embedrt::serve
