// embedrt's metrics: the snapshot a `metrics` request on the service answers
// with, the compact events actors send to the service's metrics actor, and
// the Prometheus text exposition (format 0.0.4) rendered from a snapshot.
// docs/operations.md lists every metric with its meaning and example PromQL.
//
// Pure data and a renderer: no actors in here. All structs are plain
// aggregates with 0.17-style `inspect` and listed in the type-ID block, so a
// snapshot crosses CAF nodes.
#pragma once

#include "embedrt/protocol/histogram.hpp"

#include <caf/meta/type_name.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace embedrt {

// -- the snapshot ------------------------------------------------------------

/// Breaker states as numbers (the `embedrt_breaker_state` gauge and the
/// `from`/`to` of `breaker_transition_event`): equal to the values of the
/// breaker's own state enum.
constexpr uint8_t breaker_closed = 0;
constexpr uint8_t breaker_open = 1;
constexpr uint8_t breaker_half_open = 2;

/// "closed", "open", "half_open" (or "unknown").
const char* breaker_state_name(uint8_t state);

/// Caller requests that ended with one outcome (embedrt_requests_total,
/// embedrt_texts_total). `upstream` is the upstream that answered last
/// ("none" if the request failed before reaching one), `outcome` is "ok" or
/// "error", `error` the errc name ("none" when ok).
struct request_counter {
  std::string upstream;
  std::string model;
  std::string outcome;
  std::string error;
  int64_t requests = 0;
  /// Inputs of those requests.
  int64_t texts = 0;
  /// Retried attempts made for them.
  int64_t retries = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request_counter& x) {
  return f(caf::meta::type_name("embedrt.request_counter"), x.upstream, x.model,
           x.outcome, x.error, x.requests, x.texts, x.retries);
}

/// End-to-end latency (arrival at the service to reply) of the requests of
/// one (upstream, model, outcome), in ns (embedrt_request_duration_seconds).
struct request_latency {
  std::string upstream;
  std::string model;
  std::string outcome;
  log_histogram latency_ns;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request_latency& x) {
  return f(caf::meta::type_name("embedrt.request_latency"), x.upstream, x.model,
           x.outcome, x.latency_ns);
}

/// Upstream HTTP attempts with one outcome (embedrt_upstream_requests_total).
struct upstream_call_counter {
  std::string outcome;
  std::string error;
  int64_t calls = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f,
                                        upstream_call_counter& x) {
  return f(caf::meta::type_name("embedrt.upstream_call_counter"), x.outcome,
           x.error, x.calls);
}

/// Breaker transitions between two states
/// (embedrt_breaker_transitions_total).
struct breaker_transition_counter {
  uint8_t from = breaker_closed;
  uint8_t to = breaker_closed;
  int64_t count = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f,
                                        breaker_transition_counter& x) {
  return f(caf::meta::type_name("embedrt.breaker_transition_counter"), x.from,
           x.to, x.count);
}

