// GCC 12 with -fsanitize=address,undefined reports a false
// -Wmaybe-uninitialized inside Beast's request parser (the boost::optional
// returned by basic_parser<true>::content_length_unchecked), instantiated
// here.
#if defined(__GNUC__) && !defined(__clang__)
#  pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "serve/front_parse.hpp"

#include "httpd/listener.hpp"
#include "serve/content_encoding.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>

namespace http = boost::beast::http;

namespace embedrt::serve {

namespace {

std::string to_string(boost::beast::string_view sv) {
  return std::string{sv.data(), sv.size()};
}

} // namespace

void apply_limits(request_parser& p, const front_options& opts) {
  p.header_limit(static_cast<std::uint32_t>(opts.max_header_bytes));
  p.body_limit(opts.max_body_bytes);
}

bool acceptable_request_id(std::string_view id) {
  if (id.empty() || id.size() > max_request_id)
    return false;
  for (char c : id)
    if (c <= ' ' || c > '~')
      return false;
  return true;
}

std::string client_request_id(const http::fields& header) {
  auto i = header.find("x-request-id");
  if (i == header.end())
    return {};
  auto value = to_string(i->value());
  return acceptable_request_id(value) ? value : std::string{};
}

front_request request_of(request_parser& p, std::string assigned_id) {
  auto& req = p.get();
  front_request fr;
  fr.method = to_string(req.method_string());
  fr.target = to_string(req.target());
  fr.body = std::move(req.body());
  if (auto i = req.find(http::field::authorization); i != req.end())
    fr.authorization = to_string(i->value());
  if (auto i = req.find(timeout_header); i != req.end()) {
    fr.timeout_ms = to_string(i->value());
    fr.has_timeout_ms = true;
  }
  fr.request_id = client_request_id(req);
  if (fr.request_id.empty())
    fr.request_id = std::move(assigned_id);
  if (auto i = req.find(http::field::origin); i != req.end())
    fr.origin = to_string(i->value());
  if (auto i = req.find(http::field::access_control_request_headers);
      i != req.end())
    fr.cors_request_headers = to_string(i->value());
  return fr;
}

std::optional<front_reply> decode_content(const request_parser& p,
                                          front_request& fr,
                                          const front_options& opts) {
  auto& req = p.get();
  auto i = req.find(http::field::content_encoding);
  if (i == req.end())
    return std::nullopt;
  return decode_body(to_string(i->value()), fr.body, opts.max_body_bytes);
}

std::optional<front_reply> read_error_reply(const boost::beast::error_code& ec,
                                            const front_options& opts) {
  // Beast reports a header over its limit as a parse error: it has a status
  // of its own (RFC 6585), and a client can act on it (smaller cookies or
  // tokens).
  if (ec == http::error::header_limit)
    return error_reply(431,
                       "Request header fields too large: the limit is "
                           + std::to_string(opts.max_header_bytes)
                           + " bytes for the request line and headers",
                       "invalid_request_error", "header_too_large");
  switch (httpd::read_failure_of(ec)) {
    case httpd::read_failure::too_large:
      return error_reply(413,
                         "Request body too large: the limit is "
                             + std::to_string(opts.max_body_bytes) + " bytes",
                         "invalid_request_error", "request_too_large");
    case httpd::read_failure::malformed:
      return error_reply(400, "Malformed HTTP request: " + ec.message(),
                         "invalid_request_error", "bad_http");
    case httpd::read_failure::gone: break;
  }
  return std::nullopt;
}

std::optional<front_reply> framing_error(const request_parser& p) {
  const auto& req = p.get();
  if (req.find(http::field::transfer_encoding) == req.end() || p.chunked())
    return std::nullopt;
  return error_reply(400,
                     "Malformed HTTP request: Transfer-Encoding must end with "
                     "chunked",
                     "invalid_request_error", "bad_http");
}

front_reply request_timeout_reply(const front_options& opts) {
  return error_reply(408,
                     "Request timeout: the request was not received within "
                         + std::to_string(opts.request_timeout.count())
                         + " ms of its first byte",
                     "invalid_request_error", "request_timeout");
}

parse_outcome parse_request(std::string_view bytes, const front_options& opts,
                            std::string assigned_id) {
  parse_outcome out;
  request_parser p;
  apply_limits(p, opts);
  p.eager(true);
  boost::beast::error_code ec;
  while (!bytes.empty() && !p.is_done()) {
    auto n = p.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
    if (ec == http::error::need_more) {
      // The parser wants the rest of a token in one piece; nothing more is
      // coming.
      return out;
    }
    if (ec) {
      out.error = read_error_reply(ec, opts);
      return out;
    }
    if (n == 0)
      return out;
    bytes.remove_prefix(n);
  }
  if (p.is_header_done())
    if (auto err = framing_error(p)) {
      out.error = std::move(err);
      return out;
    }
  if (p.is_done()) {
    out.request = request_of(p, std::move(assigned_id));
    if (auto err = decode_content(p, *out.request, opts)) {
      out.error = std::move(err);
      out.request.reset();
    }
  }
  return out;
}

} // namespace embedrt::serve
