// The pool actor: dispatcher and supervisor of one upstream.
//
// Dispatcher (Envoy's conn_pool, one actor instead of shared counters):
// - a bounded FIFO of pending calls (count and bytes): full -> `overloaded`
//   at once, never unbounded memory, never a hang;
// - work goes only to idle connection actors, so the number of connection
//   actors is the concurrency limit (lower while adaptive concurrency says
//   so), and only as fast as the upstream's rate limits let it (pacing,
//   pool_pacing.hpp);
// - continuous batching: when a connection becomes idle it takes as many
//   queued calls (same model, dimensions and user) as fit one upstream
//   request (provider profile: inputs, estimated tokens, bytes); at low load
//   a call goes out alone and at once;
// - retry budget: retries in flight are capped relative to all calls.
//
// Supervisor (Erlang/OTP one_for_one with intensity):
//
//          +-----------------------------------------------+
//          v                                               |
//   [up] --connection dies--> restart slot after backoff --+
//    |        (work it held is re-queued at the front)
//    +--more than R restarts in T--> [down] --probe timer--> [up]
//                                     (calls fail fast with upstream_down)
//
// Breaker: the pool spawns its upstream's breaker actor (breaker.hpp), reports
// every upstream call's verdict to it and follows the views it sends: open ->
// calls fail at once with `breaker_open` and the time left (queued calls too);
// half-open -> only the permitted probe calls go out, other calls fail fast.
//
// A 400 on a merged batch resends each caller's call alone (the request actor
// bisects a caller's own multi-input call); a batch the upstream refuses as
// too large as a whole (413, `max_tokens_per_request`) halves the pool's
// learned token cap and is re-batched under it.
#pragma once

#include "breaker.hpp"
#include "connection_actor.hpp"
#include "embedrt/config.hpp"
#include "embedrt/policies.hpp"
#include "health_check.hpp"
#include "interfaces.hpp"
#include "metrics_actor.hpp"
#include "pool_pacing.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace embedrt::detail {

/// Everything a pool needs (immutable after spawn).
struct pool_env {
  upstream_config cfg;
  provider_profile profile;
  std::shared_ptr<const connection_env> conn_env;
  retry_config retry;
  bool batching = true;
  /// Where upstream attempts are recorded (null: metrics off).
  metrics_actor metrics;
  /// Test hook: called with every connection actor the pool spawns.
  std::function<void(const connection_actor&)> on_connection_spawned;
  /// Chaos hook, off when empty: a call with an input equal to this makes
  /// the pool throw.
  std::string crash_marker;
  /// Test hook: called with every breaker actor the pool spawns.
  std::function<void(const breaker_actor&)> on_breaker_spawned;
  /// The breaker of this upstream (nullptr: no breaker).
  std::shared_ptr<const breaker_env> breaker;
  /// Test hook: spawns this behavior instead of real connection actors
  /// (virtual-time tests of dispatching and supervision). It answers a call
  /// like a real one: `(result_atom, call_result)` to the call's sender.
  std::function<connection_impl::behavior_type(connection_impl::pointer)>
      connection_behavior;
};

/// A queued or in-flight call.
struct pool_item {
  upstream_call call;
  caf::typed_response_promise<call_result> rp;
  std::size_t bytes = 0;
  std::size_t tokens = 0;
  /// How often a connection died while holding this call.
  uint32_t crashes = 0;
  /// Never merge with other calls (set after a batch failed as a whole).
  bool solo = false;
  /// Counted as a retry by the retry budget (released with the answer).
  bool budgeted_retry = false;
  /// The caller's deadline on the pool's clock (ns; 0 = none), from the
  /// call's budget at arrival.
  int64_t deadline_ns = 0;
  /// When the pool admitted the call, and how long it then waited for a
  /// connection (metrics: queue wait).
  int64_t enqueued_ns = 0;
  int64_t queue_ns = 0;
};

/// One connection slot of the pool.
struct pool_slot {
  enum class state {
    idle, ///< Alive, no call.
    busy, ///< Alive, one call in flight (`batch`).
    dead, ///< Died; a restart is scheduled (or the upstream is down).
  };
  state st = state::dead;
  connection_actor hdl;
  /// The call in flight and the items it carries.
  uint64_t call_id = 0;
  std::vector<pool_item> batch;
  /// The connection actor's socket stayed open after its last call (kept
  /// alive): the `sockets` gauge counts these and the busy slots.
  bool socket_open = false;
  /// Consecutive restarts of this slot (reset when a call succeeds).
  uint32_t restarts = 0;
  /// Breaker epoch the call in flight was dispatched under.
  uint64_t breaker_epoch = 0;
  /// The call's timeout was shortened to its earliest caller deadline.
  bool deadline_capped = false;
  /// When the call in flight was sent (actor clock, ns).
  int64_t dispatched_ns = 0;
  /// Estimated tokens of the call in flight.
  std::size_t tokens = 0;
  /// When the call in flight counts as stuck (actor clock, ns): its attempt
  /// timeout plus a grace period, checked by the pool's watchdog.
  int64_t stuck_at_ns = 0;
};

struct pool_state {
  static inline const char* name = "embedrt.pool";

