// The active health check of one upstream: a child of its pool that, every
// `health_check_interval`, sends one embedding of one short input over a
// connection of its own and tells the pool whether it passed.
//
//   [idle] --check timer (epoch)--> [checking] --result--> [idle]
//     ^                                               |  (checked, ok, why)
//     +-------------- next check after the interval --+   sent to the pool
//
// A check passes on a 200 with valid vectors, and on a 429 rate limit (the
// upstream is reachable, authenticated and serves the path); anything else —
// connection refused, timeout, 401/403, 404 (a base URL without /v1), 5xx,
// an invalid response — fails it with the error as reason. The check asks
// for float vectors (never base64, so an upstream refusing base64 is not
// unhealthy) with the attempt timeout capped at 5 s. Its connection is not
// one of the pool's: it never takes a slot from callers and is not counted
// in the pool's gauges or metrics (docs/reliability.md, "Health checks").
#pragma once

#include "embedrt/config.hpp"
#include "interfaces.hpp"
#include "messages.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <memory>
#include <string>

namespace embedrt::detail {

struct pool_env;

/// The input the health check embeds.
constexpr const char* health_check_input = "embedrt health check";

/// The tokens the health check's input counts for (its estimate).
int64_t health_check_tokens();

/// The model the health check asks for: `health_check_model`, else the
/// first of `models` mapped through `model_map`, else the first `model_map`
/// target, else "text-embedding-3-small".
std::string health_check_model(const upstream_config& cfg);

struct health_check_state {
  static inline const char* name = "embedrt.health_check";

  std::shared_ptr<const pool_env> env;
  /// The pool (held by address: the pool owns this actor).
  caf::actor_addr pool;
  /// Its own connection (monitored; respawned when it dies).
  connection_actor conn;
  /// The same, shared with the exit functor that stops it with this actor.
  std::shared_ptr<connection_actor> conn_box
      = std::make_shared<connection_actor>();
  /// The check in flight (0: none) and the timer epoch.
  uint64_t call_id = 0;
  uint64_t epoch = 0;
};

/// Starts checking at once, then every `env->cfg.health_check_interval`
/// after the previous check completed. Uses `env->connection_behavior`
/// instead of a real connection when set (virtual-time tests).
health_checker_actor::behavior_type
health_check_fn(health_checker_actor::stateful_pointer<health_check_state> self,
                std::shared_ptr<const pool_env> env, caf::actor_addr pool);

} // namespace embedrt::detail