/// Everything about one upstream.
struct upstream_metrics {
  std::string name;
  /// From the pool's health: "up", "down" or "unresponsive".
  std::string state;
  /// Gauges at the time of the snapshot (pool health): sockets open to the
  /// upstream, of which idle (kept alive, no call) and busy (a call in
  /// flight); `connection_actors` (below) are the connection actors alive.
  int32_t connections_open = 0;
  int32_t connections_idle = 0;
  int32_t connections_busy = 0;
  int32_t queue_depth = 0;
  /// Counters since start (pool health): new connections, kept-alive
  /// reuses, connection actor restarts, calls rejected as overloaded.
  int64_t connects = 0;
  int64_t reuses = 0;
  int64_t restarts = 0;
  int64_t rejected = 0;
  /// Retries the pool's retry budget refused (included in `rejected`).
  int64_t retry_budget_rejections = 0;
  /// Token usage reported by the upstream.
  int64_t prompt_tokens = 0;
  int64_t total_tokens = 0;
  /// Last seen x-ratelimit-remaining-{requests,tokens}; -1 = never seen.
  int64_t ratelimit_remaining_requests = -1;
  int64_t ratelimit_remaining_tokens = -1;
  /// Current breaker state (breaker_closed until the breaker reports) and
  /// transitions so far.
  uint8_t breaker_state = breaker_closed;
  std::vector<breaker_transition_counter> breaker_transitions;
  /// Upstream attempts by outcome.
  std::vector<upstream_call_counter> calls;
  /// Time calls waited in the pool's queue before a connection took them
  /// (ns), time on the wire per attempt (ns, connect included), and inputs
  /// per upstream request (the batch size).
  log_histogram queue_wait_ns;
  log_histogram upstream_latency_ns;
  log_histogram batch_inputs;
  /// Connection actors alive (the concurrency limit; each opens its socket
  /// on first use), a gauge from the pool's health.
  int32_t connection_actors = 0;
  /// Calls the pool lets be in flight (adaptive concurrency; else the
  /// connections), pacing holds and the time work was held (ns), from the
  /// pool's health.
  int32_t concurrency_limit = 0;
  int64_t pacing_holds = 0;
  int64_t pacing_held_ns = 0;
  /// Times adaptive concurrency lowered the limit, by cause (pool health).
  int64_t limit_decreases_overload = 0;
  int64_t limit_decreases_latency = 0;
  /// Tokens per minute other clients of the same key take (the pacer's
  /// measure, pool health).
  int64_t pacing_others_tpm = 0;
  /// The same for requests per minute.
  int64_t pacing_others_rpm = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, upstream_metrics& x) {
  return f(caf::meta::type_name("embedrt.upstream_metrics"), x.name, x.state,
           x.connections_open, x.connections_idle, x.connections_busy,
           x.queue_depth, x.connects, x.reuses, x.restarts, x.rejected,
           x.retry_budget_rejections, x.prompt_tokens, x.total_tokens,
           x.ratelimit_remaining_requests, x.ratelimit_remaining_tokens,
           x.breaker_state, x.breaker_transitions, x.calls, x.queue_wait_ns,
           x.upstream_latency_ns, x.batch_inputs, x.connection_actors,
           x.concurrency_limit, x.pacing_holds, x.pacing_held_ns,
           x.limit_decreases_overload, x.limit_decreases_latency,
           x.pacing_others_tpm, x.pacing_others_rpm);
}

/// The process the service runs in (/proc and getrusage).
struct process_metrics {
  double cpu_seconds = 0;
  int64_t resident_bytes = 0;
  int64_t max_resident_bytes = 0;
  int64_t threads = 0;
  /// Unix time the process started, in seconds.
  double start_time_seconds = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, process_metrics& x) {
  return f(caf::meta::type_name("embedrt.process_metrics"), x.cpu_seconds,
           x.resident_bytes, x.max_resident_bytes, x.threads,
           x.start_time_seconds);
}

/// The embedding cache of a service (docs/caching.md). Counts are of inputs.
struct cache_metrics {
  /// False when the service runs without a cache: nothing is rendered.
  bool enabled = false;
  /// Inputs answered from the cache (memory or the persistent store).
  int64_t hits = 0;
  /// Inputs of those hits found in the persistent store.
  int64_t persistent_hits = 0;
  /// Inputs that went upstream (the asker owned them).
  int64_t misses = 0;
  /// Inputs that waited for an identical input already in flight
  /// (single-flight) instead of going upstream.
  int64_t coalesced = 0;
  /// Entries evicted to keep the bound, and expired ones dropped.
  int64_t evictions = 0;
  int64_t expirations = 0;
  /// Entries and bytes held now (bytes count keys, floats and per-entry
  /// overhead), and the bound.
  int64_t entries = 0;
  int64_t bytes = 0;
  int64_t max_bytes = 0;
  /// Entries written to the persistent store, and failed store operations.
  int64_t persistent_writes = 0;
  int64_t persistent_errors = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cache_metrics& x) {
  return f(caf::meta::type_name("embedrt.cache_metrics"), x.enabled, x.hits,
           x.persistent_hits, x.misses, x.coalesced, x.evictions, x.expirations,
           x.entries, x.bytes, x.max_bytes, x.persistent_writes,
           x.persistent_errors);
}

