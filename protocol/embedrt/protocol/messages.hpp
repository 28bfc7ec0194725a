// Typed messages exchanged by embedrt's actors and with host applications.
//
// Every struct is a plain aggregate with a free 0.17-style `inspect()`, so it
// can be serialized by CAF's binary serializer and cross CAF nodes. All types
// are listed in the `embedrt` type-ID block (type_ids.hpp).
#pragma once

#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/timespan.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace embedrt {

/// A caller's request: embed `inputs` with `model`.
struct embed_request {
  /// The model name as the caller knows it (mapped per upstream).
  std::string model;
  /// The texts to embed, in order. Must not be empty.
  std::vector<std::string> inputs;
  /// Requested output dimensions; 0 means the model's default.
  int32_t dimensions = 0;
  /// Optional end-user id forwarded to the upstream (`user`).
  std::string user;
  /// Time budget for this request, measured from its arrival at the service;
  /// 0 means the service's default deadline.
  caf::timespan timeout{0};
  /// Caller-chosen id for logs; the service assigns one if empty.
  std::string request_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, embed_request& x) {
  return f(caf::meta::type_name("embedrt.embed_request"), x.model, x.inputs,
           x.dimensions, x.user, x.timeout, x.request_id);
}

/// Token accounting as reported by the upstream.
struct token_usage {
  int64_t prompt_tokens = 0;
  int64_t total_tokens = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_usage& x) {
  return f(caf::meta::type_name("embedrt.token_usage"), x.prompt_tokens,
           x.total_tokens);
}

/// The successful answer to an `embed_request`: exactly one vector per input,
/// in the order of the inputs.
struct embed_result {
  /// The model that produced the vectors (as reported by the upstream).
  std::string model;
  /// One L2-normalised (by the provider) vector per input.
  std::vector<std::vector<float>> embeddings;
  /// Token usage summed over all upstream calls made for this request.
  token_usage usage;
  /// Name of the upstream that served the request.
  std::string upstream;
  /// The request id (caller's or assigned).
  std::string request_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, embed_result& x) {
  return f(caf::meta::type_name("embedrt.embed_result"), x.model, x.embeddings,
           x.usage, x.upstream, x.request_id);
}

/// Health of one upstream as seen by the service.
struct upstream_health {
  std::string name;
  std::string base_url;
  /// "up", "down" (restart intensity exceeded), "breaker_open" or
  /// "half_open" (the breaker lets probe calls through).
  std::string state;
  int32_t connections = 0;
  int32_t idle_connections = 0;
  int32_t queued_requests = 0;
  /// Counters since start: upstream HTTP attempts completed, of which over a
  /// new connection (`connects`) or a kept-alive one (`reuses`); connection
  /// actor restarts; calls rejected as overloaded (queue full or retry
  /// budget).
  int64_t upstream_calls = 0;
  int64_t connects = 0;
  int64_t reuses = 0;
  int64_t restarts = 0;
  int64_t rejected = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, upstream_health& x) {
  return f(caf::meta::type_name("embedrt.upstream_health"), x.name, x.base_url,
           x.state, x.connections, x.idle_connections, x.queued_requests,
           x.upstream_calls, x.connects, x.reuses, x.restarts, x.rejected);
}

/// Answer to a `health` request: `ready` is true when at least one upstream
/// can serve requests.
struct health_report {
  bool ready = false;
  std::vector<upstream_health> upstreams;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, health_report& x) {
  return f(caf::meta::type_name("embedrt.health_report"), x.ready, x.upstreams);
}

// -- runtime-internal messages (request -> pool -> connection) ---------------
//
// These never cross nodes, but are ordinary serializable messages like the
// public ones (and listed in the type-ID block).

/// One piece of a caller's request as handed to an upstream's pool: a chunk of
/// inputs that fits one upstream request (the request actor splits larger
/// caller batches). The pool may merge several calls into one upstream request
/// (continuous batching) and splits the vectors back.
struct upstream_call {
  /// Model name as sent upstream (already mapped).
  std::string model;
  std::vector<std::string> inputs;
  int32_t dimensions = 0;
  std::string user;
  /// Absolute deadline on the node's steady clock (actor_clock), in ns since
  /// the clock's epoch. The pool drops work whose deadline has passed.
  int64_t deadline_ns = 0;
  /// True if this call retries an earlier failed attempt (retry budget).
  bool is_retry = false;
  /// The caller's request id (logs).
  std::string request_id;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, upstream_call& x) {
  return f(caf::meta::type_name("embedrt.upstream_call"), x.model, x.inputs,
           x.dimensions, x.user, x.deadline_ns, x.is_retry, x.request_id);
}

