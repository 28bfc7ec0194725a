// The runtime's internal messages: request actor -> pool -> connection actor,
// pool <-> breaker, I/O thread -> connection actor. They never leave the node
// (the public ones, in embedrt/protocol/messages.hpp, do), so they need no
// type ID; they still have `inspect` so tests can print and round-trip them.
//
// Times are durations (a remaining budget or time left), converted to a
// point of the receiving actor's clock on arrival, like the public messages.
#pragma once

#include "embedrt/protocol/messages.hpp"
#include "http_transport.hpp"

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/timespan.hpp>
#include <caf/type_id.hpp>
#include <cstdint>
#include <string>
#include <vector>

// -- internal atoms (atom constants in CAF 0.17.6: no type IDs) -------------
CAF_ADD_ATOM(embedrt, embedrt::detail, call_atom, "call")
CAF_ADD_ATOM(embedrt, embedrt::detail, result_atom, "result")
CAF_ADD_ATOM(embedrt, embedrt::detail, io_done_atom, "io_done")
CAF_ADD_ATOM(embedrt, embedrt::detail, retry_atom, "retry")
CAF_ADD_ATOM(embedrt, embedrt::detail, restart_atom, "restart")
CAF_ADD_ATOM(embedrt, embedrt::detail, probe_atom, "probe")
CAF_ADD_ATOM(embedrt, embedrt::detail, breaker_atom, "breaker")
CAF_ADD_ATOM(embedrt, embedrt::detail, outcome_atom, "outcome")
CAF_ADD_ATOM(embedrt, embedrt::detail, half_open_atom, "half_open")
CAF_ADD_ATOM(embedrt, embedrt::detail, watchdog_atom, "watchdog")
CAF_ADD_ATOM(embedrt, embedrt::detail, pace_atom, "pace")
CAF_ADD_ATOM(embedrt, embedrt::detail, sink_atom, "sink")
CAF_ADD_ATOM(embedrt, embedrt::detail, tick_atom, "tick")
CAF_ADD_ATOM(embedrt, embedrt::detail, reconnect_atom, "reconnect")
CAF_ADD_ATOM(embedrt, embedrt::detail, expire_atom, "expire")
CAF_ADD_ATOM(embedrt, embedrt::detail, check_atom, "check")
CAF_ADD_ATOM(embedrt, embedrt::detail, checked_atom, "checked")
CAF_ADD_ATOM(embedrt, embedrt::detail, avail_atom, "avail")
CAF_ADD_ATOM(embedrt, embedrt::detail, watch_atom, "watch")
CAF_ADD_ATOM(embedrt, embedrt::detail, request_done_atom, "req_done")