/// The answer to a `metrics` request on the service.
struct metrics_snapshot {
  /// False when the runtime runs with metrics off
  /// (`runtime_config::metrics`): request counters and histograms are then
  /// empty; gauges, pool counters and process figures are still reported.
  bool enabled = true;
  /// Caller requests accepted by the service and not answered yet.
  int64_t requests_in_flight = 0;
  std::vector<request_counter> requests;
  std::vector<request_latency> latencies;
  std::vector<upstream_metrics> upstreams;
  process_metrics process;
  cache_metrics cache;

  /// All end-to-end latencies (every upstream, model and outcome), merged.
  log_histogram all_request_latencies() const;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, metrics_snapshot& x) {
  return f(caf::meta::type_name("embedrt.metrics_snapshot"), x.enabled,
           x.requests_in_flight, x.requests, x.latencies, x.upstreams,
           x.process, x.cache);
}

/// Renders `snap` in the Prometheus text exposition format 0.0.4 (`# HELP`,
/// `# TYPE`, one sample per line, label values escaped, histograms as
/// cumulative `_bucket{le=...}` with `_sum` and `_count`, durations in
/// seconds). Serve it with `Content-Type: text/plain; version=0.0.4`.
std::string render_prometheus(const metrics_snapshot& snap);

// -- events (actors -> the metrics actor) ------------------------------------

/// One caller request answered (request actor -> metrics actor).
struct request_record {
  std::string upstream;
  std::string model;
  /// 0 = ok, else the errc code of the reply.
  uint8_t error = 0;
  uint32_t texts = 0;
  int64_t latency_ns = 0;
  /// Attempts beyond the first, over all chunks of the request.
  uint32_t retries = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, request_record& x) {
  return f(caf::meta::type_name("embedrt.request_record"), x.upstream, x.model,
           x.error, x.texts, x.latency_ns, x.retries);
}

/// One upstream attempt completed (pool -> metrics actor), or, with
/// `retry_budget_rejected`, one retry the pool's retry budget refused
/// (nothing else set).
struct upstream_call_record {
  std::string upstream;
  bool retry_budget_rejected = false;
  /// 0 = ok, else the errc code of the attempt's failure.
  uint8_t error = 0;
  int64_t upstream_ns = 0;
  /// Inputs in the upstream request and queue wait of each call merged in.
  uint32_t batch_inputs = 0;
  std::vector<int64_t> queue_wait_ns;
  int64_t prompt_tokens = 0;
  int64_t total_tokens = 0;
  /// x-ratelimit-remaining-{requests,tokens} of the response, -1 = absent.
  int64_t ratelimit_remaining_requests = -1;
  int64_t ratelimit_remaining_tokens = -1;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, upstream_call_record& x) {
  return f(caf::meta::type_name("embedrt.upstream_call_record"), x.upstream,
           x.retry_budget_rejected, x.error, x.upstream_ns, x.batch_inputs,
           x.queue_wait_ns, x.prompt_tokens, x.total_tokens,
           x.ratelimit_remaining_requests, x.ratelimit_remaining_tokens);
}

/// A breaker changed state (breaker actor -> metrics actor). `from` and
/// `to` are breaker_closed / breaker_open / breaker_half_open.
struct breaker_transition_event {
  std::string upstream;
  uint8_t from = breaker_closed;
  uint8_t to = breaker_closed;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f,
                                        breaker_transition_event& x) {
  return f(caf::meta::type_name("embedrt.breaker_transition_event"), x.upstream,
           x.from, x.to);
}

} // namespace embedrt
