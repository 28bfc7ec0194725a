// The pool's pacing and adaptive concurrency (pacer.hpp,
// concurrency_limit.hpp): their state in a pool and the steps the pool's
// dispatcher calls, kept out of pool_actor.cpp (docs/architecture.md,
// "Pacing and adaptive concurrency").
#pragma once

#include "concurrency_limit.hpp"
#include "embedrt/config.hpp"
#include "messages.hpp"
#include "pacer.hpp"

#include <cstdint>
#include <optional>

namespace embedrt::detail {

struct pool_pacing {
  /// Empty: pacing off / adaptive concurrency off.
  std::optional<pacer> pace;
  std::optional<concurrency_limit> limit;
  /// The pool's one pacing timer: armed for this time (0: not armed); a
  /// timer for another time is stale.
  int64_t timer_at = 0;
  /// Work held back by the pacer since (0: not held); holds and the time
  /// work was held, for metrics.
  int64_t held_since = 0;
  int64_t holds = 0;
  int64_t held_ns = 0;
  /// Estimated tokens per caller call (EWMA): the queue's tokens for the
  /// admission estimate.
  double tokens_per_call = 0.0;
};

/// Sets up pacing and the limit as `cfg` asks.
void pacing_init(pool_pacing& p, const upstream_config& cfg, int64_t now);

/// Whether the front call (`tokens`) may be sent now with `busy` calls in
/// flight: 0 yes; > 0 the pacer holds it that long (ns); < 0 the
/// concurrency limit holds it until a call finishes. Counts held time.
int64_t pacing_wait(pool_pacing& p, uint32_t busy, int64_t tokens, int64_t now);

/// The token cap of the next batch (the pacer's tokens available; a large
/// number without token pacing).
int64_t pacing_token_cap(pool_pacing& p, int64_t now);

/// A call (`call_id`, `tokens`) was sent.
void pacing_sent(pool_pacing& p, uint64_t call_id, int64_t tokens, int64_t now);

/// The health check's call (`tokens`) reached the upstream: it counts
/// against the same limits as the pool's own calls.
void pacing_charged(pool_pacing& p, int64_t tokens, int64_t now);

/// Call `r` answered; it was cut to the caller's deadline if
/// `deadline_capped`, with `busy` calls in flight (itself included) and
/// `newest` the last call id sent; it carried `tokens` (estimated: the
/// adaptive limit compares a call with calls of its size).
void pacing_answered(pool_pacing& p, const call_result& r, bool deadline_capped,
                     uint32_t busy, uint64_t newest, int64_t now,
                     int64_t tokens);

/// Call `call_id` ended without an answer: its connection died, or was
/// stuck past its attempt timeout (`stuck`: an overload sample).
void pacing_lost(pool_pacing& p, uint64_t call_id, bool stuck, uint64_t newest);

/// Admission: time until `queued` calls ahead and a call of `tokens` will
/// have been sent at the paced rate (0 without token pacing). The calls
/// ahead count for the smaller of an EWMA of the calls' tokens and
/// `tokens`: an estimate that errs low.
int64_t pacing_admission_ns(pool_pacing& p, std::size_t queued, int64_t tokens,
                            int64_t now);

/// The concurrency limit reported (`connections` when adaptive is off).
int32_t pacing_limit(const pool_pacing& p, uint32_t connections);

} // namespace embedrt::detail
