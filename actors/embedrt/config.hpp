// Configuration of an embedrt runtime: the upstreams and the policies of the
// request, pool and supervisor actors. Plain structs with documented
// defaults; the `embedrt` command fills them from flags, environment and a
// config file.
#pragma once

#include "embedrt/protocol/provider.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace embedrt {

using std::chrono::milliseconds;

/// Retry policy of request actors (docs/architecture.md, "Life of one
/// request").
struct retry_config {
  /// Attempts per chunk, the first included (1 = no retries).
  uint32_t max_attempts = 4;
  /// Full-jitter exponential backoff: delay = uniform(0, min(cap, base*2^n)).
  milliseconds backoff_base{50};
  milliseconds backoff_cap{2000};
  /// An upstream retry hint longer than this is not waited for: the attempt
  /// fails with the upstream's error at once.
  milliseconds max_retry_after{30000};
  /// Retry budget: retries in flight may be at most this share of all calls
  /// in flight at the pool, plus `budget_min_retries` (so a quiet system can
  /// still retry). Half: an upstream failing 20 % of its calls at random
  /// has about that share of retries in flight on average and far more at
  /// times (a merged batch that fails comes back as one retry per caller,
  /// hung calls stay in flight), so with 20 % the chaos test lost up to 7 %
  /// of its requests to refused retries (docs/reliability.md, "Chaos"); a
  /// half still bounds the extra load of retries to about 2x.
  double budget_ratio = 0.5;
  uint32_t budget_min_retries = 10;
};

/// Supervision of connection actors (per upstream).
struct supervision_config {
  /// Restart intensity: more than `max_restarts` restarts within `within`
  /// marks the upstream down.
  uint32_t max_restarts = 10;
  milliseconds within{10000};
  /// Backoff before restarting a dead connection actor (doubles per
  /// consecutive restart of the same slot, capped).
  milliseconds restart_backoff{10};
  milliseconds restart_backoff_cap{1000};
  /// How long an upstream stays down before a probe (doubles, capped).
  milliseconds down_backoff{1000};
  milliseconds down_backoff_cap{30000};
};

/// Circuit breaker of one upstream (docs/architecture.md;
/// actors/src/breaker.hpp has the state diagram). Failures: connection failures
/// and attempt timeouts, TLS failures, invalid responses, 5xx, 408 and 429 rate
/// limits; slow calls when `slow_call_threshold` is set; attempts cut short by
/// the caller's deadline after the upstream was silent for the silence bound
/// (below). Not failures: the caller's own errors (400, 413, 422), auth and
/// quota errors, and other attempts cut short by the caller's deadline.
struct breaker_config {
  bool enabled = true;
  /// Closed -> open after this many consecutive failures ...
  uint32_t consecutive_failures = 5;
  /// ... but a run that random failures at the rate seen before it reach
  /// with higher odds than these does not count: once the window holds
  /// failures from before the run, at rate r, the run must also be at least
  /// ln(odds) / ln(r) long (1e-9: 13 at 20 %, 18 at 30 %). So an upstream
  /// that fails at random (20 % of calls) does not open the breaker (at 20 %
  /// a run of 5 starts once in about 4,000 calls), while one that was
  /// healthy and dies opens it after `consecutive_failures`. 0: a plain
  /// count.
  double random_run_odds = 1e-9;
  /// ... or when the failure rate over the last `window` calls reaches
  /// `failure_rate`, once at least `min_calls` calls are in the window
  /// (a count-based window as resilience4j's: 50 % over 100, here from 50
  /// calls on: with 20 then 20 % random failures would reach 50 % early in
  /// about 1 window in 300).
  double failure_rate = 0.5;
  uint32_t window = 100;
  uint32_t min_calls = 50;
  /// A successful call slower than this counts as a failure (0: off).
  milliseconds slow_call_threshold{0};
  /// An attempt cut short by its caller's deadline counts as a failure when
  /// the upstream had answered nothing for at least this long and for at
  /// least `silent_call_factor` x its typical latency (an EWMA of recent
  /// successful calls' time on the wire; this threshold alone until one
  /// succeeded). Shorter ones are the caller's (ignored). 0: never counts.
  milliseconds silent_call_threshold{1000};
  double silent_call_factor = 4.0;
  /// Open time: reset_timeout * 2^(trips-1), capped at max_reset_timeout,
  /// times (1 + jitter * uniform[0,1)) (Akka's backoff with random factor);
  /// the upstream's Retry-After instead when it is longer (capped at
  /// max_retry_after).
  milliseconds reset_timeout{1000};
  milliseconds max_reset_timeout{60000};
  double jitter = 0.2;
  milliseconds max_retry_after{300000};
  /// Half-open: this many probe calls may go out; all must succeed to close,
  /// any failure re-opens.
  uint32_t half_open_probes = 1;
};

