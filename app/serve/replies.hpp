// HTTP replies of `embedrt serve` built from the runtime's answers: a result
// becomes an OpenAI embeddings response (float or base64), a typed error an
// OpenAI-shaped error body with the matching status (docs/cli.md, "embedrt
// serve", has the table):
//   invalid_input 400 (`param` names the parameter when the detail does:
//   `input` for the checks of the inputs), or 404 `model_not_found` when no
//   upstream serves the model; overloaded, rate_limited, quota_exceeded 429;
//   auth_failed, upstream_error, invalid_response, connection_failed,
//   tls_failed 502; breaker_open, upstream_down, cancelled, node_down 503;
//   deadline_exceeded 504; anything else 500.
// 429 and 503 carry `Retry-After` (whole seconds, at least 1) and
// `retry-after-ms` when the runtime knows how long to wait.
//
// An error's message keeps what the client can act on: with
// `upstream_detail::message` (the default) upstream addresses (host:port,
// URLs) and bodies the upstream echoed back (JSON inside its message) are
// dropped and the message is capped; `full` passes the runtime's detail
// through (docs/security.md).
#pragma once

#include "embedrt/protocol/messages.hpp"
#include "embedrt/protocol/openai.hpp"
#include "serve/http_front.hpp"

#include <caf/error.hpp>
#include <cstddef>
#include <memory>

namespace embedrt::serve {

/// How much of the runtime's error detail reaches the client.
enum class upstream_detail {
  /// The upstream's message, without addresses and echoed bodies.
  message,
  /// Everything (the upstream's address and whole message).
  full,
};

/// The longest error message sent with `upstream_detail::message`.
constexpr std::size_t max_client_message = 512;

/// The reply for a failed request.
front_reply reply_for_error(const caf::error& err,
                            upstream_detail detail = upstream_detail::message);

/// `detail` as a client sees it with `upstream_detail::message`.
std::string client_message(std::string_view detail);

/// Bodies estimated larger than this are streamed (front_reply::source).
constexpr std::size_t stream_threshold = 256 * 1024;
/// The size of the pieces of a streamed body.
constexpr std::size_t stream_piece_bytes = 64 * 1024;

/// The 200 reply for a successful request. A large body (over
/// `stream_threshold`, estimated) is not built here: the reply's source
/// writes it piece by piece as it is sent, freeing each vector once written,
/// and holds `keep` (the request's budget lease) until then; a small one is
/// built whole and `keep` goes with this call.
front_reply reply_for_result(embed_result&& res, openai::encoding enc,
                             std::shared_ptr<void> keep = nullptr);

} // namespace embedrt::serve
