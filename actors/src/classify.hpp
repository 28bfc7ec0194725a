// Classification of one upstream HTTP exchange into a `call_result`: decoded
// and validated vectors, or a typed error with its retryability. Pure code,
// shared by the connection actor and its unit tests.
#pragma once

#include "embedrt/protocol/openai.hpp"
#include "messages.hpp"

namespace embedrt::detail {

/// Classifies an exchange (docs/architecture.md, "connection actor"):
/// - transport errors: timeout, connect, reset -> connection_failed
///   (retryable); TLS -> tls_failed (not retryable); an over-large body ->
///   invalid_response (not retryable); cancelled -> cancelled (retryable);
/// - 200: decoded and validated -> success; an invalid body ->
///   invalid_response (retryable: upstream glitches are transient and
///   embeddings are idempotent);
/// - 401/403 -> auth_failed; 429 insufficient_quota -> quota_exceeded (both
///   not retried); other 429 -> rate_limited (retryable);
/// - 400/413/422 -> invalid_input with the upstream's message (not retried);
/// - 408/409/5xx -> upstream_error (retryable); other statuses ->
///   upstream_error (not retryable);
/// - `x-should-retry` overrides the retryability of any failure.
call_result classify_outcome(http_outcome&& out,
                             const openai::response_expectation& expect,
                             const std::string& upstream_name);

} // namespace embedrt::detail