/// One OpenAI-compatible upstream.
struct upstream_config {
  /// Name used in logs, metrics and health (default: host:port).
  std::string name;
  /// Base URL as in OPENAI_BASE_URL, e.g. "http://127.0.0.1:8080/v1".
  std::string base_url;
  provider_kind provider = provider_kind::openai;
  /// The API key (resolved by the caller from the environment; never logged).
  std::string api_key;
  /// Azure's api-version.
  std::string azure_api_version = "2024-02-01";
  /// Inputs a caller may send in one request to this upstream's models (0:
  /// the provider profile's, OpenAI's 2,048). More are refused with
  /// `invalid_input` before any I/O; distinct from the profile's
  /// `max_inputs`, the inputs of one upstream call (batching).
  std::size_t max_inputs_per_request = 0;
  /// Models this upstream serves (empty: any). Matching is exact.
  std::vector<std::string> models;
  /// Caller model name -> upstream model name (e.g. an Azure deployment).
  std::map<std::string, std::string> model_map;
  /// Number of connection actors = concurrency limit.
  uint32_t connections = 8;
  /// Bounded queue in front of the connections: max queued calls and bytes.
  uint32_t max_queue = 10000;
  std::size_t max_queue_bytes = 64 * 1024 * 1024;
  /// Timeout of one attempt (connect + request + response).
  milliseconds attempt_timeout{10000};
  /// TLS: verify certificate and host name (default); extra CA file.
  bool tls_verify = true;
  std::string ca_file;
  /// Max bytes of one response body.
  std::size_t max_response_bytes = 64 * 1024 * 1024;
  /// Continuous batching: merge queued calls into one upstream request.
  bool batching = true;
  /// Request vectors base64-encoded upstream (4x smaller, no float parsing;
  /// config key `encoding_format`). An upstream that refuses base64 (a
  /// 400/422 naming it) is asked in float from then on: the pool remembers
  /// it and resends the refused calls.
  bool base64 = true;
  /// Routing weight among the upstreams that serve the same model (>= 1):
  /// the service prefers the upstream with the fewest requests outstanding
  /// per unit of weight (docs/reliability.md, "Routing across upstreams").
  uint32_t weight = 1;
  /// Routing priority (lower first): an upstream of a higher priority only
  /// takes requests for a model when none of a lower one serving it is
  /// available — a fallback.
  uint32_t priority = 0;
  /// Active health check: every this often one embedding of one short input
  /// is sent on a connection of its own; a failure marks the upstream
  /// unhealthy (not ready, routed to last) until a check or a call succeeds.
  /// 0 = off (docs/reliability.md, "Health checks").
  milliseconds health_check_interval{0};
  /// The model the health check asks for (empty: the first of `models`,
  /// mapped through `model_map`, else the first `model_map` target, else
  /// "text-embedding-3-small").
  std::string health_check_model;
  /// Rate-limit pacing (docs/architecture.md, "Pacing and adaptive
  /// concurrency"): the pool holds a batch back while sending it would
  /// exceed the requests or tokens the upstream has left, learned from its
  /// x-ratelimit-* headers or, before and without those, `rpm`/`tpm`. On by
  /// default: without limits it never holds anything.
  bool pacing = true;
  /// Requests and tokens per minute to pace to (0: only the headers).
  int64_t rpm = 0;
  int64_t tpm = 0;
  /// Adaptive concurrency: the calls in flight (at most `connections`, at
  /// least `min_connections`) follow 429s, attempt timeouts and latency
  /// (AIMD). Off by default: a fixed number of connections is what an
  /// operator sized for.
  bool adaptive_concurrency = false;
  uint32_t min_connections = 1;
  supervision_config supervision;
  breaker_config breaker;
};

/// The embedding cache of a service (docs/caching.md): vectors by (upstream
/// model after `model_map`, dimensions, exact input bytes or token ids),
/// single-flight for identical inputs in flight, optionally persisted.
/// Off by default: with `enabled = false` the service holds no cache and a
/// request takes the same path as without this feature.
struct cache_config {
  bool enabled = false;
  /// Bound of the in-memory cache: keys, vectors and per-entry overhead.
  std::size_t max_bytes = std::size_t{256} << 20;
  /// Entries older than this are not served (memory and disk); 0 = no
  /// limit.
  milliseconds ttl{0};
  /// Directory of the persistent store (LMDB), shared by processes and
  /// kept across restarts; empty = memory only.
  std::string path;
  /// Largest size of the persistent store (LMDB map size); when full, new
  /// entries are not persisted (counted as persistent errors).
  std::size_t disk_max_bytes = std::size_t{4} << 30;
};

/// The whole runtime.
struct runtime_config {
  std::vector<upstream_config> upstreams;
  /// Deadline of a request whose `timeout` is 0.
  milliseconds default_timeout{30000};
  retry_config retry;
  /// Asio I/O threads (fixed for the life of the runtime).
  std::size_t io_threads = 1;
  /// Seed of the request actors' jitter (0: from std::random_device).
  uint64_t seed = 0;
  /// Record request and upstream metrics (counters, histograms; see
  /// docs/operations.md). Off: actors send no metric events; `metrics`
  /// still answers with the pools' gauges and process figures.
  bool metrics = true;
  /// The embedding cache (off by default).
  cache_config cache;
};

} // namespace embedrt
