// The public messages of embedrt: what a host application (or another node)
// sends to a `service` and gets back.
//
// Every struct is a plain aggregate with a free 0.17-style `inspect()`, so it
// can be serialized by CAF's binary serializer and cross CAF nodes; all are
// listed in the `embedrt` type-ID block (type_ids.hpp). Times in messages are
// durations (a remaining budget), never points of a node's clock, so they
// mean the same on every node. The runtime's internal messages (request ->
// pool -> connection, pool <-> breaker) live in actors/src/messages.hpp.
#pragma once

#include "embedrt/protocol/packed_vectors.hpp"

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
  /// The texts to embed, in order. Exactly one of `inputs` and
  /// `token_inputs` is non-empty.
  std::vector<std::string> inputs;
  /// Or pre-tokenized inputs: the token ids of each input, in order, as
  /// OpenAI's `input` array of integer arrays (tiktoken ids for OpenAI's
  /// models). Passed upstream unchanged; each counts exactly its ids as
  /// tokens. Refused by a provider that cannot take them (`tei`).
  std::vector<std::vector<int32_t>> token_inputs;
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
           x.token_inputs, x.dimensions, x.user, x.timeout, x.request_id);
}

/// Token accounting as reported by the upstream.
struct token_usage {
  /// Tokens sent upstream (as the upstreams counted them).
  int64_t prompt_tokens = 0;
  int64_t total_tokens = 0;
  /// Tokens of the inputs served from the embedding cache, or by another
  /// caller's identical input in flight, instead of going upstream (the
  /// request actor's estimate; exact for token arrays): not in
  /// `prompt_tokens` (docs/caching.md, "Usage").
  int64_t cached_tokens = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_usage& x) {
  return f(caf::meta::type_name("embedrt.token_usage"), x.prompt_tokens,
           x.total_tokens, x.cached_tokens);
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

/// Between nodes the embeddings travel as one packed blob
/// (packed_vectors.hpp); other inspectors see the vectors.
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, embed_result& x) {
  return f(caf::meta::type_name("embedrt.embed_result"), x.model,
           wire_form<Inspector>(x.embeddings), x.usage, x.upstream,
           x.request_id);
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
  /// Sockets open to the upstream: connections carrying a call, and idle
  /// ones kept alive after their last call (`connections` counts the
  /// connection actors, which connect lazily).
  int32_t sockets = 0;
  /// Calls the pool lets be in flight now: `connections`, or lower while
  /// adaptive concurrency holds it lower.
  int32_t concurrency_limit = 0;
  /// Times the pacer held work back for the upstream's rate limits, and the
  /// time it held work in all (ns).
  int64_t pacing_holds = 0;
  int64_t pacing_held_ns = 0;
  /// Times adaptive concurrency lowered the limit, after 429s or attempt
  /// timeouts (overload) and after a lasting latency rise (congestion).
  int64_t limit_decreases_overload = 0;
  int64_t limit_decreases_latency = 0;
  /// Tokens per minute other clients of the same key take, as the pacer
  /// measures them from the upstream's remaining counts (0: none seen).
  int64_t pacing_others_tpm = 0;
  /// The same for requests per minute.
  int64_t pacing_others_rpm = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, upstream_health& x) {
  return f(caf::meta::type_name("embedrt.upstream_health"), x.name, x.base_url,
           x.state, x.connections, x.idle_connections, x.queued_requests,
           x.upstream_calls, x.connects, x.reuses, x.restarts, x.rejected,
           x.sockets, x.concurrency_limit, x.pacing_holds, x.pacing_held_ns,
           x.limit_decreases_overload, x.limit_decreases_latency,
           x.pacing_others_tpm, x.pacing_others_rpm);
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

/// A node's capacity and health as other nodes see it (answer to `status`;
/// a router asks each member periodically and routes by it).
struct node_status {
  /// The node's wire fingerprint (wire_fingerprint(), type_ids.hpp).
  std::string wire;
  /// True if at least one upstream (or member, on a router) can serve now.
  bool ready = false;
  /// True if some upstream serves every model (no `models` list).
  bool all_models = false;
  /// Model names served (callers' names: `models` and `model_map` keys).
  std::vector<std::string> models;
  /// Over the upstreams that are up or half-open: connections, idle ones
  /// and calls queued in front of them.
  int32_t connections = 0;
  int32_t idle_connections = 0;
  int32_t queued = 0;
  /// Requests accepted and not yet answered.
  int64_t in_flight = 0;
  /// Per upstream (or per member, on a router): name and state.
  std::vector<upstream_health> upstreams;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, node_status& x) {
  return f(caf::meta::type_name("embedrt.node_status"), x.wire, x.ready,
           x.all_models, x.models, x.connections, x.idle_connections, x.queued,
           x.in_flight, x.upstreams);
}

/// State of a circuit breaker (docs/architecture.md, "Breaker state machine";
/// also the `from`/`to` of the breaker-transition hook).
enum class breaker_state : uint8_t { closed, open, half_open };

/// "closed", "open" or "half_open".
const char* to_string(breaker_state s);

} // namespace embedrt