  /// Answers every call still queued or in flight with `stop_reason`.
  ~pool_state();

  std::shared_ptr<const pool_env> env;
  std::deque<pool_item> queue;
  std::size_t queue_bytes = 0;
  std::vector<pool_slot> slots;
  std::vector<uint32_t> idle;
  retry_budget budget{0.2, 10};
  restart_intensity intensity{10, milliseconds{10000}};
  /// Supervision epoch: bumped when the upstream goes down, so restart
  /// timers of the previous epoch are ignored.
  uint64_t epoch = 0;
  bool down = false;
  uint32_t down_count = 0;
  caf::timespan down_until{0};
  uint64_t next_call_id = 0;
  /// The breaker and the pool's copy of its last view (the breaker owns the
  /// state; `permits` are the probe calls this pool may still start).
  breaker_actor breaker;
  breaker_view view;
  /// While open: when the breaker turns half-open (pool clock, ns).
  int64_t open_until_ns = 0;
  uint32_t permits = 0;
  /// Failure outcomes sent to the breaker and not yet judged: nothing is
  /// dispatched until they are, so a view that opens the breaker arrives
  /// before the next call can go out (the breaker sends the view, then its
  /// answer; one sender's messages arrive in order).
  uint32_t verdicts_pending = 0;
  /// The watchdog timer, armed for the earliest of the `stuck_at_ns` of the
  /// calls in flight and the deadlines of the queued calls (0: not armed):
  /// it kills stuck connections and answers queued calls at their deadline,
  /// so callers need no timeout of their own. A time earlier than the armed
  /// one re-arms it; a timer for another time is stale and ignored. (CAF
  /// 0.17 never cancels a request's timeout, so a timeout per call would
  /// hold one clock entry per call for its whole timeout.)
  int64_t watchdog_at = 0;
  /// Tokens per upstream request the upstream accepted to learn (0: the
  /// profile's limit), lowered when it refuses a batch as too large.
  std::size_t token_cap = 0;
  /// Typical time on the wire of a successful upstream call (EWMA, ns; 0:
  /// none yet): the breaker's silence bound and the admission estimate.
  int64_t latency_ns = 0;
  /// Deadline-aware admission: how long a connection is taken by one call,
  /// dispatch to result (EWMA, ns; 0: nothing completed yet), and how many
  /// queued calls one upstream call carries (EWMA; > 1 with batching).
  int64_t service_ns = 0;
  double calls_per_dispatch = 0.0;
  /// Scratch for the admission estimate: the ages of the calls in flight.
  std::vector<int64_t> busy_ages;
  /// The upstream refused base64: every call asks for float from now on.
  bool float_only = false;
  /// Refusals (400/422 that are not about size or encoding) of single calls
  /// with the same message, from distinct requests, without a success in
  /// between: at `misconfigured_after` the upstream refuses everything the
  /// same way (misconfigured) and such refusals become its failures (502).
  std::string refusal;
  std::vector<std::string> refusal_requests;
  bool misconfigured = false;
  /// Counters reported by `health`.
  int64_t upstream_calls = 0;
  int64_t connects = 0;
  int64_t reuses = 0;
  int64_t restarts = 0;
  int64_t rejected = 0;
  /// Rate-limit pacing and the adaptive concurrency limit (each off when
  /// its upstream_config switch is).
  pool_pacing pacing;
  /// Where metrics events go (null: metrics off); replaced by the service
  /// when it restarts its metrics actor.
  metrics_actor metrics;
  /// What every call still held gets when the pool ends: `cancelled` when it
  /// was stopped, `upstream_down` when it crashed or was killed. The state's
  /// destructor answers them (it runs on every way out, `kill` included).
  caf::error stop_reason;
  /// Live connection actors, shared with the exit functor that stops them
  /// when the pool ends (only touched by this actor, also in that functor).
  std::shared_ptr<std::vector<connection_actor>> children
      = std::make_shared<std::vector<connection_actor>>();
  /// The breaker, shared with the same exit functor.
  std::shared_ptr<breaker_actor> breaker_box
      = std::make_shared<breaker_actor>();
  /// The active health check (null: off), shared with the same functor;
  /// its last verdict: failed (with why) until a check or a call succeeds.
  health_checker_actor checker;
  std::shared_ptr<health_checker_actor> checker_box
      = std::make_shared<health_checker_actor>();
  bool unhealthy = false;
  std::string unhealthy_reason;
  /// Who is told this pool's availability (the service, held by address:
  /// it owns the pool), and what it was told last.
  caf::actor_addr watcher;
  bool told_available = true;
};

/// Splits a merged call's usage between its callers in proportion to
/// `weights` (each caller's estimated tokens; exact for token arrays) with
/// largest-remainder rounding, so the parts sum exactly to `total` (each
/// field on its own). Equal weights when all are 0; negative totals count
/// as 0.
std::vector<token_usage> split_usage(const token_usage& total,
                                     const std::vector<std::size_t>& weights);

pool_impl::behavior_type
pool_actor_fn(pool_impl::stateful_pointer<pool_state> self,
              std::shared_ptr<const pool_env> env);

} // namespace embedrt::detail
