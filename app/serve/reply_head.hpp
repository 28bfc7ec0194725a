// The head of a reply of `embedrt serve`'s front end (http_front.cpp): its
// fields (status, Server, Date, Content-Type, the request id, the reply's own
// headers, keep-alive) and its wire form, written as one string that goes out
// with the body in one gather write instead of through Beast's serializer
// (the same bytes; docs/profile.md, "I/O on the actor workers").
#pragma once

#include "serve/http_front.hpp"

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <string>
#include <string_view>

namespace embedrt::serve {

/// The `Date` header value (RFC 9110 IMF-fixdate) of now, formatted once per
/// second per thread.
const std::string& http_date();

/// Sets the head of `res` for the reply `r` to the request `request_id` ("":
/// none) on a connection that stays open iff `keep_alive`.
template <class Body>
void set_reply_head(boost::beast::http::response<Body>& res,
                    const front_reply& r, std::string_view request_id,
                    bool keep_alive) {
  namespace http = boost::beast::http;
  res.version(11);
  res.result(static_cast<unsigned>(r.status));
  res.set(http::field::server, "embedrt");
  res.set(http::field::date, http_date());
  if (!r.content_type.empty())
    res.set(http::field::content_type, r.content_type);
  // Every reply names its request, errors included: the client's id, or
  // the one assigned when it sent none (the handler's own wins).
  if (!request_id.empty())
    res.set("x-request-id", request_id);
  for (auto& [name, value] : r.headers)
    res.set(name, value);
  res.keep_alive(keep_alive);
}

/// The status line and fields of `res` as they go on the wire, up to the
/// empty line, into `out` (replaced).
void write_reply_head(
    const boost::beast::http::response<boost::beast::http::string_body>& res,
    std::string& out);

} // namespace embedrt::serve
