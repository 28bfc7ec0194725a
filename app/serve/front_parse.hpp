// What the front end of `embedrt serve` reads from a client request, apart
// from the sockets: the parser's limits, the fields the gateway needs, the
// request id rule and the error reply for a request that could not be read.
// The sessions of http_front.cpp use these on each request; the fuzz target
// of the gateway's request path (tests/fuzz) and the tests use
// `parse_request`, which runs the same steps on bytes in memory. Beast, no
// CAF.
#pragma once

#include "serve/http_front.hpp"

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace embedrt::serve {

using request_parser
    = boost::beast::http::request_parser<boost::beast::http::string_body>;

/// Sets the parser's header and body limits from the options.
void apply_limits(request_parser& p, const front_options& opts);

/// True if a client's `x-request-id` is used as the request's id: 1 to
/// `max_request_id` visible ASCII characters (no spaces or controls). Others
/// are replaced by an id the front end assigns.
bool acceptable_request_id(std::string_view id);

/// The longest client request id that is used as is.
constexpr std::size_t max_request_id = 128;

/// The client's request id in `header`, or "" if absent or not acceptable.
std::string client_request_id(const boost::beast::http::fields& header);

/// The request the parser completed, for the gateway: method, target, body,
/// the headers it needs, and the request id (the client's if acceptable,
/// else `assigned_id`).
front_request request_of(request_parser& p, std::string assigned_id);

/// Decodes the body of the request `p` completed into `fr.body` per its
/// `Content-Encoding` (content_encoding.hpp): the error reply (413, 415,
/// 400), or std::nullopt when `fr` is ready for the gateway.
std::optional<front_reply> decode_content(const request_parser& p,
                                          front_request& fr,
                                          const front_options& opts);

/// The reply to a request that could not be read: 413 (body over the
/// limit), 431 (header over the limit), 400 (malformed). std::nullopt: the
/// connection is gone, closed, or failed (close without an answer). A read
/// cut by the request timeout is the session's to answer (408).
std::optional<front_reply> read_error_reply(const boost::beast::error_code& ec,
                                            const front_options& opts);

/// The 400 reply to a request whose header frames its body ambiguously: a
/// `Transfer-Encoding` whose final coding is not `chunked` (RFC 9112, 6.3:
/// the server must answer 400 and close, else the body would be read as
/// the next request — request smuggling). std::nullopt: the framing is
/// sound. Call it once the header is complete.
std::optional<front_reply> framing_error(const request_parser& p);

/// The 408 reply of a request not received within `request_timeout`.
front_reply request_timeout_reply(const front_options& opts);

/// One request parsed from `bytes` with the front end's limits, as a
/// session reads it: either `request` (complete) or `error` (the reply a
/// session would send); neither when the bytes end before the request does.
struct parse_outcome {
  std::optional<front_request> request;
  std::optional<front_reply> error;
};

parse_outcome parse_request(std::string_view bytes, const front_options& opts,
                            std::string assigned_id);

} // namespace embedrt::serve