namespace embedrt::detail {

/// One piece of a caller's request as handed to an upstream's pool: a chunk of
/// inputs that fits one upstream request (the request actor splits larger
/// caller batches). The pool may merge several calls into one upstream request
/// (continuous batching) and splits the vectors back.
struct upstream_call {
  /// Model name as sent upstream (already mapped).
  std::string model;
  /// The texts, or (exactly one of the two is non-empty) the token arrays.
  std::vector<std::string> inputs;
  std::vector<std::vector<int32_t>> token_inputs;
  /// Estimated tokens of `inputs` (estimate_tokens, computed once by the
  /// request actor; the pool batches by it); exact for token arrays.
  int64_t tokens = 0;
  int32_t dimensions = 0;
  std::string user;
  /// Time left until the caller's deadline when the call was sent; 0 = none.
  /// The pool turns it into a deadline on its clock on arrival and answers
  /// `deadline_exceeded` by then at the latest.
  caf::timespan budget{0};
  /// True if this call retries an earlier failed attempt (retry budget).
  bool is_retry = false;
  /// True if the attempt before was answered 429 with a Retry-After: with
  /// pacing on, the pool's pacer holds every send until then, so such a
  /// retry is paced there and not counted against the retry budget.
  bool after_rate_limit = false;
  /// The caller's request id (logs).
  std::string request_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, upstream_call& x) {
  return f(caf::meta::type_name("embedrt.upstream_call"), x.model, x.inputs,
           x.token_inputs, x.tokens, x.dimensions, x.user, x.budget, x.is_retry,
           x.after_rate_limit, x.request_id);
}

/// The pool's order to a connection actor: one upstream HTTP request. The
/// connection answers with `(result_atom, call_result)` to the sender, with
/// the same `call_id`.
struct connection_call {
  /// Pool-assigned id of this dispatch (echoed in the result).
  uint64_t call_id = 0;
  std::string model;
  /// Texts or token arrays (a merged call never mixes them).
  std::vector<std::string> inputs;
  std::vector<std::vector<int32_t>> token_inputs;
  int32_t dimensions = 0;
  std::string user;
  /// Timeout of this attempt (connect included), already capped by the
  /// earliest deadline of the work in it.
  caf::timespan timeout{0};
  /// Ask for float vectors although the upstream is configured for base64:
  /// it refused base64 (the pool remembers that per upstream).
  bool float_only = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, connection_call& x) {
  return f(caf::meta::type_name("embedrt.connection_call"), x.call_id, x.model,
           x.inputs, x.token_inputs, x.dimensions, x.user, x.timeout,
           x.float_only);
}

/// The number of inputs of a caller's request or a call: its texts or its
/// token arrays.
inline std::size_t input_count(const embed_request& x) {
  return x.inputs.size() + x.token_inputs.size();
}

inline std::size_t input_count(const upstream_call& x) {
  return x.inputs.size() + x.token_inputs.size();
}

/// At least the JSON size of a token array of `ids` ids (up to 10 digits
/// and a comma each, and the brackets): what it counts for in byte limits.
inline std::size_t token_array_bytes(std::size_t ids) {
  return ids * 11 + 2;
}

/// The outcome of one upstream attempt, from connection actor to pool and from
/// pool to request actor. Exactly one of `error` / `embeddings` is meaningful.
struct call_result {
  uint64_t call_id = 0;
  /// none on success; otherwise an embedrt error (errc.hpp).
  caf::error error;
  /// Whether the failure may succeed on another attempt.
  bool retryable = false;
  /// Upstream's retry hint (retry-after-ms / retry-after), 0 if none.
  int64_t retry_after_ms = 0;
  std::string model;
  /// One vector per input of the call, in input order.
  std::vector<std::vector<float>> embeddings;
  token_usage usage;
  /// Upstream's x-request-id, if any.
  std::string upstream_request_id;
  /// True if this attempt opened a new connection / reused a kept-alive one.
  bool connected = false;
  bool reused = false;
  /// Time spent on the wire for this attempt (connect included).
  int64_t upstream_ns = 0;
  /// The response's x-ratelimit-remaining-{requests,tokens}; -1 = absent.
  int64_t ratelimit_remaining_requests = -1;
  int64_t ratelimit_remaining_tokens = -1;
  /// Its x-ratelimit-limit-{requests,tokens} and x-ratelimit-reset-*
  /// (Go durations, in ns); -1 = absent. The pool's pacer reads them.
  int64_t ratelimit_limit_requests = -1;
  int64_t ratelimit_limit_tokens = -1;
  int64_t ratelimit_reset_requests_ns = -1;
  int64_t ratelimit_reset_tokens_ns = -1;
  /// The attempt hit its timeout (the socket was closed).
  bool timed_out = false;
  /// The upstream refused the request as too large as a whole (413 or
  /// OpenAI's `max_tokens_per_request`): a smaller batch may pass.
  bool too_large = false;
  /// A 400 about the request as a whole (its error names a parameter other
  /// than `input`, e.g. `dimensions`): bisecting the inputs cannot help.
  bool request_level = false;
  /// The upstream refused `encoding_format: base64` (a 400/422 naming it):
  /// the same call in float may pass.
  bool base64_refused = false;
  /// The refusal names a request parameter (OpenAI's `param`, e.g. `input`):
  /// it is about this request, never evidence of a misconfigured upstream.
  bool names_param = false;
  /// The connection's socket stays open after this attempt (kept alive):
  /// the pool counts open sockets by it.
  bool open_after = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, call_result& x) {
  return f(caf::meta::type_name("embedrt.call_result"), x.call_id, x.error,
           x.retryable, x.retry_after_ms, x.model, x.embeddings, x.usage,
           x.upstream_request_id, x.connected, x.reused, x.upstream_ns,
           x.ratelimit_remaining_requests, x.ratelimit_remaining_tokens,
           x.ratelimit_limit_requests, x.ratelimit_limit_tokens,
           x.ratelimit_reset_requests_ns, x.ratelimit_reset_tokens_ns,
           x.timed_out, x.too_large, x.request_level, x.base64_refused,
           x.names_param, x.open_after);
}

/// The breaker's word to its pool (breaker -> pool). A new `epoch` starts
/// with every transition and replaces the pool's view; a view with the
/// current epoch in `half_open` adds `permits` probe calls.
struct breaker_view {
  uint64_t epoch = 0;
  breaker_state state = breaker_state::closed;
  /// While open: time left until the breaker turns half-open, when the view
  /// was sent (the pool keeps the point on its own clock).
  caf::timespan open_for{0};
  /// While half-open: probe calls the pool may start.
  uint32_t permits = 0;
  /// Consecutive openings (a restarted breaker resumes its backoff there).
  uint32_t trips = 0;
  /// Why the breaker moved (log and error detail).
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, breaker_view& x) {
  return f(caf::meta::type_name("embedrt.breaker_view"), x.epoch, x.state,
           x.open_for, x.permits, x.trips, x.reason);
}

/// How one upstream call counts for the breaker.
enum class call_verdict : uint8_t { success, failure, ignored };

/// "success", "failure" or "ignored".
const char* to_string(call_verdict v);

/// The outcome of one upstream call (pool -> breaker), tagged with the epoch
/// of the view it was dispatched under: outcomes of another epoch are stale.
struct breaker_outcome {
  uint64_t epoch = 0;
  call_verdict verdict = call_verdict::success;
  /// The upstream's retry hint, 0 if none.
  int64_t retry_after_ms = 0;
  /// Short description of a failure (logs).
  std::string what;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, breaker_outcome& x) {
  return f(caf::meta::type_name("embedrt.breaker_outcome"), x.epoch, x.verdict,
           x.retry_after_ms, x.what);
}

/// One HTTP exchange's outcome, built on the I/O thread from the transport's
/// result, then redacted and classified there (classify.hpp). Also the
/// message that releases a test's fake connection (`connection_impl`).
struct http_outcome {
  transport_errc transport_error = transport_errc::none;
  std::string error_message;
  int32_t status = 0;
  std::string body;
  /// Parsed response hints: retry-after(-ms) in ms (-1 = absent),
  /// x-should-retry (-1 = absent, 0 = false, 1 = true), x-request-id.
  int64_t retry_after_ms = -1;
  int8_t should_retry = -1;
  std::string request_id;
  /// Of an OpenAI error body (decoded once, on the I/O thread): its code,
  /// e.g. "insufficient_quota", the parameter it names, e.g. "input", and
  /// its message.
  std::string error_code;
  std::string error_param;
  std::string error_text;
  bool connected = false;
  bool reused = false;
  int64_t total_ns = 0;
  /// x-ratelimit-remaining-{requests,tokens}; -1 = absent or malformed.
  int64_t ratelimit_remaining_requests = -1;
  int64_t ratelimit_remaining_tokens = -1;
  /// x-ratelimit-limit-{requests,tokens} and x-ratelimit-reset-* in ns;
  /// -1 = absent or malformed.
  int64_t ratelimit_limit_requests = -1;
  int64_t ratelimit_limit_tokens = -1;
  int64_t ratelimit_reset_requests_ns = -1;
  int64_t ratelimit_reset_tokens_ns = -1;
  /// The connection stays open for the next exchange (kept alive).
  bool open_after = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, http_outcome& x) {
  return f(caf::meta::type_name("embedrt.http_outcome"), x.transport_error,
           x.error_message, x.status, x.body, x.retry_after_ms, x.should_retry,
           x.request_id, x.error_code, x.error_param, x.error_text, x.connected,
           x.reused, x.total_ns, x.ratelimit_remaining_requests,
           x.ratelimit_remaining_tokens, x.ratelimit_limit_requests,
           x.ratelimit_limit_tokens, x.ratelimit_reset_requests_ns,
           x.ratelimit_reset_tokens_ns, x.open_after);
}

} // namespace embedrt::detail
