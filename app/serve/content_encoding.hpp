// Request bodies with `Content-Encoding` (the front end of `embedrt serve`):
// `gzip` (and its alias `x-gzip`) is decompressed, `identity` or none is
// taken as is; anything else gets 415 with `Accept-Encoding: gzip`
// (RFC 7694). The decompressed size is bounded by the body limit: inflating
// stops as soon as the output would pass it (413), so a small "gzip bomb"
// never takes more memory than the limit. No CAF, no Beast.
#pragma once

#include "serve/http_front.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace embedrt::serve {

/// Replaces `body` with its decoding per the `Content-Encoding` header value
/// `encoding` ("" if absent). Returns the error reply (413 over
/// `max_bytes`, 415 for an encoding other than gzip or identity, 400 for
/// data that is not valid gzip), or std::nullopt when `body` is ready.
std::optional<front_reply> decode_body(std::string_view encoding,
                                       std::string& body,
                                       std::size_t max_bytes);

} // namespace embedrt::serve