/// The pool's order to a connection actor: one upstream HTTP request.
struct connection_call {
  /// Pool-assigned id of this dispatch (echoed in the result).
  uint64_t call_id = 0;
  std::string model;
  std::vector<std::string> inputs;
  int32_t dimensions = 0;
  std::string user;
  /// Timeout of this attempt (connect included), already capped by the
  /// earliest deadline of the work in it.
  caf::timespan timeout{0};
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, connection_call& x) {
  return f(caf::meta::type_name("embedrt.connection_call"), x.call_id, x.model,
           x.inputs, x.dimensions, x.user, x.timeout);
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
  /// The attempt hit its timeout (the socket was closed).
  bool timed_out = false;
  /// The upstream refused the request as too large as a whole (413 or
  /// OpenAI's `max_tokens_per_request`): a smaller batch may pass.
  bool too_large = false;
  /// A 400 about the request as a whole (its error names a parameter other
  /// than `input`, e.g. `dimensions`): bisecting the inputs cannot help.
  bool request_level = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, call_result& x) {
  return f(caf::meta::type_name("embedrt.call_result"), x.call_id, x.error,
           x.retryable, x.retry_after_ms, x.model, x.embeddings, x.usage,
           x.upstream_request_id, x.connected, x.reused, x.upstream_ns,
           x.ratelimit_remaining_requests, x.ratelimit_remaining_tokens,
           x.timed_out, x.too_large, x.request_level);
}

/// State of a circuit breaker (actors/src/breaker.hpp).
enum class breaker_state : uint8_t { closed, open, half_open };

/// "closed", "open" or "half_open".
const char* to_string(breaker_state s);

/// The breaker's word to its pool (breaker -> pool). A new `epoch` starts
/// with every transition and replaces the pool's view; a view with the
/// current epoch in `half_open` adds `permits` probe calls.
struct breaker_view {
  uint64_t epoch = 0;
  breaker_state state = breaker_state::closed;
  /// While open: when the breaker turns half-open, on the node's steady
  /// clock (ns since the actor_clock epoch).
  int64_t open_until_ns = 0;
  /// While half-open: probe calls the pool may start.
  uint32_t permits = 0;
  /// Why the breaker moved (log and error detail).
  std::string reason;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, breaker_view& x) {
  return f(caf::meta::type_name("embedrt.breaker_view"), x.epoch, x.state,
           x.open_until_ns, x.permits, x.reason);
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

/// What an I/O thread reports to a connection actor when an HTTP exchange
/// completes (built on the I/O thread from the transport's result; the actor
/// decodes and classifies it).
struct http_outcome {
  /// Sequence number of the exchange (stale completions are ignored).
  uint64_t seq = 0;
  /// 0 = none, else the transport error (actors/src/http_transport.hpp).
  uint8_t transport_error = 0;
  std::string error_message;
  int32_t status = 0;
  std::string body;
  /// Parsed response hints: retry-after(-ms) in ms (-1 = absent),
  /// x-should-retry (-1 = absent, 0 = false, 1 = true), x-request-id.
  int64_t retry_after_ms = -1;
  int8_t should_retry = -1;
  std::string request_id;
  /// Error code of an OpenAI error body, e.g. "insufficient_quota", and the
  /// parameter it names, e.g. "input".
  std::string error_code;
  std::string error_param;
  bool connected = false;
  bool reused = false;
  int64_t total_ns = 0;
  /// x-ratelimit-remaining-{requests,tokens}; -1 = absent or malformed.
  int64_t ratelimit_remaining_requests = -1;
  int64_t ratelimit_remaining_tokens = -1;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, http_outcome& x) {
  return f(caf::meta::type_name("embedrt.http_outcome"), x.seq,
           x.transport_error, x.error_message, x.status, x.body,
           x.retry_after_ms, x.should_retry, x.request_id, x.error_code,
           x.error_param, x.connected, x.reused, x.total_ns,
           x.ratelimit_remaining_requests, x.ratelimit_remaining_tokens);
}

} // namespace embedrt
