// The circuit breaker of one upstream: a plain state machine
// (`circuit_breaker`) and the actor that owns it (`breaker_actor_fn`), the
// only owner of breaker state for its upstream.
//
//                 N consecutive failures (more when the window shows
//                 random failures before them), or failure rate >= R
//                 over the last W calls (at least M calls)
//   +--------+ -------------------------------------------> +------+
//   | closed |                                              | open | <-+
//   +--------+ <--+                                         +------+   |
//                 | all probes succeeded                       |       |
//                 |                        open time over      |       |
//             +-----------+ <-- (timer, epoch-checked) --------+       |
//             | half_open | ------------------------------------------+
//             +-----------+   a probe failed (open again, longer)
//
// The run that opens it: N, or, when the window held failures at rate r
// before the run, the run random failures at rate r reach with odds of at
// most `random_run_odds` (ln(odds) / ln(r): 13 at 20 %), so an upstream that
// fails at random does not open it but one that was healthy and dies does.
//
// Open time = min(max_reset_timeout, reset_timeout * 2^(trips-1)) times
// (1 + jitter * uniform[0,1)) (Akka's exponential backoff with a random
// factor), or the upstream's Retry-After when that is longer. `trips` counts
// consecutive openings and resets when the breaker closes.
//
// The actor and its pool: the pool reports every upstream call's verdict
// (`outcome`), tagged with the epoch of the view it was dispatched under; the
// breaker ignores outcomes of another epoch (calls sent before the last
// transition). On every transition the breaker starts a new epoch and sends
// the pool a `breaker_view`: while open the pool fails calls at once with
// `breaker_open` and the time left; while half-open it starts at most the
// permitted number of probe calls (a probe whose outcome is `ignored`, e.g.
// cut short by its caller's deadline, gives its permit back). The open timer
// carries the epoch too, so a stale timer never ends a later open period.
// Every transition is an event: a log line and a counter (and the
// `on_transition` hook, for metrics).
#pragma once

#include "embedrt/config.hpp"
#include "interfaces.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace embedrt::detail {

/// What the pool knows about an attempt besides its result.
struct attempt_facts {
  /// The attempt's timeout was shortened to a caller's deadline.
  bool deadline_capped = false;
  /// How long the attempt had waited for its answer when it ended.
  std::chrono::nanoseconds waited{0};
  /// The upstream's typical time on the wire of recent successful calls (0:
  /// none observed yet).
  std::chrono::nanoseconds typical{0};
};

/// The silence after which an attempt cut short by its caller's deadline
/// counts as the upstream's failure: `silent_call_threshold`, or
/// `silent_call_factor` x the typical latency when that is longer (0: off).
std::chrono::nanoseconds silence_bound(const breaker_config& cfg,
                                       std::chrono::nanoseconds typical);

/// How an upstream call counts for the breaker. A timeout of an attempt
/// capped at its caller's deadline is the caller's (ignored), unless the
/// upstream had answered nothing for `silence_bound` by then: an upstream
/// that accepts and never answers must trip the breaker whatever deadlines
/// its callers use.
call_verdict judge_call(const call_result& r, const attempt_facts& attempt,
                        const breaker_config& cfg);

/// One transition of a breaker.
struct breaker_transition {
  breaker_state from = breaker_state::closed;
  breaker_state to = breaker_state::closed;
  /// When `to` is open: how long.
  std::chrono::milliseconds open_for{0};
  std::string reason;
};

/// The breaker's state machine, without actors or clocks: the owner feeds it
/// verdicts and the end of the open time and acts on the transitions it
/// returns.
class circuit_breaker {
 public:
  circuit_breaker(breaker_config cfg, uint64_t seed);

  breaker_state state() const noexcept {
    return state_;
  }

  /// Consecutive openings since the breaker was last closed.
  uint32_t trips() const noexcept {
    return trips_;
  }

  /// Records the verdict of a call. In half-open, only probes report.
  std::optional<breaker_transition>
  record(call_verdict v, std::chrono::milliseconds retry_after,
         const std::string& what);

  /// The open time is over: open -> half-open.
  std::optional<breaker_transition> open_time_over();

  /// Continues where a breaker that died left off (its last view): in
  /// `state` after `trips` consecutive openings, with an empty window.
  void resume(breaker_state state, uint32_t trips);

  /// Failure counts of the sliding window (closed state).
  uint32_t window_calls() const noexcept {
    return window_calls_;
  }
  uint32_t window_failures() const noexcept {
    return window_failures_;
  }

  /// The run of consecutive failures that opens the breaker now:
  /// `consecutive_failures`, or longer when the window holds failures from
  /// before the run (`random_run_odds`).
  uint32_t run_to_open() const;

 private:
  breaker_transition trip(std::string reason);
  void clear_window();

  breaker_config cfg_;
  std::minstd_rand rng_;
  breaker_state state_ = breaker_state::closed;
  uint32_t consecutive_ = 0;
  /// Ring buffer of the last `window` verdicts (true = failure).
  std::vector<bool> window_;
  uint32_t window_pos_ = 0;
  uint32_t window_calls_ = 0;
  uint32_t window_failures_ = 0;
  /// Longest retry hint since the last success.
  std::chrono::milliseconds hint_{0};
  uint32_t trips_ = 0;
  uint32_t probe_successes_ = 0;
};

/// Everything a breaker actor needs (immutable after spawn).
struct breaker_env {
  std::string upstream;
  breaker_config cfg;
  uint64_t seed = 0;
  /// Called on every transition, in the breaker actor's context (metrics).
  std::function<void(const std::string& upstream, const breaker_transition&)>
      on_transition;
};

struct breaker_actor_state {
  static inline const char* name = "embedrt.breaker";

  std::shared_ptr<const breaker_env> env;
  std::optional<circuit_breaker> machine;
  /// The pool, held weakly (the pool holds the breaker).
  caf::actor_addr listener;
  breaker_view view;
  /// Probe permits handed out in the current half-open epoch.
  uint32_t permits_out = 0;
  /// Transitions so far, indexed [from][to].
  int64_t transitions[3][3] = {};
};

/// The breaker actor of one upstream; sends every view to `listener`, a
/// `breaker_listener` held by address, starting with its initial view: closed
/// at epoch 1, or, when it replaces a breaker that died, `resume` (the last
/// view its pool holds, `open_for` = the open time left) at the next epoch:
/// an open breaker stays open until its time, a half-open one probes again.
breaker_impl::behavior_type
breaker_actor_fn(breaker_impl::stateful_pointer<breaker_actor_state> self,
                 std::shared_ptr<const breaker_env> env,
                 caf::actor_addr listener,
                 std::optional<breaker_view> resume = std::nullopt);

} // namespace embedrt::detail
